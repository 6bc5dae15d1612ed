"""``edge-ser run --plot timeline.png``: the emotion probabilities of a recording over time, speech shaded."""
from __future__ import annotations

import math
from pathlib import Path

from .errors import EdgeSerError
from .recognizer import Event
from .text import plain

ROW_S = 120.0      # seconds of audio per row: a longer recording wraps onto more rows ...
MAX_ROWS = 6       # ... up to this many (then the rows get longer)
WIDTH_IN = 11.0    # figure width, inches
ROW_IN = 2.4       # height of one row (probabilities and label strip), inches


def plot_timeline(events: list[Event], labels: list[str], duration_s: float, path: Path, title: str = "") -> None:
    """Per label, each window's probability as a dot at the window's centre, joined by a line drawn across the whole
    segment (a segment with one window, or none recorded, is a bar at its probability with a dot in the middle).
    Speech is shaded, and a strip under each row names each segment's label (turned upright when the segment is
    narrow). The legend gives each label's share of the speech time, the title the segments and speech found. A
    recording longer than ``ROW_S`` wraps onto up to ``MAX_ROWS`` rows.

    Written to a temporary file beside ``path`` and renamed into place: a symbolic link at ``path`` is replaced,
    never written through. Needs matplotlib (``edge-ser[plot]``)."""
    try:
        import matplotlib
    except ImportError:
        raise EdgeSerError("--plot needs matplotlib: pip install edge-ser[plot]") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    duration = max(duration_s, max((e.end for e in events), default=0.0), 1e-3)
    rows = min(MAX_ROWS, math.ceil(duration / ROW_S))
    row_s = duration if rows == 1 else math.ceil(duration / rows / 10.0) * 10.0
    header_in, footer_in = 0.85, 0.5
    height = header_in + rows * ROW_IN + footer_in
    fig = plt.figure(figsize=(WIDTH_IN, height), dpi=120)
    outer = fig.add_gridspec(rows, 1, hspace=0.3, left=0.07, right=0.98, top=1 - header_in / height,
                             bottom=footer_in / height)
    colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}

    lines = {label: ([], []) for label in labels}   # (xs, ys) with NaN breaks between segments
    dots = {label: ([], []) for label in labels}
    for e in events:
        windows = e.windows or [(e.start, e.end, [e.probs[k] for k in labels])]
        for j, label in enumerate(labels):
            xs, ys = lines[label]
            centres = [((s + t) / 2, p[j]) for s, t, p in windows]
            points = [(e.start, centres[0][1]), *centres, (e.end, centres[-1][1])]   # across the whole segment
            xs += [x for x, _ in points] + [math.nan]
            ys += [y for _, y in points] + [math.nan]
            dots[label][0].extend(x for x, _ in centres)
            dots[label][1].extend(y for _, y in centres)

    for r in range(rows):
        inner = outer[r].subgridspec(2, 1, height_ratios=[4, 1], hspace=0.08)
        ax, strip = fig.add_subplot(inner[0]), fig.add_subplot(inner[1])
        t0, t1 = r * row_s, (r + 1) * row_s
        for label in labels:
            ax.plot(*lines[label], lw=2.0, color=colors[label], solid_capstyle="butt")
            ax.plot(*dots[label], ls="none", marker="o", ms=3.5, color=colors[label])
        for e in events:
            if e.end < t0 or e.start > t1:
                continue
            ax.axvspan(e.start, e.end, color="0.92", zorder=0)
            strip.axvspan(e.start, e.end, color=colors[e.label], alpha=0.8)
            width_in = (min(e.end, t1) - max(e.start, t0)) / row_s * WIDTH_IN * 0.91
            name = plain(e.label, 20)
            centre = (max(e.start, t0) + min(e.end, t1)) / 2
            if width_in >= 0.075 * len(name) + 0.1:
                strip.text(centre, 0.5, name, ha="center", va="center", fontsize=7)
            elif width_in >= 0.1:
                strip.text(centre, 0.5, name if len(name) <= 8 else name[:7] + "…", ha="center", va="center",
                           fontsize=6, rotation=90)
        for a in (ax, strip):
            a.set_xlim(t0, t1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("probability", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelbottom=False, labelsize=7)
        strip.tick_params(labelsize=7)
        strip.set_yticks([])
        strip.set_ylabel("label", fontsize=7)
    strip.set_xlabel("time (s); grey: speech segments found by the VAD", fontsize=8)

    speech = {label: sum(e.end - e.start for e in events if e.label == label) for label in labels}
    total = sum(speech.values())
    handles = [Line2D([], [], color=colors[label], lw=2.0, marker="o", ms=3.5) for label in labels]
    names = [f"{plain(label, 30)} {speech[label] / total:.0%}" if total else plain(label, 30) for label in labels]
    # labels given explicitly: matplotlib would otherwise leave out those that start with "_"
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.32 / height), ncol=min(len(labels), 7),
               fontsize=8, frameon=False, title="share of speech time" if total else None, title_fontsize=7)
    found = (f"{len(events)} segment{'s' if len(events) != 1 else ''}, {total:.1f} s of speech in {duration:.1f} s"
             if events else f"no speech found in {duration:.1f} s")
    fig.suptitle(plain(f"{title} ({found})" if title else found, 160), fontsize=9, y=1 - 0.1 / height, va="top")
    _save(fig, Path(path))
    plt.close(fig)


def _save(fig, path: Path) -> None:
    """The PNG written beside ``path`` and renamed onto it (never through a symbolic link; nothing half-written)."""
    from .run import atomic_file

    with atomic_file(path, "--plot", binary=True, keep_partial=False) as f:
        fig.savefig(f, format="png")
