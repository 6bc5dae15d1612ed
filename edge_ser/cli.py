"""The `edge-ser` command line: a thin layer over the Python API.

Commands that need the export toolchain (torch) import it lazily, so `edge-ser run` stays lean.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import EdgeSerError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Speech emotion recognition on the edge: export, run, evaluate and benchmark bundles.")
console = Console(stderr=True)


def default_data() -> Path:
    """$EDGE_SER_DATA, else ../shared/data/emodb beside the working directory."""
    return Path(os.environ.get("EDGE_SER_DATA", "../shared/data/emodb"))


@app.command()
def export(
    data: Path = typer.Option(None, help="Labelled audio: EmoDB/RAVDESS/BanglaSER folder, CSV/TSV manifest "
                              "or folder per label [default: $EDGE_SER_DATA or ../shared/data/emodb]"),
    out: Path = typer.Option(Path("bundles/emodb"), help="Bundle directory to write (atomically)."),
    teacher: str = typer.Option("whisper-tiny.en", help="Teacher: whisper-tiny.en (offline default), a hub id "
                                "or a local transformers / CTranslate2 directory."),
    unlabeled: Optional[Path] = typer.Option(None, help="Extra unlabeled audio for distillation (a folder)."),
    test_speakers: Optional[str] = typer.Option(None, help="Comma-separated held-out speakers, never seen by "
                                                "distillation, calibration or the head [default: 3 speakers]."),
    student_depth: int = typer.Option(1, help="Student transformer layers."),
    student_width: Optional[int] = typer.Option(None, help="Student width [default: the teacher's]."),
    student_init: str = typer.Option("teacher", help="Student initialisation: teacher | random."),
    student_time_stride: int = typer.Option(1, help="Student frames per teacher frame: 2 runs every block on "
                                            "half the frames."),
    student_ffn: Optional[int] = typer.Option(None, help="Hidden units kept in each student feed-forward block "
                                              "(pruned by output carried, output layer refitted) [default: all]."),
    distill_epochs: int = typer.Option(3, help="Distillation passes over the training audio."),
    val_speakers: int = typer.Option(2, help="Training speakers whose audio distillation skips; an epoch is kept "
                                     "only if it raises their UA (0: keep the last epoch)."),
    head: str = typer.Option("linear", help="Head: linear (logistic regression on the best layer) | mlp."),
    seed: int = typer.Option(0, help="Random seed."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle at --out."),
):
    """Learn a head, distill the teacher into a student, quantize, and write a bundle."""
    from export.pipeline import ExportConfig, run_export

    cfg = ExportConfig(data=data or default_data(), out=out, teacher=teacher, unlabeled=unlabeled,
                       test_speakers=test_speakers.split(",") if test_speakers else None,
                       student_depth=student_depth, student_width=student_width, student_init=student_init,
                       student_time_stride=student_time_stride, student_ffn=student_ffn,
                       distill_epochs=distill_epochs, val_speakers=val_speakers, head=head, seed=seed,
                       overwrite=overwrite)
    run_export(cfg)


@app.command()
def run(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    input: Optional[str] = typer.Option(None, "--input", "-i", help="Audio file, or - for raw s16le 16 kHz mono "
                                        "PCM on stdin."),
    mic: bool = typer.Option(False, help="Listen to a microphone (needs edge-ser[mic])."),
    device: Optional[int] = typer.Option(None, help="Microphone device index (see --list-devices)."),
    list_devices: bool = typer.Option(False, help="List audio input devices and exit."),
    backend: str = typer.Option("onnxruntime", help="onnxruntime | openvino."),
    model: Optional[str] = typer.Option(None, help="Variant of the bundle (see `edge-ser info`) [default: the "
                                        "bundle's default]."),
    threads: Optional[int] = typer.Option(None, help="Inference threads."),
    window: Optional[float] = typer.Option(None, help="Window seconds [default: from the bundle]."),
    hop: Optional[float] = typer.Option(None, help="Hop seconds [default: from the bundle]."),
    vad: str = typer.Option("energy", help="Voice activity detector: energy | webrtc."),
    output: Optional[Path] = typer.Option(None, help="Write JSON Lines events here instead of stdout."),
    smooth: float = typer.Option(0.0, help="Exponential smoothing of the live view (0 = off, 0.9 = heavy)."),
):
    """Detect speech and recognise emotions in a file, stdin or a live microphone (JSON Lines out)."""
    from .live import run_cli

    run_cli(bundle, input=input, mic=mic, device=device, list_devices=list_devices, backend=backend,
            model=model, threads=threads, window=window, hop=hop, vad=vad, output=output, smooth=smooth)


@app.command("eval")
def eval_(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    data: Path = typer.Option(None, help="Labelled audio (same forms as export) [default: $EDGE_SER_DATA or "
                              "../shared/data/emodb]."),
    model: Optional[list[str]] = typer.Option(None, help="Variant(s) to score [default: all]."),
    backend: str = typer.Option("onnxruntime", help="onnxruntime | openvino (IR variants need openvino)."),
    threads: Optional[int] = typer.Option(None, help="Inference threads."),
    as_json: bool = typer.Option(False, "--json", help="Print {\"variants\": {NAME: {ua, wa, f1, n}}} on stdout."),
):
    """Score every variant of a bundle on labelled data (UA, WA, macro-F1)."""
    from .evaluate import evaluate_bundle

    result = evaluate_bundle(bundle, data or default_data(), variants=model, backend=backend, threads=threads)
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"{bundle} on {data or default_data()}")
    for col in ("variant", "UA", "WA", "macro-F1", "n"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for name, m in result["variants"].items():
        table.add_row(name, f"{m['ua']:.3f}", f"{m['wa']:.3f}", f"{m['f1']:.3f}", str(m["n"]))
    Console().print(table)


@app.command()
def bench(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    data: Optional[Path] = typer.Option(None, help="Labelled audio for accuracy [default: the bundle's held-out "
                                        "speakers from its training data]."),
    threads: str = typer.Option("1,2", help="Comma-separated thread counts."),
    backend: Optional[list[str]] = typer.Option(None, help="Backends to time [default: onnxruntime and openvino]."),
    out: Path = typer.Option(Path("benchmarks/results"), help="Where to write the table, CSV, JSON and plot."),
    reps: Optional[int] = typer.Option(None, help="Timed repetitions per variant [default: as many as fit "
                                       "about a minute per thread count, 20-200]."),
    quick: bool = typer.Option(False, help="A few repetitions only (smoke test)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON on stdout."),
):
    """Latency / memory / size / accuracy of every variant side by side, with a Pareto plot."""
    from .bench import run_bench

    rows = run_bench(bundle, data=data, threads=[int(t) for t in threads.split(",")], backends=backend, out=out,
                     reps=reps, quick=quick)
    if as_json:
        print(json.dumps({"rows": rows}))


@app.command()
def info(bundle: Path = typer.Argument(..., help="Bundle directory.")):
    """Print a bundle's manifest as a table (checksums verified)."""
    from .bundle import load_bundle

    b = load_bundle(bundle)
    m = b.manifest
    facts = Table(title=f"edge-ser bundle {bundle}", show_header=False)
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("labels", ", ".join(b.labels))
    facts.add_row("input", f"{b.sample_rate} Hz mono, window {b.window_s} s, hop {b.hop_s} s, "
                  f"{b.min_input_s}-{m['max_input_s']} s")
    for key in ("teacher", "student", "data", "evaluation"):
        if key in m:
            facts.add_row(key, json.dumps(m[key]) if not isinstance(m[key], str) else m[key])
    facts.add_row("default variant", m["default_variant"])
    out = Console()
    out.print(facts)
    out.print(variants_table(b, "variants"))


def variants_table(bundle, title: str) -> Table:
    """One row per variant: files, precision, size, accuracy and parity (``info`` and the export summary)."""
    m = bundle.manifest
    table = Table(title=title)
    for col in ("variant", "files", "format", "precision", "quantization", "MB", "UA", "WA", "F1",
                "top-1 agree", "max |dp|"):
        table.add_column(col)
    for name, v in bundle.variants.items():
        mb = sum(m["files"][f]["bytes"] for f in v.files) / 1e6
        fmt = lambda d, k: f"{d[k]:.3f}" if k in d else "-"  # noqa: E731
        table.add_row(name, " ".join(v.files), v.format, v.precision, v.quantization or "-", f"{mb:.1f}",
                      fmt(v.metrics, "ua"), fmt(v.metrics, "wa"), fmt(v.metrics, "f1"),
                      fmt(v.parity, "top1_agreement"), fmt(v.parity, "max_abs_diff"))
    return table


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one message and exit 2, without a traceback."""
    try:
        app(args=argv)
    except EdgeSerError as e:
        console.print("[bold red]error:[/]", escape(str(e)), highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
