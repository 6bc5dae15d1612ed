"""Streaming voice activity detection: fixed-size frames in, finished speech segments out.

A detector labels frames speech / not speech; :class:`Vad` turns those labels into segments with
padding, minimum speech and silence durations and a maximum length. Everything is counted in
samples from the start of the stream, and the result does not depend on how the audio is chunked.

Detectors: ``energy`` (numpy: frame energy against an adaptive noise floor and an absolute floor)
and ``webrtc`` (WebRTC VAD, ``pip install edge-ser[webrtc]``). Silero is not bundled (it needs a
model file); use ``energy`` or ``webrtc``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import EdgeSerError

VADS = ("energy", "webrtc")


@dataclass
class VadOptions:
    """Frame size, detector settings and segment rules (durations in seconds)."""

    frame_ms: int = 30             # 10, 20 or 30 (WebRTC accepts only these)
    threshold_db: float = 10.0     # energy: a speech frame is this far above the noise floor ...
    floor_db: float = -50.0        # ... and above this absolute level (dB re full scale)
    noise_rise_db_s: float = 3.0   # energy: how fast the noise floor may rise (it drops at once)
    webrtc_mode: int = 2           # webrtc: aggressiveness 0 (least) .. 3 (most)
    min_speech_s: float = 0.25     # shorter bursts are dropped
    min_silence_s: float = 0.5     # shorter pauses do not end a segment
    pad_s: float = 0.2             # added before and after each segment, so words are not cut
    max_speech_s: float = 30.0     # longer speech is split into segments of at most this length


@dataclass(frozen=True)
class Segment:
    """Speech between two sample offsets (``end`` exclusive)."""

    start: int
    end: int


class EnergyDetector:
    """Frame energy in dB against a noise floor that drops at once and rises slowly."""

    def __init__(self, options: VadOptions, frame_size: int, sample_rate: int):
        self.options = options
        self.lowest = options.floor_db - options.threshold_db
        self.noise_db = self.lowest
        self.rise = options.noise_rise_db_s * frame_size / sample_rate

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = frames.astype(np.float64)
        energy = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)
        speech = np.zeros(len(frames), dtype=bool)
        o = self.options
        for i, e in enumerate(energy):
            speech[i] = e > max(o.floor_db, self.noise_db + o.threshold_db)
            self.noise_db = max(min(e, self.noise_db + self.rise), self.lowest)
        return speech


class WebRtcDetector:
    """Google's WebRTC VAD on 16-bit frames."""

    def __init__(self, options: VadOptions, frame_size: int, sample_rate: int):
        try:
            import webrtcvad
        except ImportError:
            raise EdgeSerError("the webrtc VAD needs webrtcvad: pip install edge-ser[webrtc] "
                               "(or use --vad energy)") from None
        if sample_rate not in (8000, 16000, 32000, 48000) or options.frame_ms not in (10, 20, 30):
            raise EdgeSerError("the webrtc VAD needs 8/16/32/48 kHz audio and 10, 20 or 30 ms frames")
        if options.webrtc_mode not in (0, 1, 2, 3):
            raise EdgeSerError(f"webrtc_mode must be 0..3, not {options.webrtc_mode}")
        self.vad = webrtcvad.Vad(options.webrtc_mode)
        self.sample_rate = sample_rate

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).astype("<i2")
        return np.array([self.vad.is_speech(f.tobytes(), self.sample_rate) for f in pcm], dtype=bool)


class Vad:
    """Segments speech from fixed-size frames; ``feed`` and ``flush`` return finished segments."""

    def __init__(self, detector, options: VadOptions, sample_rate: int):
        self.options = options
        self.detect = detector
        self.frame_size = sample_rate * options.frame_ms // 1000
        frame_s = options.frame_ms / 1000
        self.pad = round(options.pad_s * sample_rate)
        self.min_speech = math.ceil(options.min_speech_s / frame_s - 1e-9)
        self.min_silence = max(1, math.ceil(options.min_silence_s / frame_s - 1e-9))
        self.max_speech = max(1, math.floor(options.max_speech_s / frame_s + 1e-9))
        self.total = 0                      # samples fed
        self._rest = np.zeros(0, np.float32)  # the incomplete frame (the ring buffer)
        self._frames = 0                    # frames labelled
        self._start: int | None = None      # first speech frame of the open segment
        self._last = 0                      # last speech frame of the open segment
        self._prev_end = 0                  # end sample of the last segment

    @property
    def in_speech(self) -> bool:
        return self._start is not None

    @property
    def open_start(self) -> int | None:
        """First sample of the open segment (padding included), or None in silence."""
        return None if self._start is None else self._padded_start(self._start)

    @property
    def keep_from(self) -> int:
        """The earliest sample that a segment still to come can include."""
        if self._start is not None:
            return self._padded_start(self._start)
        return self._padded_start(self._frames)

    def feed(self, samples: np.ndarray) -> list[Segment]:
        data = np.concatenate([self._rest, np.asarray(samples, dtype=np.float32)])
        self.total += len(samples)
        n = len(data) // self.frame_size
        self._rest = data[n * self.frame_size:].copy()
        if n == 0:
            return []
        return self._label(data[:n * self.frame_size].reshape(n, self.frame_size))

    def flush(self) -> list[Segment]:
        """End of audio: label the incomplete frame (zero-padded) and close any open segment."""
        segments = []
        if len(self._rest):
            frame = np.zeros((1, self.frame_size), np.float32)
            frame[0, :len(self._rest)] = self._rest
            self._rest = np.zeros(0, np.float32)
            segments += self._label(frame)
        if self._start is not None:
            segments += self._close(self._last + 1)
        return segments

    def _padded_start(self, frame: int) -> int:
        return max(frame * self.frame_size - self.pad, self._prev_end, 0)

    def _label(self, frames: np.ndarray) -> list[Segment]:
        segments = []
        for speech in self.detect(frames):
            i = self._frames
            self._frames += 1
            if self._start is None:
                if speech:
                    self._start = self._last = i
                continue
            if speech:
                self._last = i
            elif i - self._last >= self.min_silence:
                segments += self._close(self._last + 1)
                continue
            if i + 1 - self._start >= self.max_speech:
                segments += self._close(i + 1)
        return segments

    def _close(self, end_frame: int) -> list[Segment]:
        start, self._start = self._start, None
        if end_frame - start < self.min_speech:
            return []
        end = min(end_frame * self.frame_size + self.pad, self._frames * self.frame_size, self.total)
        segment = Segment(self._padded_start(start), end)
        self._prev_end = end
        return [segment]


def make_vad(name: str = "energy", options: VadOptions | None = None, sample_rate: int = 16000) -> Vad:
    """A streaming VAD by name: ``energy`` or ``webrtc``."""
    options = options or VadOptions()
    detectors = {"energy": EnergyDetector, "webrtc": WebRtcDetector}
    if name == "silero":
        raise EdgeSerError("the silero VAD is not bundled (it needs its ONNX model file); "
                           "use --vad energy or --vad webrtc")
    if name not in detectors:
        raise EdgeSerError(f"unknown VAD {name!r}; choose one of: {', '.join(VADS)}")
    if options.frame_ms not in (10, 20, 30):
        raise EdgeSerError(f"frame_ms must be 10, 20 or 30, not {options.frame_ms}")
    frame_size = sample_rate * options.frame_ms // 1000
    return Vad(detectors[name](options, frame_size, sample_rate), options, sample_rate)
