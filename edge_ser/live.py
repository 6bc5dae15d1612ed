"""`edge-ser run`: a file, stdin or a microphone through a :class:`~edge_ser.recognizer.Stream`.

Events go out as JSON Lines (stdout or ``--output``); a summary line goes to stderr at the end.
The microphone feeds a bounded queue from sounddevice's callback: when inference falls behind,
blocks are dropped and counted rather than piling up. The loop itself (:func:`run_chunks`) takes
any iterator of chunks, so a generator can stand in for the microphone.
"""
from __future__ import annotations

import os
import queue
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

import numpy as np

from . import audio
from .errors import AudioError, EdgeSerError
from .recognizer import Event, Recognizer, Stream

MIC_BLOCK_S = 0.1     # seconds per microphone block
MIC_QUEUE = 100       # blocks (10 s) buffered before dropping


@dataclass
class Counters:
    """What went wrong without stopping the run."""

    skipped: int = 0      # chunks rejected (NaN/Inf) on live input
    overflow: int = 0     # sounddevice reported input overflow
    dropped: int = 0      # blocks dropped because the queue was full


@dataclass
class Summary:
    segments: int
    audio_s: float
    elapsed_s: float
    counters: Counters

    @property
    def rtf(self) -> float:
        """Real-time factor: processing seconds per audio second."""
        return self.elapsed_s / self.audio_s if self.audio_s else 0.0

    def line(self) -> str:
        c = self.counters
        return (f"edge-ser run: {self.segments} segments, {self.audio_s:.1f} s audio in {self.elapsed_s:.1f} s "
                f"(real-time factor {self.rtf:.3f}), {c.skipped} chunks skipped, {c.overflow} input overflows, "
                f"{c.dropped} blocks dropped")


def run_chunks(stream: Stream, chunks: Iterable[np.ndarray], emit: Callable[[Event], None],
               counters: Counters | None = None, skip_bad: bool = False,
               on_chunk: Callable[[Stream], None] | None = None) -> Summary:
    """Feed every chunk, emit every event, flush at the end (or on Ctrl-C); return a summary.

    With ``skip_bad`` a chunk with NaN/Inf samples is counted and skipped; otherwise it raises.
    """
    counters = counters or Counters()
    segments = 0
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
        pass
    finally:
        if hasattr(chunks, "close"):  # stop a microphone generator now, not at garbage collection
            chunks.close()
    for event in stream.flush():
        emit(event)
        segments += 1
    if on_chunk:
        on_chunk(stream)
    return Summary(segments, stream.position_s, time.perf_counter() - t0, counters)


def _sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as e:
        raise EdgeSerError(f"microphone input needs sounddevice and PortAudio ({e}): pip install "
                           "edge-ser[mic] and install PortAudio (e.g. apt install libportaudio2)") from None
    return sounddevice


