"""`edge-ser bench`: latency, memory, size, MACs and accuracy of every bundle variant side by side.

The fp32 torch teacher the bundle was exported from is the reference row (``backend="torch"``); it is
rebuilt lazily from ``export`` (torch) and skipped, with a note, where that is not installed. All
engines of one thread count are timed in the same loop, round-robin, one 2 s window per engine per
repetition, so slow drifts of a noisy machine hit every variant alike and the ratios stay fair.
"""
from __future__ import annotations

import csv
import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .bundle import Bundle, load_bundle
from .engine import BACKENDS, open_engine
from .errors import EdgeSerError

COLUMNS = ("variant", "backend", "precision", "threads", "latency_ms_p50", "latency_ms_p95", "rtf",
           "peak_rss_mb", "size_mb", "load_ms", "macs_per_s", "ua", "wa", "f1", "speedup_vs_teacher")
REFERENCE_BACKEND = "torch"
REFERENCE_VARIANT = "teacher-fp32"

# Sustained multiply-accumulates per second of ONE core, in GMAC/s, assumed for the Raspberry Pi
# projection (latency = MACs per window / this). Rough figures, good to about a factor of two:
# - Pi 4, Cortex-A72 at 1.5 GHz (Armv8.0-A): two 128-bit NEON FMA pipes give a peak of 8 fp32
#   MAC/cycle = 12 GMAC/s; published HPL (Linpack) runs reach about 8 GFLOPS fp64 on 4 cores
#   (B. Feiereisen, "Benchmarking the Raspberry Pi 4 with Raspberry Pi OS64", 2022), i.e. ~1 GMAC/s
#   fp64 per core, ~2 GMAC/s at fp32's twice-as-wide vectors. No int8 dot-product instructions
#   (SDOT arrives in Armv8.2), so int8 kernels gain only ~1.5x over fp32.
# - Pi 5, Cortex-A76 at 2.4 GHz (Armv8.2-A): same two FMA pipes at a higher clock, a wider core
#   (peak 19.2 GMAC/s fp32, 4x that in int8 through SDOT); HPL results on the Pi 5 are about 3x the
#   Pi 4's, so ~5 GMAC/s fp32 per core; int8 with SDOT kernels ~2.5x fp32.
# Real runtimes on small 2 s inputs reach a fraction of these (attention, layer norm, memory-bound
# ops), so treat the projection as a lower bound on latency, not a measurement.
PI_GMACS_PER_CORE = {
    "Raspberry Pi 4 (Cortex-A72 1.5 GHz)": {"fp32": 2.0, "int8": 3.0},
    "Raspberry Pi 5 (Cortex-A76 2.4 GHz)": {"fp32": 5.0, "int8": 12.0},
}


@dataclass
class BenchConfig:
    """How long to measure. ``reps=None`` picks as many repetitions as fit ``budget_s`` per thread count."""

    window_s: float = 2.0
    warmup: int = 5
    settle: int = 1               # untimed calls on switching engines: the last engine's idle threads
                                  # (ONNX Runtime spins them a while) must not bill the next engine
    reps: int | None = None
    min_reps: int = 20
    max_reps: int = 200
    budget_s: float = 60.0        # timed seconds per thread count when reps is None
    probe_timeout_s: float = 300.0
    seed: int = 0


@dataclass
class Target:
    """One (variant, backend) to time; ``model`` is "teacher" | "student"."""

    variant: str
    backend: str
    precision: str
    model: str
    size_mb: float


