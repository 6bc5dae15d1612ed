"""SIGTERM, cleanly: what a command is writing is finished or removed, then the process exits 143.

Raising from a signal handler can land inside a C extension (an exporter, a quantizer) and crash the process,
leaving half-written files behind; so the handler runs the registered actions itself and exits at once.
"""
from __future__ import annotations

import contextlib
import itertools
import os
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


def terminate(signum, frame) -> None:
    """The SIGTERM handler the CLI installs: run the pending actions, newest first, then exit 128 + signum."""
    for key in sorted(_actions, reverse=True):
        with contextlib.suppress(Exception):
            _actions[key]()
    os._exit(128 + signum)
