"""`edge-ser bench`: latency, memory, size, MACs and accuracy of every bundle variant and of its peers, side by side.

All rows of one thread count are timed in the same loop, round-robin, one window per row per repetition, so a
noisy machine's drift hits every row alike and the ratios stay fair (:mod:`.timing`). Peers (:mod:`.peers`)
are the models a user would otherwise pick (wav2vec2-base in torch, openSMILE eGeMAPS) and, when asked with
``reference``, the torch teacher; they come from the export toolchain's entry points and are skipped, with a
note, where their packages are missing. Every row also gets the peak memory and load time of a fresh process
(:mod:`.probe`), MACs (from the manifest), accuracy on ``data`` and a Raspberry Pi projection (:mod:`.pi`).
Nothing in the bundle's manifest makes the bench load or download anything outside the bundle.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..bundle import Bundle, load_bundle
from ..engine import BACKENDS, backend_for, open_engine
from ..errors import DatasetError, EdgeSerError
from ..progress import bar
from ..targets import choose_variant
from . import report
from .peers import REFERENCE, Peer, Split, available, make_peer
from .pi import projection
from .plot import pareto_plot
from .probe import probe
from .timing import TimingConfig, test_window, time_interleaved

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One thing timed: a bundle variant on a backend, or a peer."""

    name: str
    backend: str
    precision: str
    size_mb: float | None
    macs_per_s: int | None
    peer: Peer | None = None


def run_bench(bundle, data: Path | None = None, threads: list[int] | None = None, backends: list[str] | None = None,
              out: Path = Path("bench-results"), reps: int | None = None, quick: bool = False,
              reference: str | None = None, peers: str = "auto", probe_timeout_s: float = 300.0) -> list[dict]:
    """Benchmark every variant of ``bundle`` and its peers; write bench_<name>.md/.csv/.json and pareto_<name>.png
    under ``out``; return the rows (keys: ``report.COLUMNS``).

    ``data``: labelled audio; the bundle's held-out speakers in it are scored (all of it when none is there).
    ``threads``: thread counts (default 1 and every core). ``backends``: engines (default: those installed).
    ``reference``: a torch teacher to time (e.g. ``whisper-tiny.en``). ``peers``: ``auto``, ``none`` or names.
    """
    start = time.perf_counter()
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    cfg = TimingConfig(reps=reps or (3 if quick else None), warmup=1 if quick else 5, settle=0 if quick else 1,
                       min_reps=3 if quick else 20)
    threads = sorted(set(threads or [1, max(1, os.cpu_count() or 1)]))
    notes: list[str] = []
    rows = _variant_rows(bundle, _backends(backends)) + _peer_rows(bundle, reference, peers, notes)
    split, protocol = _split(bundle, data, notes) if data is not None else (None, "no --data: no accuracy")
    window = test_window(bundle.manifest.input.sample_rate, cfg)
    seconds = {"setup": time.perf_counter() - start}

    timing, reps_used, probes = {}, {}, {}
    for t in threads:
        lap = time.perf_counter()
        runners = {}
        for r in rows:
            if r.peer is None:
                runners[r.name, r.backend] = open_engine(bundle, r.name, r.backend, t).run
            else:
                r.peer.set_threads(t)
                runners[r.name, r.backend] = r.peer.run
        with bar(None, f"timing {len(rows)} rows, {t} thread(s)") as advance:
            got, reps_used[t] = time_interleaved(runners, window, cfg, lambda done, total: advance())
        timing.update({(*k, t): v for k, v in got.items()})
        seconds[f"latency, {t} thread(s)"] = time.perf_counter() - lap
    lap = time.perf_counter()
    with bar(len(rows) * len(threads), "fresh-process memory and load time") as advance:
        for r in rows:
            for t in threads:
                spec = {"bundle": str(Path(bundle.path).resolve()), "threads": t, "samples": window.shape[1]}
                spec.update({"peer": r.peer.entry_point, "options": r.peer.options} if r.peer else
                            {"variant": r.name, "backend": r.backend})
                try:
                    probes[r.name, r.backend, t] = probe(spec, probe_timeout_s)
                except EdgeSerError as e:
                    notes.append(f"no memory/load figures for {r.name} on {r.backend}, {t} thread(s): {e}")
                advance()
    seconds["fresh processes"] = time.perf_counter() - lap
    lap = time.perf_counter()
    accuracy = _accuracy(bundle, rows, split, max(threads), notes) if split is not None else {}
    seconds["accuracy"] = time.perf_counter() - lap

    table = _rows(rows, threads, timing, probes, accuracy, cfg)
    notes += _standing_notes(bundle, rows, table, cfg, reps_used)
    seconds["total"] = time.perf_counter() - start
    notes.append("bench took " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ".")
    name = Path(bundle.path).resolve().name
    out = Path(out)
    config = {**asdict(cfg), "threads": threads, "reps_used": reps_used, "peers": [r.name for r in rows if r.peer]}
    report.write(out, name, table, projection(table, cfg.window_s), notes, config, protocol)
    try:
        pareto_plot(table, out / f"pareto_{name}.png", title=f"edge-ser bench: {name}")
    except ImportError:
        log.warning("no Pareto plot: matplotlib is not installed (pip install edge-ser[plot])")
    log.info("wrote %s/bench_%s.md, .csv, .json and pareto_%s.png", out, name, name)
    return table


