"""The `edge-ser` command line: a thin layer over the Python API, and the only place that prints.

Every option is checked when the command line is parsed (choices, ranges), before any audio is decoded or any
model loaded. Errors a user can cause print one ``error:`` line (never wrapped) and exit 2; Ctrl-C exits 130,
SIGTERM 143, after cleaning up. Toolchain commands (``export``) come from entry points (:mod:`edge_ser.plugins`).
"""
from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer

from .engine import BACKENDS
from .errors import EdgeSerError
from .targets import PREFERENCES, TARGETS
from .text import clean
from .vad import DEFAULT_VAD, VADS

# click's usage error, whichever click typer uses (recent typer carries its own copy)
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Speech emotion recognition on the edge: export, run, evaluate, benchmark and pack bundles.")


def _choices(name: str, values) -> type[enum.Enum]:
    """An Enum typer shows as the choices of an option; the values come from the module that defines them."""
    return enum.Enum(name, {v: v for v in values}, type=str)


Backend = _choices("Backend", BACKENDS)
VadName = _choices("VadName", VADS)
Target = _choices("Target", TARGETS)
Prefer = _choices("Prefer", PREFERENCES)


def _version(value: bool) -> None:
    if value:
        from . import __version__
        print(f"edge-ser {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    """Options before the command."""


def _max_threads() -> int:
    from .engine import max_threads
    return max_threads()


def default_data() -> Path:
    """$EDGE_SER_DATA, else ../shared/data/emodb beside the working directory."""
    return Path(os.environ.get("EDGE_SER_DATA", "../shared/data/emodb"))


def default_bundle() -> Path:
    """The ready general-purpose model shipped inside the package (:func:`edge_ser.bundle.ready_model_path`)."""
    from .bundle import ready_model_path
    return ready_model_path()


def _thread_list(value: str) -> list[int]:
    """``1,2`` or ``1,all`` -> sorted thread counts, each 1..max_threads()."""
    counts = set()
    for part in value.split(","):
        part = part.strip()
        n = (os.cpu_count() or 1) if part == "all" else int(part) if part.isdigit() else None
        if n is None or not 1 <= n <= _max_threads():
            raise typer.BadParameter(f"{part!r} is not a thread count 1..{_max_threads()} (or 'all')")
        counts.add(n)
    return sorted(counts)


def _positive(value: Optional[float]) -> Optional[float]:
    if value is not None and not 0 < value < 1e6:
        raise typer.BadParameter(f"{value} is not a positive number of seconds")
    return value


def _name(value):
    if value is not None and not (value if isinstance(value, str) else all(value)):
        raise typer.BadParameter("must not be empty")
    return value


def _variant_list(value: Optional[str]) -> Optional[str]:
    if value is not None and not all(n.strip() for n in value.split(",")):
        raise typer.BadParameter(f"{value!r} holds an empty variant name; give names separated by commas "
                                 "(see `edge-ser info`)")
    return value


def label_map_option(value: Optional[str]) -> Optional[str]:
    """``--label-map``: checked when the command line is parsed (eval, export)."""
    from .data import parse_label_map
    try:
        parse_label_map(value)
    except EdgeSerError as e:
        raise typer.BadParameter(str(e)) from None
    return value


def _suffix(path: Optional[Path], suffix: str) -> Optional[Path]:
    if path is not None and path.suffix.lower() != suffix:
        raise typer.BadParameter(f"{path} must end in {suffix}")
    return path


def _threads(value: Optional[int]) -> Optional[int]:
    if value is not None and not 1 <= value <= _max_threads():
        raise typer.BadParameter(f"{value} is not between 1 and {_max_threads()} (4 per core)")
    return value


def _language(value: Optional[str]) -> Optional[str]:
    from .transcribe import TranscribeOptions
    try:
        TranscribeOptions(language=value)
    except EdgeSerError as e:
        raise typer.BadParameter(str(e)) from None
    return value


def _text_options(text: bool, language: Optional[str], asr_model: Optional[str], text_model: Optional[Path],
                  threads: Optional[int]):
    """The text path's options (None without --text); one error line when its extra is not installed."""
    if not text:
        if language is not None or asr_model is not None or text_model is not None:
            raise EdgeSerError("--language, --asr-model and --text-model are for the text path; add --text")
        return None
    if text_model is not None and not text_model.is_dir():
        raise EdgeSerError(f"--text-model {text_model}: not a folder (a text emotion part)")
    from .fusion import TextOptions
    from .transcribe import TranscribeOptions, require_engine
    require_engine("--text")
    return TextOptions(TranscribeOptions(asr_model=asr_model, language=language, threads=threads or 1),
                       text_model=None if text_model is None else str(text_model))


THREADS = typer.Option(None, callback=_threads, help="Inference threads (1 to 4 per core) [default: the engine's].")
VARIANT = typer.Option("auto", "--variant", "--model", callback=_name,
                       help="Variant of the bundle (see `edge-ser info`); 'auto' picks the best for this CPU "
                       "(--model is a deprecated alias).")
BACKEND = typer.Option(None, help="Engine [default: onnxruntime for ONNX variants, openvino for IR variants].")
PREFER = typer.Option(Prefer.balanced, help="What --variant auto optimises: balanced (the student), accuracy (the "
                      "teacher) or speed (the fastest student: the fast one).")


@app.command()
def run(
    bundle: Optional[Path] = typer.Argument(None, help="Bundle directory [default: the ready model shipped "
                                            "with edge-ser]."),
    input: Optional[str] = typer.Option(None, "--input", "-i", callback=_name,
                                        help="Audio file; a folder or glob (batch mode: every audio file); or - for "
                                        "stdin (WAV, FLAC, OGG or raw s16le mono at the bundle's rate)."),
    mic: bool = typer.Option(False, help="Listen to a microphone (needs edge-ser[mic])."),
    device: Optional[int] = typer.Option(None, min=0, help="Microphone device index (see --list-devices)."),
    list_devices: bool = typer.Option(False, help="List audio input devices and exit."),
    backend: Optional[Backend] = BACKEND,
    variant: str = VARIANT,
    prefer: Prefer = PREFER,
    threads: Optional[int] = THREADS,
    window: Optional[float] = typer.Option(None, callback=_positive, help="Window seconds [default: the bundle's]."),
    hop: Optional[float] = typer.Option(None, min=0.01, max=600, help="Hop seconds, at least 0.01 [default: the "
                                        "bundle's]."),
    vad: VadName = typer.Option(DEFAULT_VAD, help="Voice activity detector: silero (a small neural network, the "
                                "most accurate), energy (numpy only, the fastest) or webrtc (needs edge-ser[webrtc])."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write JSON Lines here instead of stdout "
                                          "(in batch mode: appended, and a rerun with the same bundle and variant "
                                          "skips the files already in it)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --output file."),
    smooth: float = typer.Option(0.0, min=0.0, max=0.99, help="Exponential smoothing of the live view."),
    jobs: int = typer.Option(1, min=1, max=256, help="Batch mode: worker processes."),
    dask: Optional[str] = typer.Option(None, help="Batch mode: run on this Dask scheduler (tcp://host:8786)."),
    plot: Optional[Path] = typer.Option(None, callback=lambda p: _suffix(p, ".png"), help="Draw the emotion "
                                        "probabilities over time into this PNG (one input file; needs "
                                        "edge-ser[plot])."),
    text: bool = typer.Option(False, "--text", help="Also transcribe each speech segment (Whisper, offline) and "
                              "fuse the emotion of its words with the voice's: events gain text, language, "
                              "text_probs and audio_probs (needs edge-ser[text])."),
    language: Optional[str] = typer.Option(None, callback=_language, help="With --text: the language spoken (en, "
                                           "de, pl, ...) [default: identified in each segment by whisper-base]; "
                                           "en uses the English-only whisper-tiny.en (about half the cost)."),
    asr_model: Optional[str] = typer.Option(None, callback=_name, help="With --text: whisper-tiny.en, "
                                            "whisper-base or a CTranslate2 Whisper folder [default: by --language]."),
    text_model: Optional[Path] = typer.Option(None, help="With --text: a text emotion part (folder), e.g. the one a "
                                              "bundle's alignment head was exported with [default: the shipped one]."),
):
    """Detect speech and recognise emotions in a file, a folder, stdin or a microphone (JSON Lines out)."""
    from .audio import AUDIO_SUFFIXES
    from .mic import list_input_devices
    from .run import Settings, check_output, list_inputs

    if list_devices:
        print(list_input_devices())
        return
    if bundle is not None and (bundle.is_file() or (bundle.suffix.lower() in AUDIO_SUFFIXES and not bundle.is_dir())):
        raise EdgeSerError(f"{bundle} was taken as the bundle (the first argument is a bundle folder); to recognise "
                           f"emotions in it, give it as the input: edge-ser run --input {bundle}")
    if (input is None) == (not mic):
        raise EdgeSerError("give exactly one of --input (a file, folder, glob or -) and --mic")
    inputs = [] if mic or input == "-" else list_inputs(input)
    batch = len(inputs) > 1 or (input is not None and input != "-" and not Path(input).is_file())
    if batch and (mic or plot):
        raise EdgeSerError("--plot takes one input file, not a folder or glob")
    if dask and not batch:
        raise EdgeSerError("--dask is for batch mode (--input FOLDER or a glob)")
    text_options = _text_options(text, language, asr_model, text_model, threads)
    bundle = bundle or default_bundle()
    if output is not None:
        check_output(output, inputs, bundle, overwrite, append=batch)
    if plot is not None:
        if output is not None and plot.resolve() == output.resolve():
            raise EdgeSerError(f"--plot {plot} is the same file as --output; choose another --plot")
        check_output(plot, inputs, bundle, overwrite, option="--plot")
    settings = Settings(str(bundle), variant, backend and backend.value, threads, window, hop, vad.value,
                        prefer=prefer.value, text=text_options)
    if batch:
        _run_batch(inputs, settings, output, overwrite, jobs, dask)
    else:
        _run_one(settings, input, inputs, mic, device, output, smooth, plot)


@app.command("eval")
def eval_(
    bundle: Optional[Path] = typer.Argument(None, help="Bundle directory [default: the ready model]."),
    data: Path = typer.Option(None, help="Labelled audio (same forms as export) [default: $EDGE_SER_DATA or "
                              "../shared/data/emodb]."),
    label_map: Optional[str] = typer.Option(None, callback=label_map_option, help="Rename or drop labels first: "
                                            "FROM=TO[,FROM=TO...]; FROM= drops FROM (e.g. calm=neutral,boredom=). "
                                            "Labels the model does not know are left out and counted."),
    variant: Optional[list[str]] = typer.Option(None, "--variant", "--model", callback=_name,
                                                help="Variant(s) to score, 'auto' for the one --prefer "
                                                "picks [default: every one an installed engine runs] (--model is a "
                                                "deprecated alias)."),
    prefer: Prefer = PREFER,
    backend: Optional[Backend] = BACKEND,
    threads: Optional[int] = THREADS,
    as_json: bool = typer.Option(False, "--json", help="Print {\"variants\": {NAME: {ua, wa, f1, n, ece, recall}}} "
                                 "on stdout."),
):
    """Score the variants of a bundle on labelled data (UA, WA, macro-F1, calibration error)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .bundle import load_bundle
    from .evaluate import evaluate_bundle
    from .targets import choose_variant

    bundle = bundle or default_bundle()
    data = data or default_data()
    if variant and "auto" in variant:
        auto = choose_variant(load_bundle(bundle, verify=False), backend and backend.value, prefer=prefer.value).name
        variant = list(dict.fromkeys(auto if v == "auto" else v for v in variant))
    result = evaluate_bundle(bundle, data, variants=variant, backend=backend and backend.value, threads=threads,
                             label_map=label_map)
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=Text(clean(f"{bundle} on {data}")))
    for col in ("variant", "UA", "WA", "macro-F1", "ECE", "n"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for name, m in result["variants"].items():
        table.add_row(Text(clean(name)), f"{m['ua']:.3f}", f"{m['wa']:.3f}", f"{m['f1']:.3f}", f"{m['ece']:.3f}",
                      str(m["n"]))
    Console().print(table)


@app.command()
def bench(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    data: Optional[Path] = typer.Option(None, help="Labelled audio for accuracy: the bundle's held-out speakers "
                                        "in it, or all of it [default: no accuracy]."),
    threads: str = typer.Option("1,all", callback=lambda v: ",".join(map(str, _thread_list(v))),
                                help="Comma-separated thread counts ('all' = every core)."),
    backend: Optional[list[Backend]] = typer.Option(None, help="Engines to time [default: those installed]."),
    out: Path = typer.Option(Path("bench-results"), help="Folder for the table, CSV, JSON and plot."),
    reps: Optional[int] = typer.Option(None, min=1, max=100000, help="Timed repetitions per row [default: as many "
                                       "as fit about a minute per thread count, 20-200]."),
    quick: bool = typer.Option(False, help="A few repetitions only (smoke test)."),
    reference: Optional[str] = typer.Option(None, help="Also time this torch teacher (e.g. whisper-tiny.en; needs "
                                            "edge-ser[export]); chosen by you, never read from the bundle."),
    peers: str = typer.Option("auto", help="Other toolkits' models to time beside the bundle: comma-separated "
                              "names, 'auto' (every installed one) or 'none'."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON on stdout."),
):
    """Latency / memory / size / accuracy of every variant and its peers, side by side, with a Pareto plot."""
    from rich.console import Console

    from .bench import report, run_bench

    if out.exists() and not out.is_dir():
        raise EdgeSerError(f"--out {out} is a file; give a folder for the bench results")
    from .manifest import MANIFEST
    inside = next((p for p in [out.resolve(), *out.resolve().parents] if (p / MANIFEST).is_file()), None)
    if inside is not None:
        where = "a bundle" if inside == out.resolve() else f"inside the bundle {inside}"
        raise EdgeSerError(f"--out {out} is {where}; a bundle holds only its own files: choose another --out for "
                           "the bench results")

    rows = run_bench(bundle, data=data, threads=[int(t) for t in threads.split(",")],
                     backends=[b.value for b in backend or []] or None,
                     out=out, reps=reps, quick=quick, reference=reference, peers=peers)
    Console(stderr=True).print(report.terminal_table(f"edge-ser bench {bundle}", rows))
    if as_json:
        print(json.dumps({"rows": rows}))


@app.command()
def info(bundle: Optional[Path] = typer.Argument(None, help="Bundle directory [default: the ready model]."),
         prefer: Prefer = PREFER):
    """Show a bundle (checksums verified): labels, models, data, variants, and which one `auto` runs here."""
    from rich.console import Console

    from .bundle import load_bundle
    from .report import bundle_tables

    b = load_bundle(bundle or default_bundle())
    out = Console(width=max(80, min(Console().width, 120)))
    for table in bundle_tables(b, prefer.value):
        out.print(table)


@app.command()
def pack(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    out: Path = typer.Option(..., help="Folder for the slim bundle (written atomically)."),
    variant: Optional[str] = typer.Option(None, callback=_variant_list,
                                          help="The variant(s) to keep, comma-separated."),
    target: Optional[Target] = typer.Option(None, help="Keep the variant `auto` would run on this CPU family."),
    prefer: Optional[Prefer] = typer.Option(None, help="With --target (default: this CPU): what `auto` optimises, "
                                            "balanced, accuracy or speed."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle at --out."),
):
    """Write a deployment bundle holding only the variants a device needs (its own checksums and model card)."""
    from .bundle import check_out, load_bundle
    from .bundle import pack as pack_bundle
    from .targets import choose_variant, detect_target

    if (variant is None) == (target is None and prefer is None):
        raise EdgeSerError("give either --variant, or --target and/or --prefer")
    check_out(out, overwrite)
    b = load_bundle(bundle)
    name = variant
    if variant is None:
        target = target or Target(detect_target())
        name = choose_variant(b, target=target.value, backends=["onnxruntime", "openvino"],
                              prefer=(prefer or Prefer.balanced).value).name
        made = b.variants[name].targets
        if made and target.value not in made:
            print(clean(f"note: {bundle} has no variant made for {target.value}; packing {name}, made for "
                        f"{', '.join(made)}"), file=sys.stderr)
    manifest = pack_bundle(b, name, out, overwrite)
    size = sum(f.bytes for f in manifest.files.values()) / 1e6
    print(clean(f"wrote {out}: {', '.join(manifest.variants)}, {size:.1f} MB"), file=sys.stderr)


@app.command()
def adapt(
    bundle: Optional[Path] = typer.Argument(None, help="Base bundle [default: the ready model]."),
    data: Optional[Path] = typer.Option(None, help="Your labelled clips, any label set (same forms as export: label "
                                        "folders, a manifest.csv with path,label,speaker, EmoDB or RAVDESS names)."),
    out: Path = typer.Option(..., help="Folder for the new bundle (written atomically)."),
    record: Optional[str] = typer.Option(None, help="Instead of --data: record your clips now, from the microphone: "
                                         "the labels, comma-separated (e.g. calm,angry); needs edge-ser[mic]."),
    per_label: int = typer.Option(4, min=2, max=50, help="With --record: clips to record per label."),
    seconds: float = typer.Option(3.0, min=0.5, max=30.0, help="With --record: seconds per clip."),
    device: Optional[int] = typer.Option(None, min=0, help="With --record: microphone device index."),
    label_map: Optional[str] = typer.Option(None, callback=label_map_option, help="Rename or drop labels first: "
                                            "FROM=TO[,FROM=TO...] (FROM= drops FROM), e.g. calm=neutral."),
    variant: str = VARIANT,
    prefer: Prefer = PREFER,
    threads: Optional[int] = THREADS,
    overwrite: bool = typer.Option(False, help="Replace an existing bundle at --out."),
):
    """Teach a bundle your own emotions from a few labelled clips: a new head on its encoder, no torch."""
    from .adapt import adapt as adapt_clips
    from .bundle import check_out
    from .data import load_corpus, load_waveforms
    from .recognizer import Recognizer

    if (data is None) == (record is None):
        raise EdgeSerError("give exactly one of --data (labelled clips) and --record (labels to record now)")
    names = [n.strip() for n in (record or "").split(",") if n.strip()]
    if record is not None and (len(names) < 2 or len(set(names)) < len(names)):
        raise EdgeSerError(f"--record needs at least two different labels, comma-separated, not {record!r}")
    check_out(out, overwrite)
    corpus = load_corpus(data, label_map=label_map) if data is not None else None
    rec = Recognizer(bundle or default_bundle(), variant=variant, threads=threads, prefer=prefer.value)
    if corpus is None:
        waves, labels = _enroll(rec, names, per_label, seconds, device)
        speakers, what, skipped = None, "clips recorded with --record", {}
    else:
        waves, corpus = load_waveforms(corpus)
        if not waves:
            raise EdgeSerError(f"{data}: none of its clips is usable ({corpus.skip_summary()})")
        labels, spk = [it.label for it in corpus.items], [it.speaker for it in corpus.items]
        speakers, what, skipped = spk if len(set(spk)) > 1 else None, corpus.name, dict(corpus.skipped)
    new, report = adapt_clips(rec, waves, labels, speakers, corpus=what, skipped=skipped, show_progress=True)
    new.save(out, overwrite)
    print(clean(f"wrote {out}: labels {', '.join(new.labels)} on {rec.variant}; {len(waves)} clips; "
                f"{report.summary()}"), file=sys.stderr)


def _enroll(rec, labels: list[str], per_label: int, seconds: float, device: Optional[int]):
    """Guided enrollment: prompt for each clip, record it, say what the base model heard; (clips, labels)."""
    from . import audio
    from .mic import record_clip

    interactive = sys.stdin.isatty()
    waves, names = [], []
    for label in labels:
        for i in range(per_label):
            for _ in range(3):
                prompt = f"[{label} {i + 1}/{per_label}] say something as you would when {label}; {seconds:g} s"
                print(clean(prompt + (": press Enter to start" if interactive else "")), file=sys.stderr)
                if interactive:
                    sys.stdin.readline()
                x = record_clip(device, rec.sample_rate, seconds)
                if not audio.is_silent(x):
                    break
                print("  heard nothing (silence); again", file=sys.stderr)
            else:
                raise EdgeSerError("the microphone gave only silence 3 times; check it with `edge-ser run --mic`")
            heard = rec.predict(x, rec.sample_rate)
            print(clean(f"  heard {len(audio.trim_silence(x, sr=rec.sample_rate)) / rec.sample_rate:.1f} s of "
                        f"sound; the base model says {heard.label} ({heard.probs[heard.label]:.2f})"), file=sys.stderr)
            waves.append(x)
            names.append(label)
    return waves, names


@contextlib.contextmanager
def _sigterm_stops(terminated: list) -> Iterator[None]:
    """SIGTERM stops the block as Ctrl-C does (KeyboardInterrupt: the open segment is flushed, the files done are
    written) and is noted in ``terminated``; a second SIGTERM exits at once (:func:`edge_ser.interrupt.terminate`)."""
    def handler(signum, frame):
        terminated.append(signum)
        signal.signal(signal.SIGTERM, previous)
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _bundle_name(settings) -> str:
    """The bundle as a person knows it: its folder name, or the ready model."""
    path = Path(settings.bundle).resolve()
    with contextlib.suppress(EdgeSerError):
        if path == default_bundle().resolve():
            return "ready model"
    return path.name


def _run_one(settings, input, inputs, mic, device, output, smooth, plot) -> None:
    """One file, stdin or the microphone through one stream; events as they come (a no_speech record when there
    are none: see :func:`edge_ser.run.whole_clip_event`); exit 130 after Ctrl-C, 143 after SIGTERM, each after
    flushing the open segment."""
    from .audio import stream_audio
    from .mic import Counters, mic_chunks
    from .run import (atomic_file, event_record, no_speech_record, recognizer_for, run_chunks, short_clip,
                      stdin_chunks, whole_clip_event, write_line)

    recognizer = recognizer_for(settings)
    live = mic and sys.stderr.isatty()
    stream = recognizer.stream(recognizer.sample_rate, partial=live, smooth=smooth, windows=plot is not None)
    counters = Counters()
    sr = recognizer.sample_rate
    clip = None if mic else short_clip(stdin_chunks(sr) if input == "-" else stream_audio(inputs[0], sr=sr),
                                       recognizer)
    chunks = mic_chunks(device, sr, counters) if mic else clip
    events, terminated = [], []
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(atomic_file(output)) if output else sys.stdout
        view = None
        if live:
            from .view import LiveView
            view = stack.enter_context(LiveView(recognizer.labels, counters))

        def write(record: dict) -> None:
            write_line(f if output else sys.stdout, json.dumps(record, allow_nan=False))   # stdout looked up now:
            # the view moves it

        def emit(event) -> None:
            write(event_record(event, recognizer))
            events.append(event)
            if view:
                view.event(event)
        with _sigterm_stops(terminated):
            summary = run_chunks(stream, chunks, emit, counters, skip_bad=mic,
                                 on_chunk=view.update if view else None)
        if not events:
            fallback = None if summary.interrupted or clip is None else whole_clip_event(recognizer, clip.samples())
            if fallback:
                write(event_record(fallback, recognizer, fallback=True))
                events.append(fallback)
                summary.segments = 1
            else:
                write(no_speech_record(recognizer, summary.audio_s))
    print(summary.line(microphone=mic, stopped="terminated" if terminated else "interrupted"), file=sys.stderr)
    if plot is not None:
        from .timeline import plot_timeline
        name = Path(input).name if input not in (None, "-") else "microphone" if mic else "stdin"
        plot_timeline(events, recognizer.labels, summary.audio_s, plot,
                      title=f"{name}: {_bundle_name(settings)}, variant {recognizer.variant}")
        print(clean(f"wrote {plot}"), file=sys.stderr)
    if summary.interrupted:   # said so in the summary; SystemExit, as typer would print nothing or "interrupted"
        sys.exit(143 if terminated else 130)


def _run_batch(files, settings, output, overwrite, jobs, dask) -> None:
    """Every file, in worker processes or on Dask; each file's lines at once; resume from an --output that this
    bundle and variant wrote; exit 130 after Ctrl-C, 143 after SIGTERM, with what was done written and counted."""
    from .run import appending, atomic_file, read_earlier, recognizer_for, run_batch

    earlier = read_earlier(output) if output and not overwrite and output.exists() else None   # before loading
    if settings.threads is None and jobs > 1:
        from dataclasses import replace
        settings = replace(settings, threads=max(1, (os.cpu_count() or 1) // jobs))
    if earlier is not None:
        earlier.check(recognizer_for(settings))
    terminated = []
    with contextlib.ExitStack() as stack:
        if output is None:
            f = sys.stdout
        else:   # --overwrite: a new file, in place at the end; else append to what an earlier run wrote
            f = stack.enter_context(atomic_file(output) if overwrite else
                                    appending(output, earlier.keep if earlier else 0))
        skip = earlier.done if earlier else set()
        with _sigterm_stops(terminated):
            if dask:
                from .distributed import dask_client, run_dask
                client = stack.enter_context(dask_client(dask))
                counts = run_dask(files, settings, f, client, skip)
            else:
                counts = run_batch(files, settings, f, jobs, skip)
    resumed = f", {counts['resumed']} already in {output} (skipped)" if output else ""
    fallback = f", {counts['vad_fallback']} classified whole (vad_fallback)" if counts["vad_fallback"] else ""
    left = counts["files"] - counts["resumed"] - counts["processed"] - counts["errors"]
    stopped = f"; {left} not done ({'terminated' if terminated else 'interrupted'})" if counts["interrupted"] else ""
    print(clean(f"edge-ser run: {counts['files']} files: {counts['processed']} processed{resumed}, "
                f"{counts['errors']} unreadable (error records), {counts['no_speech']} with no speech found "
                f"(no_speech records){fallback}; {counts['segments']} segments{stopped}"), file=sys.stderr)
    if counts["interrupted"]:   # said so in the summary (see _run_one)
        sys.exit(143 if terminated else 130)


def _register_plugins(argv: list[str]) -> None:
    """Add the toolchain's commands (entry points), loading them only for the top-level help or when one of them
    is the command (so `edge-ser run` imports nothing of the toolchain); a stub `export` says what to install
    when the toolchain is absent."""
    from .plugins import COMMANDS, call, find

    found = find(COMMANDS)
    command = next((a for a in argv if not a.startswith("-")), None)
    for name, ep in found.items():
        if command is None or command == name:
            call(ep, app)   # a broken plugin is logged and skipped
    if "export" not in found:
        @app.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
        def export(ctx: typer.Context):
            """Learn a head, distill, quantize and write a bundle (needs edge-ser[export])."""
            raise EdgeSerError("edge-ser export needs the export toolchain: pip install edge-ser[export]")


class CleanFormatter(logging.Formatter):
    """Log lines carry file, corpus and bundle names: print them escaped (no terminal control sequences)."""

    def format(self, record: logging.LogRecord) -> str:
        return clean(super().format(record), 4000)


def _error(message: str) -> int:
    """One line on stderr, never wrapped or interpreted, whatever the terminal."""
    sys.stderr.write("error: " + clean(message, 2000) + "\n")
    sys.stderr.flush()
    return 2


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2, Ctrl-C exits 130, SIGTERM 143."""
    from .interrupt import terminate
    from .progress import set_enabled

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CleanFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    set_enabled(sys.stderr.isatty())
    signal.signal(signal.SIGTERM, terminate)
    argv = sys.argv[1:] if argv is None else argv
    _register_plugins(argv)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="edge-ser", standalone_mode=False)
    except EdgeSerError as e:
        sys.exit(_error(str(e)))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":   # `edge-ser` alone: show the help
            print(e.ctx.get_help())
            sys.exit(0)
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        sys.exit(_error(e.format_message() + hint))
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()   # the reader went away (e.g. `| head`): not an error of ours
        sys.exit(141)
    if code == 130:   # typer turned Ctrl-C into a silent exit 130
        sys.stderr.write("interrupted\n")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