def list_input_devices() -> str:
    """The input devices sounddevice sees, one per line with its index."""
    sd = _sounddevice()
    lines = [f"{i}: {d['name']} ({d['max_input_channels']} ch, {d['default_samplerate']:.0f} Hz)"
             for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
    return "\n".join(lines) if lines else "no audio input devices found"


def mic_chunks(device: int | None, sample_rate: int, counters: Counters, block_s: float = MIC_BLOCK_S,
               queue_size: int = MIC_QUEUE) -> Iterator[np.ndarray]:
    """Blocks from a microphone at ``sample_rate`` (resampled if the device cannot do it), until Ctrl-C."""
    sd = _sounddevice()
    blocks: queue.Queue = queue.Queue(maxsize=queue_size)

    def callback(indata, frames, time_info, status):
        if status.input_overflow:
            counters.overflow += 1
        try:
            blocks.put_nowait(indata[:, 0].copy())
        except queue.Full:
            counters.dropped += 1

    def open_stream(rate: int):
        return sd.InputStream(samplerate=rate, channels=1, dtype="float32", device=device,
                              blocksize=round(block_s * rate), callback=callback)

    hint = "; list the devices with `edge-ser run BUNDLE --list-devices` and pick one with --device"
    rate, resampler = sample_rate, None
    try:
        try:
            stream = open_stream(rate)
        except sd.PortAudioError:   # many devices only do 44.1/48 kHz: record natively and resample
            rate = int(sd.query_devices(device, "input")["default_samplerate"])
            stream = open_stream(rate)
            import soxr
            resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32")
    except (sd.PortAudioError, ValueError) as e:
        raise EdgeSerError(f"cannot open audio input device {device if device is not None else '(default)'}: "
                           f"{e}{hint}") from None
    with stream:
        while True:
            try:
                block = blocks.get(timeout=2.0)
            except queue.Empty:
                if not stream.active:
                    raise EdgeSerError(f"the audio input device stopped delivering audio{hint}") from None
                continue
            yield resampler.resample_chunk(block) if resampler else block


class LiveView:
    """A rich live panel: current emotion, probability bars and counters, on stderr."""

    def __init__(self, labels: list[str], counters: Counters):
        from rich.console import Console
        from rich.live import Live

        self.labels, self.counters, self.segments = labels, counters, 0
        # events printed to a terminal go above the view; piped stdout is left alone
        self.live = Live(self._render(None), console=Console(stderr=True), refresh_per_second=8,
                         redirect_stdout=sys.stdout.isatty(), redirect_stderr=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)

    def event(self, _: Event) -> None:
        self.segments += 1

    def update(self, stream: Stream) -> None:
        self.live.update(self._render(stream))

    def _render(self, stream: Stream | None):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        probs = (stream.current if stream else None) or {k: 0.0 for k in self.labels}
        top = max(probs, key=probs.get) if stream and stream.current else "-"
        state = "speech" if stream and stream.in_speech else "silence"
        table = Table(title=f"emotion: {top}   ({state})", show_header=False, box=None)
        for label in self.labels:
            p = probs[label]
            table.add_row(label, "█" * round(30 * p) + "·" * (30 - round(30 * p)), f"{p:.2f}")
        c = self.counters
        position = stream.position_s if stream else 0.0
        return Group(table, Text(f"{position:.1f} s heard, {self.segments} segments, {c.overflow} overflows, "
                                 f"{c.dropped} dropped, {c.skipped} skipped", style="dim"))


def run_cli(bundle: str | os.PathLike, input: str | None = None, mic: bool = False, device: int | None = None,
            list_devices: bool = False, backend: str = "onnxruntime", model: str | None = None,
            threads: int | None = None, window: float | None = None, hop: float | None = None,
            vad: str = "energy", output: str | os.PathLike | None = None, smooth: float = 0.0,
            source: Iterable[np.ndarray] | None = None, live: bool | None = None) -> Summary | None:
    """The `edge-ser run` command: events as JSON Lines, a summary line on stderr.

    ``source`` replaces the microphone with any iterator of chunks (tests, other capture code);
    ``live`` shows the rich view (default: with ``--mic`` when stderr is a terminal).
    """
    if list_devices:
        print(list_input_devices())
        return None
    if (input is None) == (not mic):
        raise EdgeSerError("give exactly one of --input FILE (or - for stdin) and --mic")
    if input not in (None, "-") and not Path(input).is_file():
        raise EdgeSerError(f"{input}: no such audio file; check the path")
    recognizer = Recognizer(bundle, variant=model, backend=backend, threads=threads, window_s=window,
                            hop_s=hop, vad=vad)
    live = mic and sys.stderr.isatty() if live is None else live
    stream = recognizer.stream(partial=bool(live), smooth=smooth)
    counters = Counters()
    sr = recognizer.sample_rate
    if mic:
        chunks = source if source is not None else mic_chunks(device, sr, counters)
    elif input == "-":
        chunks = audio.stream_pcm16(sys.stdin.buffer, sr=sr)
    else:
        chunks = audio.stream_audio(input, sr=sr)
    try:
        out: TextIO | None = open(output, "w") if output else None
    except OSError as e:
        raise EdgeSerError(f"cannot write events to {output}: {e.strerror}; choose another --output") from None
    view = LiveView(recognizer.labels, counters) if live else None

    def emit(event: Event) -> None:
        f = out or sys.stdout  # looked up now: the live view redirects stdout above itself
        f.write(event.to_json() + "\n")
        f.flush()
        if view:
            view.event(event)

    try:
        if view:
            with view:
                summary = run_chunks(stream, chunks, emit, counters, skip_bad=mic, on_chunk=view.update)
        else:
            summary = run_chunks(stream, chunks, emit, counters, skip_bad=mic)
    finally:
        if out:
            out.close()
    print(summary.line(), file=sys.stderr)
    return summary
