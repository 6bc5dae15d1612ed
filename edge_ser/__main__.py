"""``python -m edge_ser``: the `edge-ser` command line."""
from .cli import main

main()
