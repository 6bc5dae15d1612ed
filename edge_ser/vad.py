"""Streaming voice activity detection: fixed-size frames in, finished speech segments out.

A detector labels frames speech / not speech; :class:`Vad` turns those labels into segments with padding,
minimum speech and silence durations and a maximum length. Everything is counted in samples from the start of
the stream, and the result does not depend on how the audio is chunked.

Detectors (``VADS``):

- ``energy``: numpy only. The energy of each frame in the speech band (300-4000 Hz, so DC offset and mains hum
  at 50/60 Hz and its first harmonics count for nothing) against an adaptive noise floor and an absolute floor;
  a signal whose band energy stays within ``steady_db`` for ``steady_s`` is noise, however loud.
- ``webrtc``: Google's WebRTC VAD (``pip install edge-ser[webrtc]``).
- ``silero``: the Silero VAD v5 neural network (MIT licence, ``edge_ser/models/SILERO_VAD_LICENSE``), run
  with ONNX Runtime on 32 ms frames at 16 kHz; its recurrent state lives in the :class:`Vad` of each stream.
"""
from __future__ import annotations

import collections
import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from .audio import SAMPLE_RATE
from .errors import EdgeSerError

VADS = ("energy", "webrtc", "silero")
SPEECH_BAND_HZ = (300.0, 4000.0)
SILERO_FILE = "models/silero_vad.onnx"   # silero-vad 6.2.3, silero_vad_16k_op15.onnx
SILERO_SHA256 = "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49"


@dataclass(frozen=True)
class VadOptions:
    """Frame size, detector settings and segment rules (durations in seconds)."""

    frame_ms: int = 30             # energy and webrtc: 10, 20 or 30 (WebRTC accepts only these); silero: 32 fixed
    threshold_db: float = 10.0     # energy: a speech frame is this far above the noise floor ...
    floor_db: float = -50.0        # ... and above this absolute level (dB re full scale, in the speech band)
    noise_rise_db_s: float = 3.0   # energy: how fast the noise floor may rise (it drops at once) ...
    steady_s: float = 1.0          # ... unless the energy stayed within steady_db for this long (a hum, a fan):
    steady_db: float = 3.0         # then the floor jumps to it
    webrtc_mode: int = 2           # webrtc: aggressiveness 0 (least) .. 3 (most)
    silero_threshold: float = 0.5  # silero: speech probability above which a frame is speech
    min_speech_s: float = 0.25     # shorter bursts are dropped
    min_silence_s: float = 0.5     # shorter pauses do not end a segment
    pad_s: float = 0.2             # added before and after each segment, so words are not cut
    max_speech_s: float = 30.0     # longer speech is split into segments of at most this length


def check_vad(name: str, options: VadOptions, sample_rate: int) -> None:
    """Raise EdgeSerError for a VAD that cannot run: unknown name, bad option, missing package or model."""
    if name not in VADS:
        raise EdgeSerError(f"unknown VAD {name!r}; choose one of: {', '.join(VADS)}")
    if options.frame_ms not in (10, 20, 30):
        raise EdgeSerError(f"frame_ms must be 10, 20 or 30, not {options.frame_ms}")
    if min(options.min_speech_s, options.min_silence_s, options.pad_s) < 0 or options.max_speech_s <= 0:
        raise EdgeSerError("VAD durations must be positive")
    if name == "webrtc":
        _webrtcvad()
        if sample_rate not in (8000, 16000, 32000, 48000) or options.webrtc_mode not in (0, 1, 2, 3):
            raise EdgeSerError("the webrtc VAD needs 8/16/32/48 kHz audio and webrtc_mode 0..3")
    if name == "silero":
        if sample_rate != SAMPLE_RATE:
            raise EdgeSerError(f"the silero VAD runs at {SAMPLE_RATE} Hz, not {sample_rate} Hz; use --vad energy")
        if not 0.0 < options.silero_threshold < 1.0:
            raise EdgeSerError(f"silero_threshold must be in (0, 1), not {options.silero_threshold}")
        _silero_session()


@dataclass(frozen=True)
class Segment:
    """Speech between two sample offsets (``end`` exclusive)."""

    start: int
    end: int


