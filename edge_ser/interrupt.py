"""SIGTERM, cleanly: what a command is writing is finished or removed, then the process exits 143.

Raising from a signal handler can land inside a C extension (an exporter, a quantizer) and crash the process,
leaving half-written files behind; so the handler runs the registered actions itself and exits at once.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import tempfile
import threading
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


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends, so that what it does (a file's records written and counted)
    is done whole or not at all. Only the main thread handles signals: elsewhere the block runs as it is."""
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]
    if threading.current_thread() is not threading.main_thread():
        held = []
    pending: list[int] = []
    before = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])


def terminate(signum, frame) -> None:
    """The SIGTERM handler the CLI installs: run the pending actions, newest first, then exit 128 + signum."""
    for key in sorted(_actions, reverse=True):
        with contextlib.suppress(Exception):
            _actions[key]()
    os._exit(128 + signum)