def run_bench(bundle, data: Path | None = None, threads: list[int] | None = None,
              backends: list[str] | None = None, out: Path = Path("benchmarks/results"),
              reps: int | None = None, quick: bool = False, progress: bool = True) -> list[dict]:
    """Benchmark every variant of a bundle (plus the torch teacher) and write the results.

    Parameters
    ----------
    bundle : bundle directory or Bundle.
    data : labelled audio to score; default: the bundle's held-out speakers of its training corpus.
    threads : thread counts to time (default [1, 2]).
    backends : "onnxruntime" and/or "openvino" (default: those installed). IR variants run on openvino only.
    out : folder for bench_<name>.md/.csv/.json and pareto_<name>.png.
    reps : timed repetitions per engine (default: as many as fit the time budget).
    quick : a few repetitions only (tests, smoke runs).

    Returns
    -------
    The rows, one per (variant, backend, threads), with the keys in ``COLUMNS``.
    """
    start = time.perf_counter()
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    cfg = BenchConfig(reps=reps, warmup=1 if quick else 5, settle=0 if quick else 1, min_reps=3 if quick else 20)
    if quick and reps is None:
        cfg.reps = 3
    threads = sorted(set(threads or [1, 2]))
    if any(t < 1 for t in threads):
        raise EdgeSerError(f"thread counts must be at least 1, not {threads}")
    console = Console(stderr=True)
    notes: list[str] = []
    targets = _targets(bundle, _backends(backends))
    reference, ref_note = _reference_or_note(bundle)
    if ref_note:
        notes.append(ref_note)
        console.print(f"[yellow]{ref_note}[/]")
    window = _window(bundle, cfg)
    seconds = {"setup": time.perf_counter() - start}

    timing, reps_used = {}, {}
    with _progress(console, progress) as bar:
        for t in threads:
            lap = time.perf_counter()
            timing_t, reps_used[t] = _time_interleaved(bundle, targets, reference, t, window, cfg, bar)
            timing.update(timing_t)
            seconds[f"latency, {t} thread(s)"] = time.perf_counter() - lap
        lap = time.perf_counter()
        probes = _probe_all(bundle, targets, reference is not None, threads, cfg, bar, notes)
        seconds["fresh processes"] = time.perf_counter() - lap
    lap = time.perf_counter()
    macs, macs_note = _macs(bundle)
    notes.append(macs_note)
    accuracy = _accuracy(bundle, data, targets, max(threads), progress, notes)
    seconds["MACs and accuracy"] = time.perf_counter() - lap

    teacher_acc = {} if data is not None else bundle.manifest.get("evaluation", {}).get("torch_teacher", {})
    rows = _rows(targets, reference, threads, timing, probes, macs, accuracy, teacher_acc, cfg)
    projection = _projection(bundle, targets, macs, cfg.window_s)
    notes += _standing_notes(bundle, data, reference is not None, cfg, reps_used)
    seconds["total"] = time.perf_counter() - start
    notes.append("bench took " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ".")
    _write(bundle, rows, projection, notes, cfg, reps_used, Path(out), console)
    Console(stderr=True, width=max(console.width, 150)).print(_rich_table(bundle, rows))
    return rows


# ----------------------------------------------------------------------------- what to time

def _backends(backends: list[str] | None) -> list[str]:
    installed = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
    if not backends:
        return installed
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise EdgeSerError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    missing = [b for b in backends if b not in installed]
    if missing:
        raise EdgeSerError(f"backend(s) {', '.join(missing)} not installed (pip install edge-ser[openvino]); "
                           f"installed: {', '.join(installed) or 'none'}")
    return list(dict.fromkeys(backends))


def _targets(bundle: Bundle, backends: list[str]) -> list[Target]:
    """ONNX variants on every backend, OpenVINO IR variants on openvino only, in manifest order."""
    files = bundle.manifest["files"]
    targets = []
    for name, v in bundle.variants.items():
        size = sum(files[f]["bytes"] for f in v.files) / 1e6
        for b in backends:
            if v.format == "onnx" or b == "openvino":
                targets.append(Target(name, b, v.precision, v.model, size))
    if not targets:
        raise EdgeSerError(f"no variant of {bundle.path} runs on {', '.join(backends)}; "
                           "IR variants need --backend openvino")
    return targets


def _window(bundle: Bundle, cfg: BenchConfig) -> np.ndarray:
    """A fixed 2 s clip [1, N] of speech-like noise (latency does not depend on the content)."""
    n = int(round(cfg.window_s * bundle.sample_rate))
    rng = np.random.default_rng(cfg.seed)
    t = np.arange(n) / bundle.sample_rate
    x = 0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)[None]


# ----------------------------------------------------------------------------- torch reference

