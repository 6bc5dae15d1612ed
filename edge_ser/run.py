"""`edge-ser run`: one file, stdin or a microphone through a :class:`~edge_ser.recognizer.Stream`, or a folder
or glob of files in batch.

Events go out as JSON Lines (stdout or ``--output``). ``--output`` is written to a hidden temporary file beside
it and renamed into place at the end (also after Ctrl-C, with the events so far); it never replaces a file
without ``--overwrite`` and never writes over an input. Batch mode appends each finished file's lines to
``--output`` in one write, so a rerun skips the files already there (resume); it appends only to edge-ser's
own JSON Lines made by the same bundle and variant (every record names them), and first drops the lines of a
file that a crash left unfinished.

Every record but an error carries ``bundle`` (:attr:`edge_ser.bundle.Bundle.id`) and ``variant``. A file in which
the VAD found no speech gets a ``no_speech`` record, unless it is short (at most ``FALLBACK_MAX_S``) and its level
rises and falls as speech does (:func:`edge_ser.vad.varies_like_speech`): then the clip, trimmed, is classified
whole as one event marked ``"vad_fallback": true``.

:func:`process_file` is the per-file unit of batch mode: worker processes (``--jobs``) and a Dask cluster
(:mod:`edge_ser.distributed`) run that same function.
"""
from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import json
import logging
import os
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, TextIO

import numpy as np

from . import audio
from .errors import AudioError, EdgeSerError
from .interrupt import on_termination, signals_held, temporary_folder
from .mic import Counters
from .progress import progress
from .recognizer import Event, Recognizer, Stream
from .vad import DEFAULT_VAD, VadOptions, varies_like_speech

if TYPE_CHECKING:
    from .fusion import TextOptions

log = logging.getLogger(__name__)
FALLBACK_MAX_S = 10.0   # a file (or stdin) at most this long with no speech segment may be classified whole
MAX_RECORD_BYTES = 1 << 20   # resume: a longer line in --output is not one of our records
MAX_GLOB_DIRS = 100_000      # --input GLOB: folders visited at most


@dataclass
class Summary:
    segments: int
    audio_s: float
    elapsed_s: float
    counters: Counters
    interrupted: bool = False

    @property
    def rtf(self) -> float:
        """Real-time factor: processing seconds per audio second."""
        return self.elapsed_s / self.audio_s if self.audio_s else 0.0

    def line(self, microphone: bool = False, stopped: str = "interrupted") -> str:
        """One line for stderr; the microphone's counters only for a microphone; ``stopped`` says why it ended
        early (when it did)."""
        c = self.counters
        return (f"edge-ser run: {self.segments} segments" + (" (no speech found)" if not self.segments else "") +
                f", {self.audio_s:.3f} s audio in {self.elapsed_s:.3f} s (real-time factor {self.rtf:.3f})" +
                (f", {c.skipped} chunks skipped, {c.overflow} input overflows, {c.dropped} blocks dropped"
                 if microphone else "") + (f" ({stopped})" if self.interrupted else ""))


def run_chunks(stream: Stream, chunks: Iterable[np.ndarray], emit: Callable[[Event], None],
               counters: Counters | None = None, skip_bad: bool = False,
               on_chunk: Callable[[Stream], None] | None = None) -> Summary:
    """Feed every chunk, emit every event, flush at the end (or on Ctrl-C); return a summary.

    With ``skip_bad`` a chunk with NaN/Inf samples is counted and skipped; otherwise it raises.
    """
    counters = counters or Counters()
    segments, interrupted = 0, False
    t0 = time.perf_counter()
    try:
        for chunk in chunks:
            try:
                events = stream.feed(chunk)
            except AudioError:
                if not skip_bad:
                    raise
                counters.skipped += 1
                continue
            for event in events:
                emit(event)
            segments += len(events)
            if on_chunk:
                on_chunk(stream)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if hasattr(chunks, "close"):  # stop a microphone generator now, not at garbage collection
            chunks.close()
    for event in stream.flush():
        emit(event)
        segments += 1
    if on_chunk:
        on_chunk(stream)
    return Summary(segments, stream.position_s, time.perf_counter() - t0, counters, interrupted)


