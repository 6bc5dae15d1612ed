"""What `edge-ser bench` writes: a Markdown report, CSV and JSON of the rows, and an 80-column terminal table."""
from __future__ import annotations

import csv
import json
import os
import platform
import sys
from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

from ..targets import cpu_flags, detect_target
from ..text import clean
from .pi import PI_GMACS_PER_CORE, PI_SLOWDOWN, SOURCES

COLUMNS = ("variant", "backend", "precision", "threads", "latency_ms_p50", "latency_ms_p95", "rtf", "peak_rss_mb",
           "size_mb", "load_ms", "macs_per_s", "ua", "wa", "f1", "speedup")
SHORT = dict(zip(COLUMNS, ("variant", "backend", "prec", "thr", "p50 ms", "p95 ms", "rtf", "RSS MB", "MB", "load ms",
                           "MAC/s", "UA", "WA", "F1", "speedup")))
TERMINAL = ("variant", "backend", "threads", "latency_ms_p50", "peak_rss_mb", "size_mb", "ua", "speedup")


def fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"
    if isinstance(x, int) and x >= 10**6:
        return f"{x / 1e9:.3g} G"
    return str(x)


def machine() -> dict:
    """CPU model, cores, the features that decide int8 speed, and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    interesting = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "fphp")
    versions = {"python": platform.python_version()}
    for mod in ("numpy", "onnxruntime", "openvino", "torch", "opensmile"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "target": detect_target(),
            "features": [f for f in interesting if f in cpu_flags()], "versions": versions}


def markdown(title: str, rows: list[dict], projection: list[dict], notes: list[str], m: dict, protocol: str) -> str:
    lines = [f"# edge-ser bench: {title}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; target {m['target']} "
             f"(features: {', '.join(m['features']) or 'none of note'}); "
             f"{', '.join(f'{k} {v}' for k, v in m['versions'].items())}.", "",
             f"Accuracy: {protocol}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    threads = sorted({r["threads"] for r in rows})
    if len(threads) > 1:
        lo, hi = threads[0], threads[-1]
        lines += ["", f"## Thread scaling ({lo} vs {hi} threads, p50 ms)", "",
                  f"| variant | backend | {lo} thread(s) | {hi} threads | speedup |", "|---|---|---|---|---|"]
        by = {(r["variant"], r["backend"], r["threads"]): r["latency_ms_p50"] for r in rows}
        for (v, b, t), ms in by.items():
            if t == lo and (v, b, hi) in by:
                lines.append(f"| {v} | {b} | {fmt(ms)} | {fmt(by[v, b, hi])} | {fmt(ms / by[v, b, hi])} |")
    if projection:
        boards = list(PI_SLOWDOWN)
        lines += ["", "## Raspberry Pi projection (1 core; nothing here ran on a Pi)", "",
                  "ratio: latency here x the published Pi slowdown against a desktop core, "
                  + "; ".join(f"{b} {lo:g}-{hi:g}x" for b, (lo, hi) in PI_SLOWDOWN.items())
                  + ". MACs: MACs per window / a Pi core's published sustained rate, "
                  + "; ".join(f"{b} {lo:.2g}-{hi:.2g} GMAC/s" for b, (lo, hi) in PI_GMACS_PER_CORE.items())
                  + f" (fp32 rates: int8 counted as no faster). Sources: {SOURCES}.", "",
                  "| variant | backend | ms here | "
                  + " | ".join(f"{b}: ratio ms | {b}: MACs ms" for b in boards) + " |",
                  "|" + "---|" * (3 + 2 * len(boards))]
        for p in projection:
            cells = []
            for b in boards:
                cells += ["-".join(fmt(x) for x in p[b]["ratio_ms"]),
                          "-".join(fmt(x) for x in p[b]["macs_ms"]) if "macs_ms" in p[b] else "-"]
            lines.append(f"| {p['variant']} | {p['backend']} | {fmt(p['latency_ms_here'])} | "
                         + " | ".join(cells) + " |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def write(out: Path, name: str, rows: list[dict], projection: list[dict], notes: list[str], config: dict,
          protocol: str) -> dict:
    """bench_<name>.md/.csv/.json under ``out``; returns the machine facts recorded."""
    out.mkdir(parents=True, exist_ok=True)
    m = machine()
    (out / f"bench_{name}.md").write_text(markdown(name, rows, projection, notes, m, protocol))
    with open(out / f"bench_{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    doc = {"bundle": name, "machine": m, "config": config, "rows": rows, "pi_projection": projection,
           "pi_slowdown": PI_SLOWDOWN, "pi_gmacs_per_core": PI_GMACS_PER_CORE, "pi_sources": SOURCES, "notes": notes}
    (out / f"bench_{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    return m


def terminal_table(title: str, rows: list[dict]) -> Table:
    """The rows in about 80 columns (the Markdown report has every column)."""
    table = Table(title=Text(clean(title)), box=box.SIMPLE_HEAD, show_edge=False,
                  collapse_padding=True)   # no side borders, single gaps: names fit in 80 columns
    word = max((len(w) for r in rows for w in clean(r["variant"]).split()), default=0)   # names never fold mid-word
    for c in TERMINAL:
        table.add_column(SHORT[c], justify="left" if c in ("variant", "backend") else "right",
                         overflow="fold", no_wrap=c != "variant", min_width=min(word, 24) if c == "variant" else None)
    for r in rows:
        table.add_row(*(Text(clean(r[c])) if c == "variant" else fmt(r[c]) for c in TERMINAL))
    return table