# ----------------------------------------------------------------------------------------------- rows
def _backends(backends: list[str] | None) -> list[str]:
    installed = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
    if not backends:
        return installed
    missing = [b for b in backends if b not in installed]
    if missing:
        raise EdgeSerError(f"backend(s) {', '.join(missing)} not installed (pip install edge-ser[openvino]); "
                           f"installed: {', '.join(installed) or 'none'}")
    return list(dict.fromkeys(backends))


def _variant_rows(bundle: Bundle, backends: list[str]) -> list[Row]:
    """ONNX variants on every backend, OpenVINO IR variants on openvino only, in manifest order."""
    m = bundle.manifest
    rows = []
    for name, v in bundle.variants.items():
        encoder = m.teacher if v.model == "teacher" else m.student   # bundles from before Variant.macs_per_s
        macs = v.macs_per_s or (encoder.macs_per_s if encoder else None)
        for b in backends:
            if backend_for(v, None) == "openvino" and b != "openvino":
                continue
            rows.append(Row(name, b, v.precision, bundle.size_mb(name), macs))
    if not rows:
        raise EdgeSerError(f"no variant of {bundle.path} runs on {', '.join(backends)}; IR variants need openvino")
    return rows


def _peer_rows(bundle: Bundle, reference: str | None, peers: str, notes: list[str]) -> list[Row]:
    names = [] if peers == "none" else available() if peers == "auto" else [p.strip() for p in peers.split(",")]
    wanted = [(REFERENCE, {"teacher": reference})] if reference else []
    wanted += [(n, {}) for n in names if n]
    rows = []
    for name, options in wanted:
        try:
            peer = make_peer(name, bundle, **options)
        except ImportError as e:
            notes.append(f"peer {name} skipped: {e.name or e} is not installed (pip install edge-ser[export])")
            continue
        except EdgeSerError:
            raise   # an unknown peer name: the user's to fix
        except Exception as e:   # a third-party plugin's own bug: a note, never a traceback
            notes.append(f"peer {name} skipped: its plugin failed ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0][:200]})")
            log.warning("%s", notes[-1])
            continue
        rows.append(Row(peer.name, peer.backend, peer.precision, peer.size_mb, peer.macs_per_s, peer))
        if peer.note:
            notes.append(f"{peer.name}: {peer.note}")
    return rows


# ----------------------------------------------------------------------------------------------- accuracy
def _split(bundle: Bundle, data: Path, notes: list[str]) -> tuple[Split, str]:
    """Test clips: the bundle's held-out speakers found in ``data`` (else all of it); training clips: the rest."""
    from ..data import load_corpus, load_waveforms

    corpus = load_corpus(Path(data), known_labels=bundle.labels)
    waves, corpus = load_waveforms(corpus)
    if not waves:
        raise DatasetError(f"{data}: none of the clips could be scored ({corpus.skip_summary()})")
    held = set(bundle.manifest.data.test_speakers) if bundle.manifest.data else set()
    is_test = np.array([it.speaker in held for it in corpus.items])
    if is_test.any():
        protocol = (f"the bundle's held-out speakers {', '.join(sorted(held & set(corpus.speakers)))} of {data} "
                    f"({int(is_test.sum())} clips); peers that need training are fit on its other speakers")
    else:
        is_test[:] = True
        protocol = f"every clip of {data} ({len(waves)}); none of its speakers is a held-out speaker of the bundle"
    notes.append(f"accuracy data: {corpus.skip_summary()}")
    pick = lambda mask: [i for i, m in enumerate(mask) if m]  # noqa: E731
    test, train = pick(is_test), pick(~is_test)
    return Split([waves[i] for i in train], [corpus.items[i].label for i in train],
                 [corpus.items[i].speaker for i in train], [waves[i] for i in test],
                 [corpus.items[i].label for i in test], bundle.labels, heldout=bool(train),
                 test_speakers=sorted({corpus.items[i].speaker for i in test})), protocol


