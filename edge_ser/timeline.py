"""``edge-ser run --plot timeline.png``: the emotion probabilities of a recording over time, speech shaded."""
from __future__ import annotations

from pathlib import Path

from .errors import EdgeSerError
from .recognizer import Event
from .text import plain


def plot_timeline(events: list[Event], labels: list[str], duration_s: float, path: Path, title: str = "") -> None:
    """One line per label: each window's probability at its centre (segment-level steps when an event has no
    windows), speech segments shaded and named by their label. Needs matplotlib (``edge-ser[plot]``)."""
    try:
        import matplotlib
    except ImportError:
        raise EdgeSerError("--plot needs matplotlib: pip install edge-ser[plot]") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, strip) = plt.subplots(2, 1, figsize=(11, 4.2), dpi=120, sharex=True,
                                    gridspec_kw={"height_ratios": [5, 1]})
    colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
    for e in events:
        ax.axvspan(e.start, e.end, color="0.92", zorder=0)
        strip.axvspan(e.start, e.end, color=colors[e.label], alpha=0.8)
        if e.end - e.start > 0.04 * max(duration_s, 1e-9):
            strip.text((e.start + e.end) / 2, 0.5, plain(e.label, 20), ha="center", va="center", fontsize=7)
    for j, label in enumerate(labels):
        xs, ys = [], []
        for e in events:
            points = [((s + t) / 2, p[j]) for s, t, p in e.windows] if e.windows else \
                [(e.start, e.probs[label]), (e.end, e.probs[label])]
            xs += [x for x, _ in points] + [float("nan")]
            ys += [y for _, y in points] + [float("nan")]
        ax.plot(xs, ys, marker="o" if any(e.windows for e in events) else None, ms=2.5, lw=1.4,
                color=colors[label], label=plain(label, 30))
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("probability")
    ax.set_xlim(0, max(duration_s, 1e-3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=min(len(labels), 7), loc="upper center", bbox_to_anchor=(0.5, 1.18), frameon=False)
    ax.set_title(plain(title, 120), fontsize=9, pad=28)
    strip.set_yticks([])
    strip.set_ylabel("speech", fontsize=8)
    strip.set_xlabel("time (s); grey: speech segments found by the VAD")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
