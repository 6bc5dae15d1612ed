"""Emotion recognition for a clip (``Recognizer.predict``) or a stream (``Recognizer.stream(rate).feed(chunk)``).

The :class:`Recognizer` is stateless once built (a bundle on an engine, windowing, VAD settings), so one
recognizer serves any number of streams, also from several threads; all streaming state (VAD, buffered audio,
the live view's probabilities) lives in the :class:`Stream` it creates (sherpa-onnx's recognizer / stream).

A clip no longer than the window is classified whole; a longer one in overlapping windows whose
probabilities are averaged. A stream goes through a VAD first: each finished speech segment becomes one
:class:`Event`. Streaming gives the same events as whole-array processing, whatever the chunk sizes.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import soxr

from . import audio
from .bundle import Bundle, load_bundle, ready_model_path
from .engine import open_engine
from .errors import AudioError, EdgeSerError
from .vad import DEFAULT_VAD, Segment, Vad, VadOptions, check_vad

BATCH = 8           # windows per engine call (only these are ever stacked: memory stays bounded)
MIN_HOP_S = 0.01    # at most 100 windows per second of audio


@dataclass
class Prediction:
    """Emotion of one clip: the top label, every label's probability, and whether the model is unsure (its top
    probability is below the head's ``unsure_below``, see ``edge-ser info``)."""

    label: str
    probs: dict[str, float]
    unsure: bool = False
    # the text path (Recognizer(text=...)): see edge_ser.fusion; None when it does not apply
    text: str | None = None
    language: str | None = None
    text_probs: dict[str, float] | None = None
    audio_probs: dict[str, float] | None = None

    @classmethod
    def of(cls, labels: list[str], p: np.ndarray, unsure_below: float = 0.0) -> Prediction:
        return cls(labels[int(np.argmax(p))], {k: float(v) for k, v in zip(labels, p)}, bool(p.max() < unsure_below))


@dataclass
class Event:
    """Emotion of one speech segment (times in seconds from the start of the stream)."""

    start: float
    end: float
    label: str
    probs: dict[str, float]
    latency_ms: float   # from receiving the audio that ended the segment to the event
    windows: list[tuple[float, float, list[float]]] | None = field(default=None, repr=False)
    # (start_s, end_s, probabilities) of each window, when the stream was asked for them (timeline plots)
    unsure: bool = False   # the top probability is below the head's unsure_below
    # the text path (Recognizer(text=...), edge-ser run --text; see edge_ser.fusion): the transcript, its language,
    # the words' emotion and the voice's alone (then probs, label and unsure are fused); None when it does not apply
    text: str | None = None
    language: str | None = None
    text_probs: dict[str, float] | None = None
    audio_probs: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "label": self.label,
                "probs": {k: round(v, 4) for k, v in self.probs.items()}, "unsure": self.unsure,
                "latency_ms": round(self.latency_ms, 2),
                **{k: v for k, v in (("text", self.text), ("language", self.language)) if v is not None},
                **{k: {label: round(p, 4) for label, p in v.items()} for k, v in
                   (("text_probs", self.text_probs), ("audio_probs", self.audio_probs)) if v is not None}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)


def _is_finite_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) \
        and math.isfinite(value)


