"""Benchmark a bundle: `edge-ser bench` with this repo's defaults.

    python benchmarks/bench.py                      # bundles/emodb -> benchmarks/results/
    python benchmarks/bench.py bundles/banglaser --threads 1,2,4 --json

Any option after the bundle goes to `edge-ser bench` unchanged (see `edge-ser bench --help`).
"""
import sys

from edge_ser.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    bundle = args.pop(0) if args and not args[0].startswith("-") else "bundles/emodb"
    main(["bench", bundle, *args])