# --------------------------------------------------------------------------------------------- output
def check_output(output: Path, inputs: Iterable[Path], bundle_dir: Path | None, overwrite: bool,
                 append: bool = False, option: str = "--output") -> None:
    """Refuse an ``--output`` (or ``option``) that is an input, a bundle file, a folder or device, or an existing
    file or symbolic link (unless ``overwrite``, or ``append`` for batch resume: see :func:`read_earlier`)."""
    target = output.resolve()
    if output.is_dir():
        raise EdgeSerError(f"{option} {output} is a folder; give a file path")
    if output.exists() and not output.is_file():
        raise EdgeSerError(f"{option} {output} is not a regular file; give a file path")
    for path in inputs:
        if Path(path).resolve() == target:
            raise EdgeSerError(f"{option} {output} is also an input; choose another {option}")
    if bundle_dir is not None and (target == bundle_dir.resolve() or target.parent == bundle_dir.resolve()):
        raise EdgeSerError(f"{option} {output} is inside the bundle {bundle_dir}; choose another {option}")
    if os.path.lexists(output) and not (overwrite or append):
        raise EdgeSerError(f"{option} {output} already exists; pass --overwrite to replace it")
    if not os.access(output.parent if str(output.parent) else Path("."), os.W_OK):
        raise EdgeSerError(f"cannot write {option} {output}: its folder is not writable")


@contextlib.contextmanager
def atomic_file(path: Path, option: str = "--output", binary: bool = False, keep_partial: bool = True) -> Iterator:
    """A file that appears at ``path`` only when the block ends, written beside it and renamed onto it (never
    through a symbolic link); on an error it is removed and ``path`` is left as it was. Ctrl-C or SIGTERM rename what
    was written so far into place with ``keep_partial`` (events), else remove it (a picture)."""
    # a fresh name per call: one that a killed process with the same PID left behind is no obstacle
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        f = open(tmp, "xb" if binary else "x")
    except OSError as e:
        raise EdgeSerError(f"cannot write {option} {path}: {e.strerror}; choose another {option}") from None

    def stopped():
        if keep_partial:
            f.flush()
            os.replace(tmp, path)
        else:
            tmp.unlink()
    try:
        with f, on_termination(stopped):
            yield f
        os.replace(tmp, path)
    except (KeyboardInterrupt, SystemExit):
        with contextlib.suppress(OSError):
            os.replace(tmp, path) if keep_partial else tmp.unlink()
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_line(f: TextIO, text: str) -> None:
    try:
        f.write(text + "\n")
        f.flush()
    except BrokenPipeError:
        raise   # the reader went away (`| head`): the CLI exits quietly
    except OSError as e:
        raise EdgeSerError(f"cannot write events: {e.strerror}") from None


# --------------------------------------------------------------------------------------------- inputs
def stdin_chunks(sample_rate: int) -> Iterator[np.ndarray]:
    if sys.stdin is None or getattr(sys.stdin, "closed", False):
        raise EdgeSerError("--input - reads audio from stdin, but stdin is closed; pipe audio in")
    return audio.stream_stdin(sys.stdin.buffer, raw_sr=sample_rate, out_sr=sample_rate)