@dataclass
class Reference:
    """The fp32 torch teacher: ``run(audio[1, N]) -> probs`` at the current torch thread count."""

    model: object              # export.heads.EmotionModel(teacher, head)
    size_mb: float
    spec: str

    def set_threads(self, threads: int) -> None:
        import torch
        torch.set_num_threads(threads)

    def run(self, audio: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode():
            return self.model(torch.from_numpy(audio)).numpy()


def teacher_spec(bundle: Bundle) -> str | None:
    """The teacher spec the bundle was exported with (manifest export.config.teacher)."""
    return bundle.manifest.get("export", {}).get("config", {}).get("teacher")


def load_reference(bundle: Bundle) -> Reference:
    """Rebuild the fp32 torch teacher with a head of the bundle's shape (random weights: timing only).

    Imports torch and ``export`` lazily; raises ImportError where they are not installed and
    EdgeSerError where the manifest names no teacher.
    """
    import torch

    from export.heads import EmotionModel, fit_head
    from export.teachers import load_teacher

    spec = teacher_spec(bundle)
    if not spec:
        raise EdgeSerError(f"{bundle.path} names no teacher in export.config.teacher")
    teacher = load_teacher(spec).eval()
    n_classes = len(bundle.labels)
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2 * n_classes, teacher.n_layers, 2 * teacher.dim, generator=gen)
    kind = bundle.manifest.get("head", "linear")
    quick = {"l2": 1.0, "layers": -1} if kind == "linear" else {"max_steps": 1}   # only the shape matters
    head = fit_head(kind, features, np.arange(2 * n_classes) % n_classes, n_classes, seed=0, **quick)
    model = EmotionModel(teacher, head).eval()
    size = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    return Reference(model, size, spec)


def _reference_or_note(bundle: Bundle) -> tuple[Reference | None, str | None]:
    try:
        return load_reference(bundle), None
    except ImportError as e:
        return None, f"torch teacher row skipped: the export toolchain is not installed ({e}); " \
                     "pip install edge-ser[export] to include the reference"
    except EdgeSerError as e:
        return None, f"torch teacher row skipped: {e}"


# ----------------------------------------------------------------------------- latency

def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=not enabled, transient=False)


def _time_interleaved(bundle, targets, reference, threads, window, cfg, bar):
    """{(variant, backend, threads): latencies in ms} timed round-robin, and the repetitions used."""
    runners = {(t.variant, t.backend): open_engine(bundle, t.variant, t.backend, threads).run for t in targets}
    if reference is not None:
        reference.set_threads(threads)
        runners[(REFERENCE_VARIANT, REFERENCE_BACKEND)] = reference.run
    keys = list(runners)
    task = bar.add_task(f"warm-up, {threads} thread(s)", total=cfg.warmup * len(keys))
    round_s = 0.0
    for _ in range(cfg.warmup):
        start = time.perf_counter()
        for k in keys:
            for _ in range(1 + cfg.settle):
                runners[k](window)
            bar.advance(task)
        round_s = time.perf_counter() - start
    reps = cfg.reps or int(np.clip(cfg.budget_s / max(round_s, 1e-6), cfg.min_reps, cfg.max_reps))
    bar.update(task, description=f"timing {len(keys)} engines, {threads} thread(s)", total=reps * len(keys),
               completed=0)
    times = {k: [] for k in keys}
    for r in range(reps):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:   # rotate so no engine always follows another
            for _ in range(cfg.settle):
                runners[k](window)
            start = time.perf_counter()
            runners[k](window)
            times[k].append((time.perf_counter() - start) * 1e3)
            bar.advance(task)
    del runners
    gc.collect()
    return {(*k, threads): np.array(v) for k, v in times.items()}, reps


# ----------------------------------------------------------------------------- fresh-process memory / load

_PROBE = r"""
import json, sys, time
import numpy as np
a = json.loads(sys.argv[1])
x = np.zeros((1, a["samples"]), np.float32)
x[0, ::40] = 0.1
if a["backend"] == "torch":
    import torch
    torch.set_num_threads(a["threads"])
    from edge_ser.bench import load_reference
    from edge_ser.bundle import load_bundle
    b = load_bundle(a["bundle"], verify=False)
    t0 = time.perf_counter()
    ref = load_reference(b)
    load_ms = (time.perf_counter() - t0) * 1e3
    ref.run(x)
else:
    from edge_ser.bundle import load_bundle
    from edge_ser.engine import open_engine
    b = load_bundle(a["bundle"], verify=False)
    t0 = time.perf_counter()
    engine = open_engine(b, a["variant"], a["backend"], a["threads"])
    load_ms = (time.perf_counter() - t0) * 1e3
    engine.run(x)
try:  # VmHWM belongs to this program's address space; ru_maxrss on Linux keeps the parent's peak across exec
    hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    rss_mb = int(hwm.split()[1]) / 1e3
except (OSError, StopIteration):
    import resource
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1e6 if sys.platform == "darwin" else 1e3)
print(json.dumps({"peak_rss_mb": rss_mb, "load_ms": load_ms}))
"""


