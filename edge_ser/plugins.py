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
    """``ep.load()``; None (logged) when the module cannot be imported here, fails while it is imported, or
    is not a function."""
    try:
        obj = ep.load()
    except ImportError as e:
        log.debug("entry point %s unavailable: %s", ep.name, e)
        return None
    except Exception as e:   # a third-party plugin's own bug: skipped, never a traceback
        log.warning("skipped the broken plugin %s (%s): %s", ep.name, ep.value, _why(e))
        return None
    if not callable(obj):
        log.warning("skipped the plugin %s (%s): it is not a function", ep.name, ep.value)
        return None
    return obj


def call(ep: EntryPoint, *args, **kwargs):
    """Load the plugin and call it; None (logged) when it cannot be loaded or raises."""
    function = load(ep)
    if function is None:
        return None
    try:
        return function(*args, **kwargs)
    except Exception as e:
        log.warning("skipped the broken plugin %s (%s): %s", ep.name, ep.value, _why(e))
        return None


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
