"""How the runtime finds toolchain features without importing them: Python entry points.

- ``edge_ser.commands``: ``register(app)`` functions that add sub-commands to the ``edge-ser`` CLI (the export
  toolchain registers ``export``, as optimum's CLI finds its sub-commands).
- ``edge_ser.bench_peers``: factories of rows ``edge-ser bench`` times beside the bundle's variants (a torch
  reference, other toolkits' models); see :mod:`edge_ser.bench.peers`.

A feature whose entry point is missing, or whose packages are not installed, is reported, never a traceback.
"""
from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

log = logging.getLogger(__name__)
COMMANDS = "edge_ser.commands"
BENCH_PEERS = "edge_ser.bench_peers"


def find(group: str) -> dict[str, EntryPoint]:
    """The entry points of ``group`` by name (the first one of each name wins)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)
    return found


def load(ep: EntryPoint):
    """``ep.load()``; None (logged) when the module cannot be imported here."""
    try:
        return ep.load()
    except ImportError as e:
        log.debug("entry point %s unavailable: %s", ep.name, e)
        return None
