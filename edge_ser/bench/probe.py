"""Peak memory and load time of ONE row in a fresh process: ``python -m edge_ser.bench.probe '{json}'``.

The JSON names a bundle variant (``{"bundle", "variant", "backend", "threads", "samples"}``) or a peer
(``{"bundle", "peer", "options", "threads", "samples"}``). The process loads it, runs one window and prints
``{"peak_rss_mb", "load_ms"}`` as its last line.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from ..errors import EdgeSerError


def peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss on Linux keeps the parent's peak across exec)."""
    try:
        with open("/proc/self/status") as f:
            hwm = next(line for line in f if line.startswith("VmHWM:"))
        return int(hwm.split()[1]) / 1e3
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1e6 if sys.platform == "darwin" else 1e3)


def measure(spec: dict) -> dict:
    from ..bundle import load_bundle

    x = np.zeros((1, spec["samples"]), np.float32)
    x[0, ::40] = 0.1
    bundle = load_bundle(spec["bundle"], verify=False)
    start = time.perf_counter()
    if "peer" in spec:
        from .peers import make_peer
        peer = make_peer(spec["peer"], bundle, **spec.get("options", {}))
        peer.set_threads(spec["threads"])
        run = peer.run
    else:
        from ..engine import open_engine
        run = open_engine(bundle, spec["variant"], spec["backend"], spec["threads"]).run
    load_ms = (time.perf_counter() - start) * 1e3
    run(x)
    return {"peak_rss_mb": peak_rss_mb(), "load_ms": load_ms}


# `python -m` and `-c` put the working directory first on sys.path, so a numpy.py there (in an untrusted bundle
# folder, say) would run inside the probe; -P / PYTHONSAFEPATH exist only from Python 3.11. The probe's first
# statement takes it off again, before anything is imported (sys is built in).
SAFE_START = "import sys; sys.path[:1] = [p for p in sys.path[:1] if p]; from edge_ser.bench.probe import main; main()"


def probe(spec: dict, timeout_s: float = 300.0) -> dict:
    """Run :func:`measure` for ``spec`` in a fresh interpreter (same Python, same installed edge-ser)."""
    try:
        done = subprocess.run([sys.executable, "-c", SAFE_START, json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EdgeSerError(f"the fresh-process probe took over {timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise EdgeSerError(f"the fresh-process probe failed: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    print(json.dumps(measure(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
