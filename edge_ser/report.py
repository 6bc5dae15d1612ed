"""Tables of a bundle for a terminal (``edge-ser info``, the export summary): readable in 80 columns, and every
string from the manifest escaped (a bundle is untrusted input)."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .bundle import Bundle
from .card import fusion_line, head_lines, usage_terms
from .errors import EdgeSerError
from .text import clean


def _t(value) -> Text:
    return Text(clean(value))


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def facts_table(b: Bundle, prefer: str = "balanced") -> Table:
    m = b.manifest
    table = Table(title=_t(f"edge-ser bundle {b.path}"), show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    i = m.input
    rows = [("labels", ", ".join(m.labels)),
            ("input", f"{i.sample_rate} Hz mono; window {i.window_s} s, hop {i.hop_s} s; "
                      f"{i.min_input_s}-{i.max_input_s} s per call")]
    if m.teacher:
        rows.append(("teacher", f"{m.teacher.name} ({m.teacher.family}, {m.teacher.blocks} blocks x {m.teacher.dim})"))
    if m.student:
        rows.append(("student", m.student.summary))
    if m.fast:
        rows.append(("fast student", m.fast.summary))
    rows += [(f"head {name}", text) for name, text in head_lines(m)]
    rows += [("fusion head", fusion_line(m))] if m.fusion else []
    if m.adapted:
        a = m.adapted
        rows.append(("adapted", f"from bundle {a.base} on {a.variant}'s embeddings; "
                     + (f"UA {a.ua:.3f} +/- {a.ua_spread:.3f} by {a.protocol}" if a.ua is not None else a.protocol)))
    terms = usage_terms(m)
    if terms:
        rows.append(("licence", terms))
    if m.data:
        rows.append(("data", f"{m.data.corpus}: {m.data.clips} clips, {m.data.speakers} speakers"))
    if m.evaluation:
        rows.append(("evaluation", m.evaluation.protocol))
        if m.evaluation.shipped:
            rows.append(("shipped", m.evaluation.shipped))
    rows.append(("default variant", m.default_variant))
    try:
        from .targets import choose_variant
        choice = choose_variant(b, prefer=prefer)
        rows.append(("auto picks", f"{choice.name}: {choice.reason}"))
    except EdgeSerError as e:
        rows.append(("auto picks", f"nothing ({e})"))
    for key, value in rows:
        table.add_row(key, _t(value))
    return table


def variants_table(b: Bundle, title: str = "variants") -> Table:
    """One row per variant: format, precision, the CPUs it is made for, size, held-out UA and parity."""
    table = Table(title=_t(title))
    for col in ("variant", "format", "prec", "targets", "MB", "UA", "agree"):
        table.add_column(col, justify="right" if col in ("MB", "UA", "agree") else "left",
                         overflow="fold", no_wrap=col != "targets")
    for name, v in b.variants.items():
        table.add_row(_t(name), v.format, v.precision, _t(", ".join(v.targets) or "any"), f"{b.size_mb(name):.1f}",
                      _f(v.metrics.ua if v.metrics else None),
                      _f(v.parity.top1_agreement if v.parity else None))
    return table


def bundle_tables(b: Bundle, prefer: str = "balanced") -> list[Table]:
    return [facts_table(b, prefer), variants_table(b)]