def list_inputs(spec: str) -> list[Path]:
    """The audio files of ``--input``: a file, every audio file under a folder (hidden ones skipped), or a glob."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in audio.AUDIO_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise EdgeSerError(f"--input {spec}: no audio files ({', '.join(audio.AUDIO_SUFFIXES)}) in this folder")
        return files
    if glob.has_magic(spec):
        files = expand_glob(spec)
        if not files:
            raise EdgeSerError(f"--input {spec}: the pattern matches no file")
        return files
    raise EdgeSerError(f"--input {spec}: no such audio file or folder; check the path")


def expand_glob(pattern: str) -> list[Path]:
    """The files ``pattern`` matches, as :func:`glob.glob` with ``recursive=True`` finds them (``**``: any folders;
    ``*`` skips hidden names), but each real folder is visited once: a symbolic link back into a folder already
    seen is not followed, so link loops end. At most ``MAX_GLOB_DIRS`` folders are visited."""
    parts = pattern.split(os.sep)
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    head, pats = parts[:first], parts[first:]
    root = (os.sep.join(head) or os.sep) if head else os.curdir
    max_depth = None if "**" in pats else len(pats) - 1
    try:
        st = os.stat(root)
    except OSError:
        return []
    visited, found = {(st.st_dev, st.st_ino)}, []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel = os.path.relpath(dirpath, root)
        names = () if rel == os.curdir else tuple(rel.split(os.sep))
        found += [os.path.join(dirpath, f) if head else os.path.join(*names, f) for f in filenames
                  if _glob_match((*names, f), pats) and os.path.isfile(os.path.join(dirpath, f))]
        keep = []
        for d in dirnames if max_depth is None or len(names) < max_depth else []:
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(dirpath, d))
                if (st.st_dev, st.st_ino) not in visited:
                    visited.add((st.st_dev, st.st_ino))
                    keep.append(d)
        if len(visited) > MAX_GLOB_DIRS:
            raise EdgeSerError(f"--input {pattern}: the pattern reaches over {MAX_GLOB_DIRS} folders; give a narrower "
                               "pattern or a folder")
        dirnames[:] = keep
    return sorted(map(Path, found))


def _glob_match(names: tuple[str, ...], pats: list[str]) -> bool:
    """Whether path components ``names`` match pattern components ``pats`` (``**`` = zero or more folders)."""
    if not pats:
        return not names
    if pats[0] == "**":
        return _glob_match(names, pats[1:]) or (bool(names) and not names[0].startswith(".")
                                                and _glob_match(names[1:], pats))
    return (bool(names) and fnmatch.fnmatchcase(names[0], pats[0])
            and (pats[0].startswith(".") or not names[0].startswith(".")) and _glob_match(names[1:], pats[1:]))


# --------------------------------------------------------------------------------------------- batch
@dataclass(frozen=True)
class Settings:
    """What a worker needs to build its recognizer (picklable)."""

    bundle: str
    variant: str | None = "auto"
    backend: str | None = None
    threads: int | None = None
    window_s: float | None = None
    hop_s: float | None = None
    vad: str = DEFAULT_VAD
    vad_options: VadOptions = field(default_factory=VadOptions)
    prefer: str = "balanced"
    text: TextOptions | None = None   # the text path (--text), or None


@lru_cache(maxsize=2)
def recognizer_for(settings: Settings) -> Recognizer:
    """One recognizer per process and settings (workers build theirs once)."""
    return Recognizer(settings.bundle, variant=settings.variant, backend=settings.backend, threads=settings.threads,
                      window_s=settings.window_s, hop_s=settings.hop_s, vad=settings.vad,
                      vad_options=settings.vad_options, prefer=settings.prefer, text=settings.text or False)


def file_summary(events: list[Event], labels: list[str], duration_s: float) -> dict:
    """Dominant emotion, share of speech time per emotion, speech seconds, segments."""
    speech = {label: 0.0 for label in labels}
    for e in events:
        speech[e.label] += e.end - e.start
    total = sum(speech.values())
    return {"dominant": max(speech, key=speech.get) if total else None,
            "share": {k: round(v / total, 4) if total else 0.0 for k, v in speech.items()},
            "speech_s": round(total, 3), "segments": len(events), "duration_s": round(duration_s, 3)}


class ShortClip:
    """Chunks passed through, their samples kept while they total at most ``limit`` (for :func:`whole_clip_event`)."""

    def __init__(self, chunks: Iterable[np.ndarray], limit: int):
        self.chunks, self.limit, self.parts, self.n = chunks, limit, [], 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for chunk in self.chunks:
            self.n += len(chunk)
            if self.n <= self.limit:
                self.parts.append(chunk)
            elif self.parts:
                self.parts = []
            yield chunk

    def samples(self) -> np.ndarray | None:
        """All the samples, or None when there were more than ``limit``."""
        return np.concatenate(self.parts) if self.parts and self.n <= self.limit else None


def short_clip(chunks: Iterable[np.ndarray], recognizer: Recognizer) -> ShortClip:
    return ShortClip(chunks, round(FALLBACK_MAX_S * recognizer.sample_rate))


def whole_clip_event(recognizer: Recognizer, x: np.ndarray | None) -> Event | None:
    """The event of a short clip in which the VAD found no speech segment: the clip without its leading and
    trailing silence (:func:`edge_ser.audio.trim_bounds`) classified whole, as ``edge-ser eval`` scores a clip;
    None when ``x`` is None (too long) or does not vary as speech does (silence, hum, steady noise)."""
    sr = recognizer.sample_rate
    if x is None or not 0 < len(x) <= FALLBACK_MAX_S * sr or not varies_like_speech(x, sr, recognizer.vad_options):
        return None
    t0 = time.perf_counter()
    start, end = audio.trim_bounds(x, sr=sr)
    pred = recognizer.prediction(recognizer.classify(x[start:end]))
    event = recognizer.annotate(Event(start / sr, end / sr, pred.label, pred.probs, 0.0, unsure=pred.unsure),
                                x[start:end])
    event.latency_ms = (time.perf_counter() - t0) * 1000.0
    return event


def stamp(record: dict, recognizer: Recognizer) -> dict:
    """``record`` with the ``bundle`` (its id) and ``variant`` that made it."""
    return {**record, "bundle": recognizer.bundle.id, "variant": recognizer.variant}


def event_record(event: Event, recognizer: Recognizer, fallback: bool = False, **file) -> dict:
    """The record of an event (``file=NAME`` in batch mode); ``fallback``: it came from :func:`whole_clip_event`."""
    return stamp({**file, **event.to_dict(), **({"vad_fallback": True} if fallback else {})}, recognizer)


def no_speech_record(recognizer: Recognizer, duration_s: float, **file) -> dict:
    return stamp({**file, "no_speech": True, "duration_s": round(duration_s, 3)}, recognizer)


def process_file(path: str | os.PathLike, settings: Settings) -> list[dict]:
    """The JSON Lines records of one file: its events (with ``file``), or its ``no_speech`` record, then one
    summary record; or one error record for a file that cannot be decoded."""
    rec = recognizer_for(settings)
    name = str(path)
    stream = rec.stream(rec.sample_rate)
    events: list[Event] = []
    try:
        clip = short_clip(audio.stream_audio(path, sr=rec.sample_rate), rec)
        for chunk in clip:
            events += stream.feed(chunk)
        events += stream.flush()
    except AudioError as e:
        return [{"file": name, "error": str(e), "reason": getattr(e, "reason", "unreadable audio")}]
    records = [event_record(e, rec, file=name) for e in events]
    if not events:
        fallback = whole_clip_event(rec, clip.samples())
        events = [fallback] if fallback else []
        records = [event_record(fallback, rec, True, file=name) if fallback else
                   no_speech_record(rec, stream.position_s, file=name)]
    return records + [stamp({"file": name, "summary": file_summary(events, rec.labels, stream.position_s)}, rec)]


def file_key(path: str | os.PathLike) -> str:
    """The resolved path a file is known by when resuming (``a.wav`` and ``./x/../a.wav`` are one file)."""
    return os.path.realpath(path)


def record_kind(record) -> str | None:
    """``label`` (an event), ``no_speech``, ``summary`` or ``error`` for a batch record; None for anything else."""
    if not isinstance(record, dict) or not isinstance(record.get("file"), str):
        return None
    kinds = [k for k in ("label", "no_speech", "summary", "error") if k in record]
    return kinds[0] if len(kinds) == 1 else None


@dataclass
class Earlier:
    """What an earlier batch run left in ``--output``."""

    path: Path
    done: set[str] = field(default_factory=set)    # file_key of every file it finished (summary or error record)
    made_by: set[tuple[str, str]] = field(default_factory=set)   # (bundle, variant) of its records
    text: set[bool] = field(default_factory=set)   # whether its events came with --text (they have audio_probs)
    keep: int = 0    # bytes up to the end of the last finished file; what follows a crash left unfinished

    def check(self, recognizer: Recognizer) -> None:
        """Refuse to add this run's records to those of another bundle or variant, or made with(out) --text."""
        ours = (recognizer.bundle.id, recognizer.variant)
        other = next(iter(sorted(self.made_by - {ours})), None)
        if other is not None:
            raise EdgeSerError(f"--output {self.path} holds records of bundle {other[0]} variant {other[1]}, not "
                               f"of this run's bundle {ours[0]} variant {ours[1]}; pass --overwrite to replace it "
                               "or choose another --output")
        text = recognizer.text is not None
        if self.text - {text}:
            raise EdgeSerError(f"--output {self.path} holds events made {'without' if text else 'with'} --text; run "
                               f"{'without' if text else 'with'} it to resume, or pass --overwrite to replace "
                               "it or choose another --output")


