"""Rows `edge-ser bench` times beside a bundle's variants: models a user would otherwise pick.

Peers come from the ``edge_ser.bench_peers`` entry points (the export toolchain provides a torch reference
teacher, wav2vec2-base in torch and openSMILE eGeMAPS): ``factory(bundle, **options) -> Peer``. A peer whose
packages are missing is skipped with a note. A fresh process rebuilds a peer from its entry-point name and
options (:mod:`edge_ser.bench.probe`), so every row gets the same memory and load-time figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import EdgeSerError
from ..plugins import BENCH_PEERS, find

REFERENCE = "reference"   # the torch teacher the user names with --reference


@dataclass
class Split:
    """Labelled clips for a peer that needs training (fit on ``train``, score on ``test``)."""

    train: list[np.ndarray]
    train_labels: list[str]
    train_groups: list[str]
    test: list[np.ndarray]
    test_labels: list[str]
    labels: list[str]
    heldout: bool            # whether ``test`` is the bundle's held-out speakers
    test_speakers: list[str] = field(default_factory=list)


@dataclass
class Peer:
    name: str                                  # row name
    backend: str                               # what runs it: torch, opensmile, ...
    precision: str
    run: Callable[[np.ndarray], object]        # one window [1, N] at 16 kHz
    set_threads: Callable[[int], None]
    size_mb: float | None = None
    macs_per_s: int | None = None
    note: str = ""                             # what the row is and is not (e.g. random weights: speed only)
    accuracy: Callable[[Split], dict] | None = None   # {"ua", "wa", "f1", "n"} of the peer on split.test
    entry_point: str = ""                      # how a fresh process rebuilds it ...
    options: dict = field(default_factory=dict)   # ... with these keyword options


def available() -> list[str]:
    """Names of the installed peer entry points, the reference excepted."""
    return [name for name in find(BENCH_PEERS) if name != REFERENCE]


def make_peer(name: str, bundle, **options) -> Peer:
    """Build the peer ``name`` (ImportError when its packages are missing, EdgeSerError when unknown)."""
    eps = find(BENCH_PEERS)
    if name not in eps:
        known = ", ".join(n for n in eps if n != REFERENCE) or "none installed (pip install edge-ser[export])"
        raise EdgeSerError(f"unknown bench peer {name!r}; known: {known}")
    peer = eps[name].load()(bundle, **options)
    peer.entry_point, peer.options = name, options
    return peer
