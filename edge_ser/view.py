"""The live microphone view (rich, on stderr): current emotion, probability bars and counters."""
from __future__ import annotations

import sys

from .mic import Counters
from .recognizer import Event, Stream
from .text import clean


class LiveView:
    def __init__(self, labels: list[str], counters: Counters):
        from rich.console import Console
        from rich.live import Live

        self.labels, self.counters, self.segments = labels, counters, 0
        # events printed to a terminal go above the view; piped stdout is left alone
        self.live = Live(self._render(None), console=Console(stderr=True), refresh_per_second=8,
                         redirect_stdout=sys.stdout.isatty(), redirect_stderr=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)

    def event(self, _: Event) -> None:
        self.segments += 1

    def update(self, stream: Stream) -> None:
        self.live.update(self._render(stream))

    def _render(self, stream: Stream | None):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        probs = (stream.current if stream else None) or {k: 0.0 for k in self.labels}
        top = max(probs, key=probs.get) if stream and stream.current else "-"
        state = "speech" if stream and stream.in_speech else "silence"
        table = Table(title=Text(f"emotion: {clean(top)}   ({state})"), show_header=False, box=None)
        for label in self.labels:
            p = probs[label]
            table.add_row(Text(clean(label)), "█" * round(30 * p) + "·" * (30 - round(30 * p)), f"{p:.2f}")
        c = self.counters
        position = stream.position_s if stream else 0.0
        return Group(table, Text(f"{position:.1f} s heard, {self.segments} segments, {c.overflow} overflows, "
                                 f"{c.dropped} dropped, {c.skipped} skipped", style="dim"))