def read_earlier(output: Path) -> Earlier:
    """Read an existing ``--output`` to resume from; refuse (one error) a file that is not edge-ser's batch JSON
    Lines with a bundle and variant in every record but errors. A last line cut short by a crash is not counted."""
    earlier, offset = Earlier(output), 0

    def refuse(why: str) -> EdgeSerError:
        return EdgeSerError(f"--output {output} exists and is not edge-ser's batch JSON Lines ({why}); pass "
                            "--overwrite to replace it or choose another --output")
    try:
        f = open(output, "rb")
    except OSError as e:
        raise EdgeSerError(f"cannot read --output {output}: {e.strerror}") from None
    with f:
        for number, line in enumerate(iter(lambda: f.readline(MAX_RECORD_BYTES + 1), b""), 1):
            if not line.endswith(b"\n"):
                if len(line) <= MAX_RECORD_BYTES and line[:9] == b'{"file": '[:len(line)]:
                    break   # the last line, cut short by a crash: dropped when appending
                raise refuse(f"line {number} is not a whole record")
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                raise refuse(f"line {number} is not JSON") from None
            kind = record_kind(record)
            if kind is None:
                raise refuse(f"line {number} is not an edge-ser record")
            if kind != "error":
                if not isinstance(record.get("bundle"), str) or not isinstance(record.get("variant"), str):
                    raise refuse(f"line {number} does not say which bundle and variant made it")
                earlier.made_by.add((record["bundle"], record["variant"]))
            if kind == "label":
                earlier.text.add("audio_probs" in record)
            offset += len(line)
            if kind in ("summary", "error"):
                earlier.done.add(file_key(record["file"]))
                earlier.keep = offset
    return earlier