def _accuracy(bundle: Bundle, rows: list[Row], split: Split, threads: int, notes: list[str]) -> dict:
    """Scores per (row, backend). The bundle's variants are scored on ``split.test`` only if the shipped files never
    learned from those speakers; otherwise (its own corpus: the shipped model was refit on every speaker) the
    export-time metrics of the same recipe on those held-out speakers are reported instead."""
    from ..evaluate import evaluate_waves

    result = {}
    if split.heldout and bundle.trained_speakers & set(split.test_speakers):
        notes.append("variants' accuracy: the export-time evaluation (the same recipe fit without the held-out "
                     "speakers); the shipped files were refit on every speaker, so scoring them on these clips "
                     "again would be optimistic")
        return {(r.name, r.backend): vars(bundle.variants[r.name].metrics) for r in rows
                if r.peer is None and bundle.variants[r.name].metrics} | _peer_accuracy(rows, split, notes)
    for backend in dict.fromkeys(r.backend for r in rows if r.peer is None):
        names = [r.name for r in rows if r.peer is None and r.backend == backend]
        scored = evaluate_waves(bundle, split.test, split.test_labels, variants=names, backend=backend,
                                threads=threads)["variants"]
        result.update({(name, backend): m for name, m in scored.items()})
    return result | _peer_accuracy(rows, split, notes)


def _peer_accuracy(rows: list[Row], split: Split, notes: list[str]) -> dict:
    result = {}
    for r in rows:
        if r.peer is not None and r.peer.accuracy is not None:
            try:
                result[r.name, r.backend] = r.peer.accuracy(split)
            except EdgeSerError as e:
                notes.append(f"no accuracy for {r.name}: {e}")
    return result


# ----------------------------------------------------------------------------------------------- table
def _round(x, digits):
    return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else round(float(x), digits)


def _rows(rows: list[Row], threads: list[int], timing: dict, probes: dict, accuracy: dict,
          cfg: TimingConfig) -> list[dict]:
    baseline = next((r for r in rows if r.peer is not None), None)
    table = []
    for t in threads:
        base = float(np.median(timing[baseline.name, baseline.backend, t])) if baseline else None
        for r in rows:
            lat = timing[r.name, r.backend, t]
            p50 = float(np.median(lat))
            pr = probes.get((r.name, r.backend, t), {})
            acc = accuracy.get((r.name, r.backend), {})
            table.append({
                "variant": r.name, "backend": r.backend, "precision": r.precision, "threads": t,
                "latency_ms_p50": _round(p50, 3), "latency_ms_p95": _round(np.percentile(lat, 95), 3),
                "rtf": _round(p50 / 1e3 / cfg.window_s, 6), "peak_rss_mb": _round(pr.get("peak_rss_mb"), 1),
                "size_mb": _round(r.size_mb, 3), "load_ms": _round(pr.get("load_ms"), 1), "macs_per_s": r.macs_per_s,
                "ua": _round(acc.get("ua"), 4), "wa": _round(acc.get("wa"), 4), "f1": _round(acc.get("f1"), 4),
                "speedup": _round(base / p50, 3) if base else None})
    return table


def _standing_notes(bundle: Bundle, rows: list[Row], table: list[dict], cfg: TimingConfig,
                    reps_used: dict) -> list[str]:
    reps = ", ".join(f"{r} repetitions at {t} thread(s)" for t, r in reps_used.items())
    notes = [f"latency: one {cfg.window_s:g} s window per call, after {cfg.warmup} warm-up call(s), {cfg.settle} "
             f"untimed settling call(s) on each switch of row, {reps}; all rows of a thread count timed round-robin "
             "in one loop; rtf = p50 / window length.",
             "peak_rss_mb: peak resident memory (VmHWM) of a fresh Python process that loads the row and runs one "
             "window (interpreter, numpy and the engine included); load_ms: that process's load and compile.",
             "size_mb: the variant's model files (for peers: their parameters); MACs per second of audio from the "
             "manifest (counted on the fp32 graph at export; int8 variants do the same MACs)."]
    baseline = next((r for r in rows if r.peer is not None), None)
    if baseline:
        notes.append(f"speedup: latency of {baseline.name} ({baseline.backend}) / the row's, same thread count.")
    try:
        auto = choose_variant(bundle)
    except EdgeSerError:
        return notes
    one = {(r["variant"], r["backend"]): r["latency_ms_p50"] for r in table if r["threads"] == min(reps_used)}
    mine = next((ms for (v, b), ms in one.items() if v == auto.name), None)
    for r in rows:
        if r.peer is not None and mine:
            notes.append(f"the variant `auto` picks here ({auto.name}) is {one[r.name, r.backend] / mine:.1f}x faster "
                         f"than {r.name} at {min(reps_used)} thread(s)")
    return notes