def probe(bundle: Bundle, variant: str, backend: str, threads: int, window_s: float = 2.0,
          timeout_s: float = 300.0) -> dict:
    """Peak RSS (MB) and load time (ms) of a fresh Python process that loads one variant and runs one window."""
    args = {"bundle": str(Path(bundle.path).resolve()), "variant": variant, "backend": backend,
            "threads": threads, "samples": int(round(window_s * bundle.sample_rate))}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], capture_output=True, text=True,
                          timeout=timeout_s, env=env)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise EdgeSerError(f"fresh-process probe of {variant} on {backend} failed: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _probe_all(bundle, targets, with_reference, threads, cfg, bar, notes) -> dict:
    keys = [(t.variant, t.backend) for t in targets]
    if with_reference:
        keys.append((REFERENCE_VARIANT, REFERENCE_BACKEND))
    task = bar.add_task("fresh-process memory and load time", total=len(keys) * len(threads))
    result = {}
    for variant, backend in keys:
        for t in threads:
            try:
                result[(variant, backend, t)] = probe(bundle, variant, backend, t, cfg.window_s, cfg.probe_timeout_s)
            except (EdgeSerError, subprocess.TimeoutExpired) as e:
                notes.append(f"no memory/load figures for {variant} on {backend}, {t} thread(s): {e}")
            bar.advance(task)
    return result


# ----------------------------------------------------------------------------- MACs, accuracy

def _macs(bundle: Bundle) -> tuple[dict[str, int | None], str]:
    """MACs per second of audio for "teacher" and "student", counted on the fp32 ONNX graph of each.

    Quantization does not change how many multiply-accumulates a graph does, so int8 and IR variants
    take the count of their model's fp32 graph.
    """
    variants = bundle.variants
    try:
        from export.graph import count_macs
    except ImportError:
        count_macs = None
    macs, sources = {}, set()
    for model in ("teacher", "student"):
        onnx = sorted((v for v in variants.values() if v.model == model and v.format == "onnx"),
                      key=lambda v: v.precision != "fp32")
        if count_macs is not None and onnx:
            macs[model] = int(count_macs(bundle.model_path(onnx[0]), seconds=1.0))
            sources.add("counted from the fp32 ONNX graph of each model (export.graph.count_macs)")
        else:
            macs[model] = bundle.manifest.get(model, {}).get("macs_per_s")
            if macs[model] is not None:
                sources.add("from the manifest (counted at export)")
    source = " and ".join(sorted(sources)) or "unknown (no ONNX graph to count, none in the manifest)"
    return macs, f"MACs per second of audio {source}; int8 variants do the same MACs as their fp32 graph."


def heldout_waves(bundle: Bundle, data: Path | None, progress: bool = True):
    """(waves, labels): ``data`` whole, else the bundle's held-out speakers of its training corpus."""
    from .data import load_corpus, load_waveforms

    d = bundle.manifest.get("data", {})
    path = Path(data) if data is not None else Path(d.get("path", ""))
    if data is None and (not d.get("path") or not path.exists()):
        raise EdgeSerError(f"the bundle's training corpus {d.get('path')!r} is not here; pass --data "
                           "to score on other labelled audio")
    corpus = load_corpus(path, known_labels=bundle.labels)
    if data is None:
        speakers = set(map(str, d.get("test_speakers", [])))
        if not speakers:
            raise EdgeSerError(f"{bundle.path} lists no data.test_speakers; pass --data")
        corpus.items = [it for it in corpus.items if it.speaker in speakers]
        if not corpus.items:
            raise EdgeSerError(f"none of the held-out speakers {', '.join(sorted(speakers))} is in {path}; "
                               "pass --data")
    waves, corpus = load_waveforms(corpus, progress=progress)
    return waves, [it.label for it in corpus.items]


def _accuracy(bundle, data, targets, threads, progress, notes) -> dict:
    from .evaluate import evaluate_waves

    try:
        waves, labels = heldout_waves(bundle, data, progress)
    except EdgeSerError as e:
        notes.append(f"no accuracy: {e}")
        Console(stderr=True).print(f"[yellow]no accuracy: {e}[/]")
        return {}
    result = {}
    for backend in dict.fromkeys(t.backend for t in targets):
        names = [t.variant for t in targets if t.backend == backend]
        scored = evaluate_waves(bundle, waves, labels, variants=names, backend=backend, threads=threads,
                                progress=progress)["variants"]
        result.update({(name, backend): m for name, m in scored.items()})
    return result


# ----------------------------------------------------------------------------- rows and outputs

def _round(x, digits):
    return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else round(float(x), digits)


def _rows(targets, reference, threads, timing, probes, macs, accuracy, teacher_acc, cfg) -> list[dict]:
    entries = [(t.variant, t.backend, t.precision, t.model, t.size_mb) for t in targets]
    if reference is not None:
        entries.insert(0, (REFERENCE_VARIANT, REFERENCE_BACKEND, "fp32", "teacher", reference.size_mb))
    rows = []
    for t in threads:
        ref_key = (REFERENCE_VARIANT, REFERENCE_BACKEND, t)
        ref_p50 = float(np.median(timing[ref_key])) if ref_key in timing else None
        for variant, backend, precision, model, size in entries:
            lat = timing[(variant, backend, t)]
            p50 = float(np.median(lat))
            pr = probes.get((variant, backend, t), {})
            acc = teacher_acc if backend == REFERENCE_BACKEND else accuracy.get((variant, backend), {})
            rows.append({
                "variant": variant, "backend": backend, "precision": precision, "threads": t,
                "latency_ms_p50": _round(p50, 3), "latency_ms_p95": _round(np.percentile(lat, 95), 3),
                "rtf": _round(p50 / 1e3 / cfg.window_s, 6), "peak_rss_mb": _round(pr.get("peak_rss_mb"), 1),
                "size_mb": _round(size, 3), "load_ms": _round(pr.get("load_ms"), 1),
                "macs_per_s": macs.get(model), "ua": _round(acc.get("ua"), 4), "wa": _round(acc.get("wa"), 4),
                "f1": _round(acc.get("f1"), 4),
                "speedup_vs_teacher": _round(ref_p50 / p50, 3) if ref_p50 else None,
            })
    return rows


def _projection(bundle, targets, macs, window_s) -> list[dict]:
    """Projected single-core latency per window on each Raspberry Pi, per (variant, precision)."""
    seen, result = set(), []
    entries = [(REFERENCE_VARIANT, "fp32", "teacher")] + [(t.variant, t.precision, t.model) for t in targets]
    for variant, precision, model in entries:
        if variant in seen or not macs.get(model):
            continue
        seen.add(variant)
        row = {"variant": variant, "precision": precision, "macs_per_window": int(macs[model] * window_s)}
        for board, gmacs in PI_GMACS_PER_CORE.items():
            ms = macs[model] * window_s / (gmacs[precision] * 1e9) * 1e3
            row[board] = {"latency_ms_1_core": round(ms, 1), "rtf": round(ms / 1e3 / window_s, 4)}
        result.append(row)
    return result


def _standing_notes(bundle, data, with_reference, cfg, reps_used) -> list[str]:
    reps = ", ".join(f"{r} repetitions at {t} thread(s)" for t, r in reps_used.items())
    notes = [f"latency: one {cfg.window_s:g} s window [1, {int(cfg.window_s * bundle.sample_rate)}] per call, "
             f"after {cfg.warmup} warm-up call(s), {cfg.settle} untimed settling call(s) on each switch of "
             f"engine, {reps}; all engines of a thread count timed round-robin in one loop; "
             "rtf = p50 / window length.",
             "peak_rss_mb: peak resident memory (VmHWM) of a fresh Python process that loads the variant and "
             "runs one window "
             "(interpreter, numpy and the runtime library included); load_ms: that process's model load "
             "and compile (open_engine, or rebuilding the torch teacher).",
             "size_mb: the variant's model files; for the torch teacher, its fp32 parameters."]
    if with_reference:
        if data is None:
            notes.append("torch teacher accuracy is the export-time evaluation (evaluation.torch_teacher in the "
                         "manifest, same held-out speakers); its latency row uses a head of the same shape with "
                         "random weights, which costs the same.")
        else:
            notes.append("torch teacher accuracy is not given for --data: the export-time numbers are on other data.")
    return notes


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"
    if isinstance(x, int) and x >= 10**6:
        return f"{x / 1e9:.3g} G"
    return str(x)


def _markdown(bundle, rows, projection, notes, machine) -> str:
    m = bundle.manifest
    lines = [f"# edge-ser bench: {Path(bundle.path).name}", "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}; "
             f"{', '.join(f'{k} {v}' for k, v in machine['versions'].items())}.", "",
             f"Accuracy protocol: {m.get('evaluation', {}).get('protocol', '?')}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    if projection:
        boards = list(PI_GMACS_PER_CORE)
        lines += ["", "## Raspberry Pi projection (rough)", "",
                  "Latency per window on ONE core = MACs per window / assumed sustained GMAC/s per core: "
                  + "; ".join(f"{b}: {g['fp32']} fp32, {g['int8']} int8" for b, g in PI_GMACS_PER_CORE.items())
                  + ". Figures derived from core peak rates and published Linpack (HPL) results "
                  "(see PI_GMACS_PER_CORE in edge_ser/bench.py); real runtimes add non-MAC work, so expect "
                  "slower, by up to about 2x.", "",
                  "| variant | precision | GMAC per window | " + " | ".join(f"{b} ms | {b} rtf" for b in boards) + " |",
                  "|" + "---|" * (3 + 2 * len(boards))]
        for p in projection:
            lines.append(f"| {p['variant']} | {p['precision']} | {p['macs_per_window'] / 1e9:.3g} | "
                         + " | ".join(f"{p[b]['latency_ms_1_core']} | {p[b]['rtf']}" for b in boards) + " |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("onnxruntime", "openvino", "torch"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "versions": versions}


def _write(bundle, rows, projection, notes, cfg, reps_used, out: Path, console: Console) -> None:
    name = Path(bundle.path).resolve().name
    out.mkdir(parents=True, exist_ok=True)
    machine = _machine()
    (out / f"bench_{name}.md").write_text(_markdown(bundle, rows, projection, notes, machine))
    with open(out / f"bench_{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    doc = {"bundle": str(bundle.path), "machine": machine, "config": asdict(cfg),
           "reps": {str(t): r for t, r in reps_used.items()}, "rows": rows, "pi_projection": projection,
           "pi_gmacs_per_core": PI_GMACS_PER_CORE, "notes": notes}
    (out / f"bench_{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    try:
        pareto_plot(rows, out / f"pareto_{name}.png", title=f"edge-ser bench: {name}")
    except ImportError:
        console.print("[yellow]no Pareto plot: matplotlib is not installed (pip install matplotlib)[/]")
    console.print(f"wrote {out}/bench_{name}.md, .csv, .json and pareto_{name}.png")


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
    colors = {REFERENCE_BACKEND: "tab:red", "onnxruntime": "tab:blue", "openvino": "tab:green"}
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
            key.append(f"{i + 1:>2} {'*' if on_front else ' '} {r['variant']} ({r['backend']}, {r['size_mb']:.1f} MB)")
        fx, fy = xy[front, 0], xy[front, 1]
        ax.step(fx, fy, where="post", color="black", lw=1.2, ls="--", zorder=2, label="Pareto front")
        for backend, color in colors.items():
            if any(r["backend"] == backend for r in pts):
                ax.scatter([], [], color=color, alpha=0.45, label=backend)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        pad = max(0.02, 0.1 * float(np.ptp(xy[:, 1])))
        ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
    ax.set_xlabel(f"latency per window, median ms ({t} thread{'s' if t > 1 else ''}, log scale)")
    ax.set_ylabel("UA (held-out speakers)")
    ax.set_title(f"{title}\npoint area ~ model size; black edge and * = Pareto front", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.text(0.70, 0.5, "\n".join(key), family="monospace", fontsize=7.5, va="center")
    fig.subplots_adjust(left=0.07, right=0.68, top=0.88, bottom=0.1)
    fig.savefig(path)
    plt.close(fig)


_SHORT = dict(zip(COLUMNS, ("variant", "backend", "prec", "thr", "p50 ms", "p95 ms", "rtf", "RSS MB", "MB",
                            "load ms", "MAC/s", "UA", "WA", "F1", "speedup")))


def _rich_table(bundle, rows) -> Table:
    table = Table(title=f"edge-ser bench {bundle.path}")
    for c in COLUMNS:
        table.add_column(_SHORT[c], justify="left" if c in ("variant", "backend", "precision") else "right")
    for r in rows:
        table.add_row(*(_fmt(r[c]) for c in COLUMNS))
    return table