@contextlib.contextmanager
def appending(output: Path, keep: int) -> Iterator[TextIO]:
    """``output`` opened to append, cut back to its first ``keep`` bytes (the lines of files an earlier run
    finished: :func:`read_earlier`), so a crash's unfinished lines go and the file stays valid JSON Lines."""
    try:
        f = open(output, "a", encoding="utf-8")
    except OSError as e:
        raise EdgeSerError(f"cannot write --output {output}: {e.strerror}") from None
    with f:
        if os.fstat(f.fileno()).st_size > keep:
            f.truncate(keep)
        yield f


def write_records(results: Iterable[list[dict]], total: int, out: TextIO, counts: Counter, description: str,
                  show_progress: bool) -> None:
    """Write each file's records to ``out`` in one write as it arrives, and count them."""
    for records in progress(results, total=total, description=description, enabled=show_progress):
        with signals_held():   # a stop between the write and the count would report one file less
            write_line(out, "\n".join(json.dumps(r, allow_nan=False) for r in records))
            counts["errors" if "error" in records[-1] else "processed"] += 1
            counts["segments"] += sum("label" in r for r in records)
            counts["no_speech"] += any("no_speech" in r for r in records)
            counts["vad_fallback"] += any(r.get("vad_fallback") for r in records)


@contextlib.contextmanager
def interruptible(counts: Counter) -> Iterator[None]:
    """Ctrl-C ends the block quietly, counted as ``interrupted``."""
    try:
        yield
    except KeyboardInterrupt:
        counts["interrupted"] += 1


