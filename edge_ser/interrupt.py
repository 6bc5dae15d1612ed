"""SIGTERM, cleanly: what a command is writing is finished or removed, then the process exits 143.

Raising from a signal handler can land inside a C extension (an exporter, a quantizer) and crash the process,
leaving half-written files behind; so the handler runs the registered actions itself and exits at once.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from typing import Callable, Iterator

_actions: dict[int, Callable[[], None]] = {}
_ids = itertools.count()


@contextlib.contextmanager
def on_termination(action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` if the process is terminated while the block runs."""
    key = next(_ids)
    _actions[key] = action
    try:
        yield
    finally:
        _actions.pop(key, None)


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[str]:
    """A private temporary folder, removed when the block ends, also when the process is terminated meanwhile
    (the handler's ``os._exit`` skips ``TemporaryDirectory``'s own cleanup)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder, \
            on_termination(lambda: shutil.rmtree(folder, ignore_errors=True)):
        yield folder


def terminate(signum, frame) -> None:
    """The SIGTERM handler the CLI installs: run the pending actions, newest first, then exit 128 + signum."""
    for key in sorted(_actions, reverse=True):
        with contextlib.suppress(Exception):
            _actions[key]()
    os._exit(128 + signum)
