"""Batch mode on a Dask cluster: the same per-file function as ``--jobs`` (:func:`edge_ser.run.process_file`).

    edge-ser run BUNDLE --input /archive --output events.jsonl --dask tcp://scheduler:8786

Every worker must see the bundle and the audio at the same paths (a shared file system) and have edge-ser
installed (``pip install edge-ser[dask]``). Each worker builds its recognizer once and keeps it.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TextIO

from .errors import EdgeSerError
from .run import Settings, file_key, interruptible, process_file, recognizer_for, write_records


def dask_client(address: str):
    """A ``distributed.Client`` for a scheduler address (``tcp://host:8786``)."""
    try:
        from distributed import Client
    except ImportError:
        raise EdgeSerError("--dask needs Dask's distributed scheduler: pip install edge-ser[dask]") from None
    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as e:
        raise EdgeSerError(f"cannot reach the Dask scheduler at {address}: {e}") from None


def run_dask(files: list[Path], settings: Settings, out: TextIO, client, skip: set[str] = frozenset(),
             show_progress: bool = True) -> Counter:
    """Like :func:`edge_ser.run.run_batch`, with the files spread over the workers of ``client``."""
    todo = [str(f) for f in files if file_key(f) not in skip]
    counts = Counter(files=len(files), resumed=len(files) - len(todo))
    recognizer_for(settings)   # fail here, once, on a bad bundle or option
    futures = client.map(process_file, todo, settings=settings, pure=False)
    try:
        with interruptible(counts):
            write_records((f.result() for f in futures), len(todo), out, counts, "files (dask)", show_progress)
    finally:
        client.cancel(futures)
    return counts