def ignore_ctrl_c() -> None:
    """A worker process's initializer: Ctrl-C (sent to the whole process group) is the parent's to handle."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_batch(files: list[Path], settings: Settings, out: TextIO, jobs: int = 1, skip: set[str] = frozenset(),
              show_progress: bool = True) -> Counter:
    """Process ``files`` (those whose :func:`file_key` is in ``skip`` excepted) with ``jobs`` worker processes,
    writing each file's records to ``out`` in input order as soon as the file is done; returns counts (files,
    resumed, processed, errors, segments, no_speech, vad_fallback, and interrupted after Ctrl-C, which stops
    the run with the files finished so far written)."""
    todo = [f for f in files if file_key(f) not in skip]
    counts = Counter(files=len(files), resumed=len(files) - len(todo))
    recognizer_for(settings)   # fail here, once, on a bad bundle or option
    if jobs == 1 or not todo:
        with interruptible(counts):
            write_records(map(functools.partial(process_file, settings=settings), todo), len(todo), out, counts,
                          "files", show_progress)
        return counts
    with temporary_folder("edge-ser-start-") as empty:
        pool = start_pool(jobs, empty)
        try:
            with on_termination(pool.terminate), interruptible(counts):   # SIGTERM: no orphaned workers
                write_records(pool.imap(functools.partial(process_file, settings=settings), todo), len(todo), out,
                              counts, "files", show_progress)
        finally:
            pool.terminate()
            pool.join()
    return counts


def start_pool(jobs: int, empty: str):
    """``jobs`` spawned worker processes that import nothing from the working directory.

    A spawned Python starts with ``-c``, which puts the working directory first on ``sys.path``: a
    ``multiprocessing.py`` or ``numpy.py`` there (``cd /archive && edge-ser run --input . --jobs 4`` over untrusted
    files) would run in every worker (``-P``/``PYTHONSAFEPATH`` exist only from Python 3.11). So the workers are
    started from the ``empty`` folder, which must outlive the pool, and move to the working directory (for
    relative paths) only once they have imported multiprocessing and edge_ser. This changes the process's
    working directory while the workers start.
    """
    import multiprocessing as mp
    import signal
    cwd = os.getcwd()
    os.chdir(empty)
    # the workers start with Ctrl-C ignored (a Python started so keeps it ignored), else one sent to the process
    # group before their initializer runs prints a worker's traceback
    ctrl_c = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return mp.get_context("spawn").Pool(jobs, initializer=start_worker, initargs=(cwd,))
    finally:
        os.chdir(cwd)
        signal.signal(signal.SIGINT, ctrl_c)


def start_worker(cwd: str) -> None:
    """A worker process's initializer: back to the parent's working directory; Ctrl-C is the parent's."""
    os.chdir(cwd)
    ignore_ctrl_c()