def window_spans(n: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Overlapping ``[start, end)`` windows covering ``n`` samples; the last one ends at ``n``."""
    if hop < 1:
        raise ValueError(f"hop must be at least one sample, not {hop}")
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
    bundle : Bundle or path of a bundle directory; None (the default) is the ready model shipped with edge-ser.
    variant : a variant name (see ``edge-ser info``), ``"auto"`` (the best for this CPU) or None (the
        bundle's default).
    backend : ``onnxruntime`` or ``openvino``; None picks by the variant's format.
    threads : inference threads (the backend's default if None).
    window_s, hop_s : windowing of long clips and segments; the bundle's if None.
    vad : ``silero`` (the default), ``energy`` or ``webrtc``; ``vad_options`` tunes it.
    text : True or a :class:`~edge_ser.fusion.TextOptions`: also transcribe each segment and fuse the emotion of
        its words with the voice's (needs ``edge-ser[text]``; see :mod:`edge_ser.fusion`).
    prefer : what ``variant="auto"`` optimises: ``balanced`` (the fastest accurate student), ``accuracy`` (the
        teacher) or ``speed`` (the fastest student).

    On OpenVINO, the compiled model stays in memory until the process ends, also after the recognizer is
    deleted (freeing it can crash a later signal handler: see ``edge_ser.engine``). It is compiled once per
    model and thread count: recognizers built again on the same variant and ``threads`` share it, so a service
    should keep the set of models it loads small rather than expect memory back from ``del``.
    """

    def __init__(self, bundle: Bundle | str | os.PathLike | None = None, variant: str | None = "auto",
                 backend: str | None = None, threads: int | None = None, window_s: float | None = None,
                 hop_s: float | None = None, vad: str = DEFAULT_VAD, vad_options: VadOptions | None = None,
                 prefer: str = "balanced", text=False):
        for name, value in (("variant", variant), ("backend", backend)):
            if value is not None and not isinstance(value, str):
                raise EdgeSerError(f"{name} must be a name (str) or None, not {value!r}")
        for name, value in (("window_s", window_s), ("hop_s", hop_s)):
            if value is not None and not _is_finite_number(value):
                raise EdgeSerError(f"{name} must be a finite number of seconds or None, not {value!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))):
            raise EdgeSerError(f"threads must be a whole number or None, not {threads!r}")
        if bundle is None:
            bundle = ready_model_path()
        elif not isinstance(bundle, (Bundle, str, os.PathLike)):
            raise EdgeSerError(f"bundle must be a Bundle, a bundle folder or None (the ready model), not "
                               f"{type(bundle).__name__}")
        bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=False)
        self.bundle, self.labels = bundle, bundle.labels
        spec = bundle.manifest.input
        self.sample_rate = spec.sample_rate
        self.window_s = float(window_s if window_s is not None else spec.window_s)
        self.hop_s = float(hop_s if hop_s is not None else spec.hop_s)
        if not spec.min_input_s <= self.window_s <= spec.max_input_s:
            raise EdgeSerError(f"window {self.window_s} s is outside what the model takes "
                               f"({spec.min_input_s}..{spec.max_input_s} s); choose another --window")
        if not MIN_HOP_S <= self.hop_s <= self.window_s:
            raise EdgeSerError(f"hop {self.hop_s} s must be at least {MIN_HOP_S} s and at most the window "
                               f"({self.window_s} s); choose another --hop")
        self.window = round(self.window_s * self.sample_rate)   # rounded only once checked
        self.hop = round(self.hop_s * self.sample_rate)
        self.min_input = max(1, round(spec.min_input_s * self.sample_rate))
        self.vad, self.vad_options = vad, vad_options or VadOptions()
        check_vad(vad, self.vad_options, self.sample_rate)
        from .fusion import text_options
        text = text_options(text)
        self.engine = open_engine(bundle, variant, backend, threads, prefer)   # last: the cheap checks come first
        self.text = self.aligned = None
        if text is not None:
            from .fusion import TextPath, aligned_fusion
            self.text = TextPath(text)
            self.aligned = aligned_fusion(bundle, self.text.model, threads)

    def annotate(self, item, x: np.ndarray):
        """``item`` (an :class:`Event` or :class:`Prediction` of the 16 kHz samples ``x``) with the text path's
        transcript and fusion, when this recognizer has one (see :mod:`edge_ser.fusion`)."""
        if self.text is not None:
            self.text.annotate(item, x, self.prediction, self.aligned)
        return item

    @property
    def variant(self) -> str:
        return self.engine.name

    def classify(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of 16 kHz float32 samples: whole, or averaged over windows.

        Audio shorter than the bundle's ``min_input_s`` is repeated (tiled) up to that length.
        """
        return self.classify_windows(x)[1].mean(axis=0)

    def classify_windows(self, x: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
        """The windows of ``x`` and the probabilities of each ``[windows, labels]``."""
        spans, e = self._windows(x)
        return spans, self.engine.head.probs(e)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """The embedding the head reads (``[dim]``) of 16 kHz float32 samples: whole, or averaged over windows."""
        return self._windows(x)[1].mean(axis=0)

    def _windows(self, x: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
        """The windows of ``x`` (tiled up to ``min_input_s`` when shorter) and the embedding of each."""
        if len(x) == 0:
            raise AudioError("no samples to classify; pass at least one sample")
        if len(x) < self.min_input:
            x = np.resize(x, self.min_input)
        spans = window_spans(len(x), self.window, self.hop)
        return spans, np.concatenate([self.engine.embed(np.stack([x[s:e] for s, e in spans[i:i + BATCH]]))
                                      for i in range(0, len(spans), BATCH)])

    def adapt(self, clips, labels: list[str], sample_rate: int, speakers: list[str] | None = None) -> Recognizer:
        """A recognizer with a new head for this one's encoder, fit on labelled ``clips`` (1-D arrays at
        ``sample_rate``, or audio file paths) with any label set; ``speakers`` (one per clip) makes the
        cross-validated estimate (``.bundle.manifest.adapted``) speaker-independent. Save it with :meth:`save`."""
        from .adapt import adapt

        waves = [audio.load_audio(c, sr=self.sample_rate) if isinstance(c, (str, os.PathLike)) else
                 audio.prepare(c, sample_rate, out_sr=self.sample_rate, name=f"clip {i}") for i, c in enumerate(clips)]
        silent = [i for i, w in enumerate(waves) if audio.is_silent(w)]
        if silent:
            raise AudioError(f"clip(s) {', '.join(map(str, silent[:10]))} are silent; leave them out")
        return adapt(self, waves, list(labels), None if speakers is None else list(speakers))[0]

    def save(self, out: str | os.PathLike, overwrite: bool = False):
        """Write this recognizer's bundle (e.g. after :meth:`adapt`) to the folder ``out``, atomically."""
        from .adapt import save

        return save(self, out, overwrite)

    def predict(self, waveform: np.ndarray, sample_rate: int, channel_axis: int | None = None) -> Prediction:
        """Emotion of a clip: 1-D samples at ``sample_rate`` Hz (or 2-D with ``channel_axis``), resampled to the
        bundle's rate; its leading and trailing silence is trimmed first (``audio.trim_silence``), as for the clips
        the model learned from."""
        x = audio.prepare(waveform, sample_rate, out_sr=self.sample_rate, name="waveform", channel_axis=channel_axis)
        x = audio.trim_silence(x, sr=self.sample_rate)
        return self.annotate(self.prediction(self.classify(x)), x)

    def prediction(self, p: np.ndarray) -> Prediction:
        """The :class:`Prediction` of probabilities ``p`` over this recognizer's labels."""
        return Prediction.of(self.labels, p, self.bundle.manifest.heads[self.engine.variant.head].unsure_below)

    def stream(self, sample_rate: int, partial: bool = False, smooth: float = 0.0, windows: bool = False) -> Stream:
        """A new stream for chunks at ``sample_rate`` Hz (see :class:`Stream`)."""
        return Stream(self, sample_rate, partial=partial, smooth=smooth, windows=windows)

    def process(self, waveform: np.ndarray, sample_rate: int, channel_axis: int | None = None) -> list[Event]:
        """Events of a whole recording at ``sample_rate`` Hz (1-D, or 2-D with ``channel_axis``): VAD, then one event
        per speech segment; the same events as streaming it, or as ``edge-ser run`` on the file."""
        x = audio.prepare(waveform, sample_rate, out_sr=sample_rate, name="waveform", channel_axis=channel_axis)
        stream = self.stream(sample_rate)
        return stream.feed(x) + stream.flush()


class Stream:
    """Incremental recognition: ``feed(chunk)`` and, at the end, ``flush()`` return finished events.

    Chunks are 1-D float (or signed int) samples at ``sample_rate`` Hz (the rate given to
    :meth:`Recognizer.stream`), of any length; they are resampled to the bundle's rate as a stream, so any chunking
    gives the same events as ``edge-ser run`` on the file. Only the audio of the open segment (at most
    ``max_speech_s`` plus padding) is kept. With ``partial=True`` the open segment's latest window is classified
    every hop and ``current`` holds the (exponentially ``smooth``-ed) probabilities for a live view. With
    ``windows=True`` every event carries its windows' probabilities. ``flush()`` ends the audio; ``reset()``
    starts over (a new recording) without building a new stream.
    """

    def __init__(self, recognizer: Recognizer, sample_rate: int, partial: bool = False, smooth: float = 0.0,
                 windows: bool = False):
        audio.check_rate(sample_rate, "stream")
        if not _is_finite_number(smooth) or not 0.0 <= smooth < 1.0:
            raise EdgeSerError(f"smooth must be a number in [0, 1), not {smooth!r}")
        self.recognizer = recognizer
        self.input_rate = int(sample_rate)        # of the chunks fed
        self.sample_rate = recognizer.sample_rate   # of the VAD, the buffer and the model
        self.partial, self.smooth, self.keep_windows = partial, smooth, windows
        self.reset()

    def reset(self) -> None:
        r = self.recognizer
        self.vad = Vad(r.vad, r.vad_options, self.sample_rate)
        self._resampler = None if self.input_rate == self.sample_rate else \
            soxr.ResampleStream(self.input_rate, self.sample_rate, 1, dtype="float32", quality="HQ")
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
        x = audio.prepare(x, self.input_rate, out_sr=self.input_rate, name=f"audio chunk at {self.position_s:.2f} s")
        if self._resampler is not None:
            x = np.clip(self._resampler.resample_chunk(x), -1.0, 1.0)
        events = self._add(x, t0)
        if self.partial:
            self._update_partial()
        self._trim()
        return events

    def flush(self) -> list[Event]:
        """End of audio: close the open segment, if any. Feeding more after it continues the stream; call
        ``reset()`` first for a new recording."""
        t0 = time.perf_counter()
        events = []
        if self._resampler is not None:   # the resampler's last samples, and a fresh one for what may follow
            events += self._add(np.clip(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True), -1, 1), t0)
            self._resampler = soxr.ResampleStream(self.input_rate, self.sample_rate, 1, dtype="float32", quality="HQ")
        events += self._events(self.vad.flush(), t0)
        self._trim()
        return events

    def _add(self, x: np.ndarray, t0: float) -> list[Event]:
        """Samples at the bundle's rate into the buffer and the VAD; the events of the segments they finish."""
        if not x.size:
            return []
        self._buffer = np.concatenate([self._buffer, x.astype(np.float32, copy=False)])
        return self._events(self.vad.feed(x), t0)

    def _events(self, segments: list[Segment], t0: float) -> list[Event]:
        events = []
        sr = self.sample_rate
        for seg in segments:
            x = self._buffer[seg.start - self._base:seg.end - self._base]
            spans, probs = self.recognizer.classify_windows(x)
            p = probs.mean(axis=0)
            self._show(p)
            pred = self.recognizer.prediction(p)
            windows = [((seg.start + s) / sr, (seg.start + min(e, seg.end - seg.start)) / sr, w.tolist())
                       for (s, e), w in zip(spans, probs)] if self.keep_windows else None
            event = self.recognizer.annotate(Event(seg.start / sr, seg.end / sr, pred.label, pred.probs, 0.0, windows,
                                                   pred.unsure), x)
            event.latency_ms = (time.perf_counter() - t0) * 1000.0
            events.append(event)
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
