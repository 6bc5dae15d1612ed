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
import time
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
def signals_held(patience_s: float = 1.0) -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends, so that what it does (a file's records written and counted) is
    done whole or not at all. A stop waits ``patience_s`` at most (a write can hang on a full pipe: the stop is then
    sent again to the main thread, which interrupts the write), a second stop not at all: the handlers are put back
    and it is delivered (SIGTERM before Ctrl-C when both came). Only the main thread handles signals: elsewhere the
    block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before: dict[int, Callable | int] = {}
    pending: list[int] = []
    timers: list[threading.Timer] = []
    start = time.monotonic()

    def release() -> None:
        for timer in timers:
            timer.cancel()
        while before:   # a handler is forgotten only once it is back, whatever a signal does meanwhile
            s = next(iter(before))
            signal.signal(s, before[s])
            before.pop(s, None)
        if pending:
            s = signal.SIGTERM if signal.SIGTERM in pending else pending[0]
            pending.clear()
            signal.raise_signal(s)

    def hold(signum, frame) -> None:
        pending.append(signum)
        if len(pending) > 1 or time.monotonic() - start > patience_s:
            release()
        elif hasattr(signal, "pthread_kill"):
            timers.append(threading.Timer(patience_s, signal.pthread_kill, (threading.main_thread().ident, signum)))
            timers[-1].daemon = True
            timers[-1].start()

    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(s) is not None:   # None: a handler not installed from Python, left alone
                before[s] = signal.signal(s, hold)
        yield
    finally:
        release()


def terminate(signum, frame) -> None:
    """The SIGTERM handler the CLI installs: run the pending actions, newest first, then exit 128 + signum."""
    for key in sorted(_actions, reverse=True):
        with contextlib.suppress(Exception):
            _actions[key]()
    os._exit(128 + signum)
