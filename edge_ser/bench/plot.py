"""The Pareto plot of `edge-ser bench`: latency against held-out UA, point area ~ model size."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..text import plain

COLORS = {"torch": "tab:red", "onnxruntime": "tab:blue", "openvino": "tab:green", "opensmile": "tab:purple"}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower latency and higher UA, by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_plot(rows: list[dict], path: Path, title: str = "") -> None:
    """Latency p50 at the fewest threads benchmarked vs UA; point area ~ model size; front highlighted.

    Points are numbered; the key beside the plot names them (variant, backend, size).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, ScalarFormatter

    t = min(r["threads"] for r in rows)
    pts = [r for r in rows if r["threads"] == t and r["ua"] is not None and r["latency_ms_p50"]]
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=120)
    colors = COLORS
    key = []
    if pts:
        xy = np.array([(r["latency_ms_p50"], r["ua"]) for r in pts])
        sizes = np.array([r["size_mb"] or 0.0 for r in pts])
        area = 40 + 700 * sizes / max(sizes.max(), 1e-9)
        front = pareto_front([tuple(p) for p in xy])
        for i, r in enumerate(pts):
            on_front = i in front
            ax.scatter(*xy[i], s=area[i], color=colors.get(r["backend"], "tab:gray"), alpha=0.45,
                       edgecolors="black" if on_front else "none", linewidths=1.8, zorder=3)
            ax.annotate(str(i + 1), xy[i], ha="center", va="center", fontsize=8, zorder=4,
                        fontweight="bold" if on_front else "normal")
            size = f", {r['size_mb']:.1f} MB" if r["size_mb"] else ""
            key.append(f"{i + 1:>2} {'*' if on_front else ' '} {plain(r['variant'], 40)} ({r['backend']}{size})")
        fx, fy = xy[front, 0], xy[front, 1]
        ax.step(fx, fy, where="post", color="black", lw=1.2, ls="--", zorder=2, label="Pareto front")
        for backend, color in colors.items():
            if any(r["backend"] == backend for r in pts):
                ax.scatter([], [], color=color, alpha=0.45, label=backend)
        ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.70, 0.06), bbox_transform=fig.transFigure)  # beside
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        pad = max(0.02, 0.1 * float(np.ptp(xy[:, 1])))
        ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
    ax.set_xlabel(f"latency per window, median ms ({t} thread{'s' if t > 1 else ''}, log scale)")
    ax.set_ylabel("UA (held-out speakers)")
    ax.set_title(f"{plain(title, 80)}\npoint area ~ model size; black edge and * = Pareto front", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.text(0.70, 0.5, "\n".join(key), family="monospace", fontsize=7.5, va="center")
    fig.subplots_adjust(left=0.07, right=0.68, top=0.88, bottom=0.1)
    fig.savefig(path)
    plt.close(fig)