class EnergyDetector:
    """Speech-band frame energy in dB against a noise floor that drops at once and rises slowly."""

    def __init__(self, options: VadOptions, sample_rate: int):
        self.options = options
        self.frame_size = sample_rate * options.frame_ms // 1000
        self.lowest = options.floor_db - options.threshold_db
        self.noise_db = self.lowest
        self.rise = options.noise_rise_db_s * self.frame_size / sample_rate
        self.recent: collections.deque = collections.deque(
            maxlen=max(2, round(options.steady_s * sample_rate / self.frame_size)))
        freqs = np.fft.rfftfreq(self.frame_size, 1.0 / sample_rate)
        self.band = (freqs >= SPEECH_BAND_HZ[0]) & (freqs <= SPEECH_BAND_HZ[1])
        self.window = np.hanning(self.frame_size)
        # one-sided spectrum -> mean power, so a full-scale in-band sine reads about -3 dB as before
        self.scale = 2.0 / (self.frame_size ** 2 * float(np.mean(self.window ** 2)))

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        spec = np.fft.rfft(frames.astype(np.float64) * self.window, axis=1)[:, self.band]
        energy = 10.0 * np.log10(self.scale * np.sum(spec.real ** 2 + spec.imag ** 2, axis=1) + 1e-12)
        speech = np.zeros(len(frames), dtype=bool)
        o = self.options
        for i, e in enumerate(energy):
            self.recent.append(e)
            if len(self.recent) == self.recent.maxlen and max(self.recent) - min(self.recent) < o.steady_db:
                self.noise_db = max(self.noise_db, min(self.recent))
            speech[i] = e > max(o.floor_db, self.noise_db + o.threshold_db)
            self.noise_db = max(min(e, self.noise_db + self.rise), self.lowest)
        return speech


def _webrtcvad():
    try:
        import webrtcvad
    except ImportError:
        raise EdgeSerError("the webrtc VAD needs webrtcvad: pip install edge-ser[webrtc] "
                           "(or use --vad energy or --vad silero)") from None
    return webrtcvad


class WebRtcDetector:
    """Google's WebRTC VAD on 16-bit frames."""

    def __init__(self, options: VadOptions, sample_rate: int):
        self.vad = _webrtcvad().Vad(options.webrtc_mode)
        self.sample_rate = sample_rate
        self.frame_size = sample_rate * options.frame_ms // 1000

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).astype("<i2")
        return np.array([self.vad.is_speech(f.tobytes(), self.sample_rate) for f in pcm], dtype=bool)


@lru_cache(maxsize=1)
def _silero_session():
    """The Silero VAD graph, checked against its SHA-256, on one ONNX Runtime thread (shared, stateless)."""
    import onnxruntime as ort

    data = (resources.files("edge_ser") / SILERO_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != SILERO_SHA256:
        raise EdgeSerError(f"edge_ser/{SILERO_FILE} is damaged (SHA-256 mismatch); reinstall edge-ser")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


class SileroDetector:
    """Silero VAD v5: 512-sample frames with the previous frame's last 64 samples as context, and a recurrent
    state carried from frame to frame (as ``OnnxWrapper`` in snakers4/silero-vad)."""

    FRAME, CONTEXT = 512, 64

    def __init__(self, options: VadOptions, sample_rate: int):
        self.session = _silero_session()
        self.threshold = options.silero_threshold
        self.frame_size = self.FRAME
        self.sr = np.array(sample_rate, dtype=np.int64)
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros(self.CONTEXT, np.float32)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        speech = np.zeros(len(frames), dtype=bool)
        for i, frame in enumerate(frames.astype(np.float32)):
            x = np.concatenate([self.context, frame])[None]
            prob, self.state = self.session.run(None, {"input": x, "state": self.state, "sr": self.sr})
            self.context = frame[-self.CONTEXT:]
            speech[i] = float(prob[0, 0]) >= self.threshold
        return speech


DETECTORS = {"energy": EnergyDetector, "webrtc": WebRtcDetector, "silero": SileroDetector}


class Vad:
    """Segments speech from fixed-size frames; ``feed`` and ``flush`` return finished segments."""

    def __init__(self, name: str = "energy", options: VadOptions | None = None, sample_rate: int = SAMPLE_RATE):
        options = options or VadOptions()
        check_vad(name, options, sample_rate)
        self.options = options
        self.detect = DETECTORS[name](options, sample_rate)
        self.frame_size = self.detect.frame_size
        frame_s = self.frame_size / sample_rate
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
