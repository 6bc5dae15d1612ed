"""Emotion recognition for a clip (``predict``) or a stream (``stream().feed(chunk)``).

A clip no longer than the window is classified whole; a longer one in overlapping windows whose
probabilities are averaged. A stream goes through a VAD first: each finished speech segment
becomes one :class:`Event`. Streaming gives the same events as whole-array processing of the
same audio, whatever the chunk sizes.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import audio
from .bundle import Bundle
from .engine import open_engine
from .errors import AudioError, EdgeSerError
from .vad import Segment, VadOptions, make_vad

BATCH = 8  # windows per engine call


@dataclass
class Prediction:
    """Emotion of one clip: the top label and every label's probability."""

    label: str
    probs: dict[str, float]


@dataclass
class Event:
    """Emotion of one speech segment (times in seconds from the start of the stream)."""

    start: float
    end: float
    label: str
    probs: dict[str, float]
    latency_ms: float   # from receiving the audio that ended the segment to the event

    def to_json(self) -> str:
        d = asdict(self)
        d.update(start=round(self.start, 3), end=round(self.end, 3), latency_ms=round(self.latency_ms, 2),
                 probs={k: round(v, 4) for k, v in self.probs.items()})
        return json.dumps(d)


def window_spans(n: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Overlapping ``[start, end)`` windows covering ``n`` samples; the last one ends at ``n``."""
    if n <= window:
        return [(0, n)]
    spans = [(s, s + window) for s in range(0, n - window + 1, hop)]
    if spans[-1][1] < n:
        spans.append((n - window, n))
    return spans


class Recognizer:
    """A bundle on an engine, with windowing and a VAD for streams.

    Parameters
    ----------
    bundle : Bundle or path of a bundle directory.
    variant : bundle variant (``fp32``, ``int8``, ...); the bundle's default if None.
    backend : ``onnxruntime`` or ``openvino``.
    threads : inference threads (the backend's default if None).
    window_s, hop_s : windowing of long clips and segments; the bundle's if None.
    vad : ``energy`` or ``webrtc``; ``vad_options`` tunes it.
    """

    def __init__(self, bundle: Bundle | str | os.PathLike, variant: str | None = None,
                 backend: str = "onnxruntime", threads: int | None = None, window_s: float | None = None,
                 hop_s: float | None = None, vad: str = "energy", vad_options: VadOptions | None = None):
        self.engine = open_engine(bundle, variant, backend, threads)
        b = self.bundle = self.engine.bundle
        self.labels = b.labels
        self.sample_rate = b.sample_rate
        self.window_s = float(window_s if window_s is not None else b.window_s)
        self.hop_s = float(hop_s if hop_s is not None else b.hop_s)
        max_s = float(b.manifest["max_input_s"])
        if not b.min_input_s <= self.window_s <= max_s:
            raise EdgeSerError(f"window {self.window_s} s is outside what the model takes "
                               f"({b.min_input_s}..{max_s} s); choose another --window")
        if not 0 < self.hop_s <= self.window_s:
            raise EdgeSerError(f"hop {self.hop_s} s must be above 0 and at most the window "
                               f"({self.window_s} s); choose another --hop")
        self.window = round(self.window_s * self.sample_rate)
        self.hop = round(self.hop_s * self.sample_rate)
        self.min_input = round(b.min_input_s * self.sample_rate)
        self.vad = vad
        self.vad_options = vad_options or VadOptions()
        make_vad(vad, self.vad_options, self.sample_rate)  # fail now on a bad name or missing package

    def classify(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of 16 kHz float32 samples: whole or averaged over windows.

        Audio shorter than the bundle's ``min_input_s`` is repeated (tiled) up to that length.
        """
        if len(x) == 0:
            raise AudioError("no samples to classify; pass at least one sample")
        if len(x) < self.min_input:
            x = np.resize(x, self.min_input)
        spans = window_spans(len(x), self.window, self.hop)
        windows = np.stack([x[s:e] for s, e in spans])
        probs = np.concatenate([self.engine.run(windows[i:i + BATCH]) for i in range(0, len(windows), BATCH)])
        return probs.mean(axis=0)

    def predict(self, waveform: np.ndarray, sample_rate: int = 16000) -> Prediction:
        """Emotion of a clip (``[samples]`` or ``[samples, channels]``, resampled if needed)."""
        x = audio.prepare(np.asarray(waveform), sample_rate, out_sr=self.sample_rate, name="waveform")
        return self._prediction(self.classify(x))

    def stream(self, partial: bool = False, smooth: float = 0.0) -> Stream:
        """A new stream (see :class:`Stream`)."""
        return Stream(self, partial=partial, smooth=smooth)

    def process(self, waveform: np.ndarray, sample_rate: int = 16000) -> list[Event]:
        """Events of a whole array at once: VAD, then one event per speech segment."""
        x = audio.prepare(np.asarray(waveform), sample_rate, out_sr=self.sample_rate, name="waveform")
        stream = self.stream()
        return stream.feed(x) + stream.flush()

    def _prediction(self, p: np.ndarray) -> Prediction:
        return Prediction(self.labels[int(np.argmax(p))], {k: float(v) for k, v in zip(self.labels, p)})


class Stream:
    """Incremental recognition: ``feed(chunk)`` and, at the end, ``flush()`` return finished events.

    Chunks are float (or signed int) samples at the bundle's sample rate, of any length. Only the
    audio of the open segment (at most ``max_speech_s`` plus padding) is kept. With
    ``partial=True`` the open segment's latest window is classified every hop and ``current``
    holds the (exponentially ``smooth``-ed) probabilities for a live view.
    """

    def __init__(self, recognizer: Recognizer, partial: bool = False, smooth: float = 0.0):
        if not 0.0 <= smooth < 1.0:
            raise EdgeSerError(f"smooth must be in [0, 1), not {smooth}")
        self.recognizer = recognizer
        self.sample_rate = recognizer.sample_rate
        self.vad = make_vad(recognizer.vad, recognizer.vad_options, self.sample_rate)
        self.partial = partial
        self.smooth = smooth
        self.current: dict[str, float] | None = None
        self._buffer = np.zeros(0, np.float32)
        self._base = 0          # stream sample index of _buffer[0]
        self._next_partial = 0

    @property
    def position_s(self) -> float:
        """Seconds of audio fed so far."""
        return self.vad.total / self.sample_rate

    @property
    def in_speech(self) -> bool:
        return self.vad.in_speech

    def feed(self, chunk: np.ndarray) -> list[Event]:
        """Add samples; return the events of the segments they finished (often none)."""
        t0 = time.perf_counter()
        x = np.asarray(chunk)
        if x.size == 0:
            return []
        x = audio.prepare(x, self.sample_rate, out_sr=self.sample_rate,
                          name=f"audio chunk at {self.position_s:.2f} s")
        self._buffer = np.concatenate([self._buffer, x])
        events = self._events(self.vad.feed(x), t0)
        if self.partial:
            self._update_partial()
        self._trim()
        return events

    def flush(self) -> list[Event]:
        """End of audio: close the open segment, if any."""
        events = self._events(self.vad.flush(), time.perf_counter())
        self._trim()
        return events

    def _events(self, segments: list[Segment], t0: float) -> list[Event]:
        events = []
        for seg in segments:
            p = self.recognizer.classify(self._buffer[seg.start - self._base:seg.end - self._base])
            self._show(p)
            pred = self.recognizer._prediction(p)
            events.append(Event(seg.start / self.sample_rate, seg.end / self.sample_rate, pred.label,
                                pred.probs, (time.perf_counter() - t0) * 1000.0))
        return events

    def _update_partial(self) -> None:
        start, end = self.vad.open_start, self.vad.total
        r = self.recognizer
        if start is None or end - start < r.min_input or end < self._next_partial:
            return
        self._show(r.classify(self._buffer[max(start, end - r.window) - self._base:end - self._base]))
        self._next_partial = end + r.hop

    def _show(self, p: np.ndarray) -> None:
        if self.current is not None and self.smooth:
            old = np.array([self.current[k] for k in self.recognizer.labels])
            p = self.smooth * old + (1.0 - self.smooth) * p
        self.current = {k: float(v) for k, v in zip(self.recognizer.labels, p)}

    def _trim(self) -> None:
        keep = self.vad.keep_from
        if keep > self._base:
            self._buffer = self._buffer[keep - self._base:].copy()
            self._base = keep
