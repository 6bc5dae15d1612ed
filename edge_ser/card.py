"""``MODEL_CARD.md``: a human-readable card generated from the same facts as the manifest."""
from __future__ import annotations

from .manifest import MAX_MANIFEST_BYTES, Manifest, Metrics
from .text import clean


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _metrics(m: Metrics | None) -> list[str]:
    return [_f(m.ua), _f(m.wa), _f(m.f1), _f(m.n)] if m else ["-"] * 4


def usage_terms(m: Manifest) -> str | None:
    """"non-commercial use only (...)" when a corpus the model learned from allows no commercial use."""
    nc = [v for v in (m.data.licences if m.data else {}).values() if "NC" in v or "non-commercial" in v.lower()]
    return f"non-commercial use only (it learned from {'; '.join(nc)})" if nc else None


def head_lines(m: Manifest) -> list[tuple[str, str]]:
    """(name, description) of each head: what it reads, how it was fit, its calibration."""
    return [(name, f"{h.kind} on {h.inputs or 'pooled hidden states'} ({h.dim} numbers)"
             + (f"; {h.fit}" if h.fit else "") + f"; marks an event unsure below top probability {h.unsure_below:g}")
            for name, h in m.heads.items()]


def fusion_line(m: Manifest) -> str | None:
    """The text path's alignment head (manifest ``fusion``), for people: what it reads and how it scored."""
    f = m.fusion
    if f is None:
        return None
    scored = (f"; held-out UA {f.metrics.ua:.3f} with the words, {f.audio_metrics.ua:.3f} from the voice alone "
              f"({f.metrics.n} clips)" if f.metrics and f.audio_metrics else "")
    return (f"with `--text`, the transcript's tokens attend over {f.audio} (text encoder SHA-256 "
            f"{f.text_encoder[:12]}...); {f.fit}{scored}; its probabilities are not calibrated")


def model_card(m: Manifest) -> str:
    """Markdown: what the model does, what it learned from (with licences), how it was scored, its variants."""
    i = m.input
    lines = [f"# edge-ser model: {', '.join(m.labels)}", "",
             "Speech emotion recognition: the category a speaker's voice expresses in a stretch of speech, "
             "from the sound alone (no words are transcribed).", "",
             f"- Labels (output order): {', '.join(m.labels)}",
             f"- Input: {i.sample_rate} Hz mono float32 PCM; clips of {i.min_input_s}-{i.max_input_s} s per call; "
             f"longer audio in windows of {i.window_s} s every {i.hop_s} s, probabilities averaged"]
    if m.teacher:
        t = m.teacher
        lines.append(f"- Teacher: {t.name} ({t.family}, {t.blocks} blocks x {t.dim}; weights from {t.source or '?'})")
    if m.student:
        lines.append(f"- Student: {m.student.summary}")
    if m.fast:
        lines.append(f"- Fast student: {m.fast.summary}")
    lines += [f"- Head {name}: {text}" for name, text in head_lines(m)]
    lines += [f"- Fusion head: {fusion_line(m)}"] if m.fusion else []
    if m.adapted:
        a = m.adapted
        est = f"UA {a.ua:.3f} +/- {a.ua_spread:.3f}" if a.ua is not None else "no estimate"
        # (a protocol that is not speaker-independent says so itself)
        lines.append(f"- Adapted (`edge-ser adapt`) from bundle {a.base} (labels {', '.join(a.base_labels)}) on the "
                     f"embeddings of {a.variant}: {est} by {a.protocol}")
    terms = usage_terms(m)
    lines += [f"- **Use: {terms}**"] if terms else []
    if m.data:
        d = m.data
        counts = ", ".join(f"{k} {v}" for k, v in d.label_counts.items())
        lines += [f"- Training data: {d.corpus}: {d.clips} labelled clips from {d.speakers} speakers"
                  + (f" ({counts})" if counts else "")]
        lines += [f"- Unlabeled audio for distillation: {d.unlabeled}"] if d.unlabeled else []
        lines += [f"  - {note}" for note in d.notes]
        if d.licences:
            lines += ["", "## Data licences", ""] + [f"- {k}: {v}" for k, v in d.licences.items()]
    ev = m.evaluation
    lines += ["", "## Evaluation", ""]
    if ev:
        lines += [f"Protocol: {ev.protocol}", ""]
        lines += [f"Which model the numbers describe: {ev.shipped}", ""] if ev.shipped else []
    lines += ["| variant | format | precision | targets | quantization | UA | WA | macro-F1 | n | top-1 agree | "
              "max abs diff |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in m.variants.items():
        par = [_f(v.parity.top1_agreement), _f(v.parity.max_abs_diff)] if v.parity else ["-", "-"]
        lines.append("| " + " | ".join([name, v.format, v.precision, ", ".join(v.targets) or "any",
                                        v.quantization or "-", *_metrics(v.metrics), *par]) + " |")
    if ev and (ev.torch_teacher or ev.torch_student):
        lines += ["", "| torch reference (fp32) | UA | WA | macro-F1 | n |", "|---|---|---|---|---|"]
        for name, met in (("teacher + head", ev.torch_teacher), ("student + head", ev.torch_student)):
            if met:
                lines.append("| " + " | ".join([name, *_metrics(met)]) + " |")
    lines += ["", "## Limitations", "",
              "- Acted emotions in the training corpora are clearer than everyday speech; expect lower accuracy "
              "on spontaneous speech, other languages and other recording conditions.",
              "- The label is a property of how the voice sounds, not of what the person feels; do not use it "
              "to make decisions about people.", ""]
    # the manifest's strings (labels, names, notes) are untrusted: no escape sequence or line break of theirs
    return "\n".join(clean(line, MAX_MANIFEST_BYTES) for line in lines)
