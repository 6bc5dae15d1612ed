"""`edge-ser run`: one file, stdin or a microphone through a :class:`~edge_ser.recognizer.Stream`, or a folder
or glob of files in batch.

Events go out as JSON Lines (stdout or ``--output``). ``--output`` is written to a hidden temporary file beside
it and renamed into place at the end (also after Ctrl-C, with the events so far); it never replaces a file
without ``--overwrite`` and never writes over an input. Batch mode appends each finished file's lines to
``--output`` in one write, so a rerun skips the files already there (resume).

:func:`process_file` is the per-file unit of batch mode: worker processes (``--jobs``) and a Dask cluster
(:mod:`edge_ser.distributed`) run that same function.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

import numpy as np

from . import audio
from .errors import AudioError, EdgeSerError
from .interrupt import on_termination
from .mic import Counters
from .progress import progress
from .recognizer import Event, Recognizer, Stream
from .vad import VadOptions

log = logging.getLogger(__name__)


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

    def line(self) -> str:
        c = self.counters
        return (f"edge-ser run: {self.segments} segments, {self.audio_s:.1f} s audio in {self.elapsed_s:.1f} s "
                f"(real-time factor {self.rtf:.3f}), {c.skipped} chunks skipped, {c.overflow} input overflows, "
                f"{c.dropped} blocks dropped" + (" (interrupted)" if self.interrupted else ""))


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
                 append: bool = False) -> None:
    """Refuse an ``--output`` that is an input, a bundle file, a folder or device, or an existing file
    (unless ``overwrite``, or ``append`` for batch resume)."""
    target = output.resolve()
    if output.is_dir():
        raise EdgeSerError(f"--output {output} is a folder; give a file path")
    if output.exists() and not output.is_file():
        raise EdgeSerError(f"--output {output} is not a regular file; give a file path")
    for path in inputs:
        if Path(path).resolve() == target:
            raise EdgeSerError(f"--output {output} is also an input; choose another --output")
    if bundle_dir is not None and (target == bundle_dir.resolve() or target.parent == bundle_dir.resolve()):
        raise EdgeSerError(f"--output {output} is inside the bundle {bundle_dir}; choose another --output")
    if output.exists() and not (overwrite or append):
        raise EdgeSerError(f"--output {output} already exists; pass --overwrite to replace it")
    if not os.access(output.parent if str(output.parent) else Path("."), os.W_OK):
        raise EdgeSerError(f"cannot write --output {output}: its folder is not writable")


@contextlib.contextmanager
def atomic_text(path: Path) -> Iterator[TextIO]:
    """A text file that appears at ``path`` only when the block ends (normally or by Ctrl-C/SIGTERM, with what
    was written so far); on an error it is removed and ``path`` is left as it was."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        f = open(tmp, "x")
    except OSError as e:
        raise EdgeSerError(f"cannot write --output {path}: {e.strerror}; choose another --output") from None
    try:
        with f, on_termination(lambda: (f.flush(), os.replace(tmp, path))):
            yield f
        os.replace(tmp, path)
    except (KeyboardInterrupt, SystemExit):
        with contextlib.suppress(OSError):
            os.replace(tmp, path)
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
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise EdgeSerError(f"--input {spec}: the pattern matches no file")
        return files
    raise EdgeSerError(f"--input {spec}: no such audio file or folder; check the path")


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
    vad: str = "energy"
    vad_options: VadOptions = field(default_factory=VadOptions)


@lru_cache(maxsize=2)
def recognizer_for(settings: Settings) -> Recognizer:
    """One recognizer per process and settings (workers build theirs once)."""
    return Recognizer(settings.bundle, variant=settings.variant, backend=settings.backend, threads=settings.threads,
                      window_s=settings.window_s, hop_s=settings.hop_s, vad=settings.vad,
                      vad_options=settings.vad_options)


def file_summary(events: list[Event], labels: list[str], duration_s: float) -> dict:
    """Dominant emotion, share of speech time per emotion, speech seconds, segments."""
    speech = {label: 0.0 for label in labels}
    for e in events:
        speech[e.label] += e.end - e.start
    total = sum(speech.values())
    return {"dominant": max(speech, key=speech.get) if total else None,
            "share": {k: round(v / total, 4) if total else 0.0 for k, v in speech.items()},
            "speech_s": round(total, 3), "segments": len(events), "duration_s": round(duration_s, 3)}


def process_file(path: str | os.PathLike, settings: Settings) -> list[dict]:
    """The JSON Lines records of one file: its events (with ``file``), then one summary record; or one error
    record for a file that cannot be decoded."""
    rec = recognizer_for(settings)
    name = str(path)
    stream = rec.stream()
    events: list[Event] = []
    try:
        for chunk in audio.stream_audio(path, sr=rec.sample_rate):
            events += stream.feed(chunk)
        events += stream.flush()
    except AudioError as e:
        return [{"file": name, "error": str(e), "reason": getattr(e, "reason", "unreadable audio")}]
    return [{"file": name, **e.to_dict()} for e in events] + \
           [{"file": name, "summary": file_summary(events, rec.labels, stream.position_s)}]


def done_files(output: Path) -> set[str]:
    """Files an earlier batch run finished (a summary or error record in ``output``); other lines are ignored."""
    done = set()
    if output.is_file():
        with open(output, encoding="utf-8", errors="replace") as f:
            for line in f:
                with contextlib.suppress(ValueError, RecursionError):
                    record = json.loads(line)
                    if isinstance(record, dict) and isinstance(record.get("file"), str) \
                            and ("summary" in record or "error" in record):
                        done.add(record["file"])
    return done


@contextlib.contextmanager
def appending(output: Path) -> Iterator[TextIO]:
    """``output`` opened to append whole lines (a last line cut short by a crash is ended first)."""
    try:
        f = open(output, "a+", encoding="utf-8")
    except OSError as e:
        raise EdgeSerError(f"cannot write --output {output}: {e.strerror}") from None
    with f:
        if f.tell() > 0:
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":
                f.write("\n")
        yield f


def write_records(results: Iterable[list[dict]], total: int, out: TextIO, counts: Counter, description: str,
                  show_progress: bool) -> None:
    """Write each file's records to ``out`` in one write as it arrives, and count them."""
    for records in progress(results, total=total, description=description, enabled=show_progress):
        write_line(out, "\n".join(json.dumps(r, allow_nan=False) for r in records))
        counts["errors" if "error" in records[-1] else "processed"] += 1
        counts["segments"] += len(records) - 1


def run_batch(files: list[Path], settings: Settings, out: TextIO, jobs: int = 1, skip: set[str] = frozenset(),
              show_progress: bool = True) -> Counter:
    """Process ``files`` (those in ``skip`` excepted) with ``jobs`` worker processes, writing each file's records
    to ``out`` in input order as soon as the file is done; returns counts (files, skipped, errors, segments)."""
    todo = [f for f in files if str(f) not in skip]
    counts = Counter(files=len(files), resumed=len(files) - len(todo))
    recognizer_for(settings)   # fail here, once, on a bad bundle or option
    if jobs == 1 or not todo:
        write_records(map(functools.partial(process_file, settings=settings), todo), len(todo), out, counts, "files",
                      show_progress)
        return counts
    import multiprocessing as mp
    pool = mp.get_context("spawn").Pool(jobs)
    try:
        with on_termination(pool.terminate):   # SIGTERM: no orphaned workers
            write_records(pool.imap(functools.partial(process_file, settings=settings), todo), len(todo), out,
                          counts, "files", show_progress)
    finally:
        pool.terminate()
        pool.join()
    return counts
