"""Progress bars for long loops, drawn on stderr (never stdout, which may carry JSON).

Library code wraps its loops in :func:`progress` (or :func:`bar`); whether bars are drawn at all is the CLI's
choice (:func:`set_enabled`), so the Python API stays quiet unless asked.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_enabled = False


def set_enabled(on: bool) -> None:
    """Draw progress bars from now on (the CLI turns them on; the Python API leaves them off)."""
    global _enabled
    _enabled = on


@contextlib.contextmanager
def bar(total: int | None, description: str = "", enabled: bool = True,
        transient: bool = False) -> Iterator[Callable[..., None]]:
    """A bar of ``total`` steps; yields ``advance(steps=1, description=None)``."""
    if not (_enabled and enabled):
        yield lambda steps=1, description=None: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    from rich.markup import escape

    from .text import clean

    def safe(text: str) -> str:   # descriptions may hold corpus and file names
        return escape(clean(text, 80))
    with Progress(*columns, console=Console(stderr=True), transient=transient) as p:
        task = p.add_task(safe(description), total=total)
        yield lambda steps=1, description=None: p.update(task, advance=steps, description=safe(description)) \
            if description else p.advance(task, steps)


def progress(items: Iterable[T], total: int | None = None, description: str = "", enabled: bool = True,
             transient: bool = False) -> Iterator[T]:
    """Iterate ``items``, drawing a bar on stderr when bars are on and ``enabled``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with bar(total, description, enabled, transient) as advance:
        for item in items:
            yield item
            advance()
