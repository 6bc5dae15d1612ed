"""Streaming voice activity detection: fixed-size frames in, finished speech segments out.

A detector labels frames speech / not speech; :class:`Vad` turns those labels into segments with padding,
minimum speech and silence durations and a maximum length. Everything is counted in samples from the start of
the stream, and the result does not depend on how the audio is chunked.

Detectors (``VADS``; ``DEFAULT_VAD`` is silero):

- ``silero``: the Silero VAD v5 neural network (MIT licence, ``edge_ser/models/SILERO_VAD_LICENSE``), run
  with ONNX Runtime on 32 ms frames at 16 kHz; its recurrent state lives in the :class:`Vad` of each stream.
  Unlike the others it does not take music, clatter or babble-like noise for speech.
- ``energy``: numpy only. The level of each frame in the speech band (300-4000 Hz, so DC offset and the mains
  fundamental count for nothing) against adaptive noise floors, once as it is and once less whatever repeats at a
  mains period (1/50 s, 1/60 s: hum and buzz with all their harmonics, cancelled by comb filters). A sound whose
  level stays within ``steady_db`` for ``steady_s`` is noise however loud, and a segment that opened as such a
  sound started is withdrawn, so a hum or buzz that starts gives no event.
- ``webrtc``: Google's WebRTC VAD (``pip install edge-ser[webrtc]``) where the energy detector hears speech too
  (WebRTC alone takes a 50 Hz hum or a buzz for speech, to the end of the file).

After ``QUIET_RESET_S`` of digital silence (peak under ``audio.SILENCE_PEAK``) outside speech, the detector
starts afresh (as at the start of a stream) and frames are counted from the next sound: the same audio after such
a silence gives the same segments wherever it falls in the stream (a leading silence changes nothing either).
"""
from __future__ import annotations

import collections
import hashlib
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

import numpy as np

from .audio import MAX_RATE, MIN_RATE, SAMPLE_RATE, SILENCE_PEAK
from .errors import EdgeSerError

VADS = ("energy", "webrtc", "silero")
DEFAULT_VAD = "silero"   # as accurate on the corpora, and music, clatter or babble are not speech to it
SPEECH_BAND_HZ = (300.0, 4000.0)
MAINS_PERIODS_S = (1 / 50, 1 / 60, 3 / 60)   # hum repeats after these; 3/60 s is a whole number of samples at 16 kHz
HUM_SOME_DB, HUM_MOST_DB = 3.0, 10.0   # energy: a frame whose level drops by this much without hum has some hum,
                                       # or is mostly hum
STEADY_SMOOTH_S = 0.15   # energy: the steadiness test reads levels averaged over this long
QUIET_RESET_S = 0.5   # digital silence outside speech after which the VAD starts afresh at the next sound
MAX_DURATION_S = 3600.0   # the longest any VadOptions duration may be
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

    def __post_init__(self):
        """Every value is checked here, before anything is rounded or sized from it (EdgeSerError if bad)."""
        for name in ("frame_ms", "webrtc_mode"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise EdgeSerError(f"VadOptions {name} must be a whole number, not {value!r}")
        if self.frame_ms not in (10, 20, 30):
            raise EdgeSerError(f"VadOptions frame_ms must be 10, 20 or 30, not {self.frame_ms}")
        if self.webrtc_mode not in (0, 1, 2, 3):
            raise EdgeSerError(f"VadOptions webrtc_mode must be 0, 1, 2 or 3, not {self.webrtc_mode}")
        for name in ("threshold_db", "floor_db", "noise_rise_db_s", "steady_s", "steady_db", "silero_threshold",
                     "min_speech_s", "min_silence_s", "pad_s", "max_speech_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(value):
                raise EdgeSerError(f"VadOptions {name} must be a finite number, not {value!r}")
        for name in ("min_speech_s", "min_silence_s", "pad_s", "noise_rise_db_s", "steady_db", "threshold_db"):
            if getattr(self, name) < 0:
                raise EdgeSerError(f"VadOptions {name} must not be negative, not {getattr(self, name)}")
        for name in ("min_speech_s", "min_silence_s", "pad_s", "steady_s", "max_speech_s"):
            if getattr(self, name) > MAX_DURATION_S:
                raise EdgeSerError(f"VadOptions {name} must be at most {MAX_DURATION_S:.0f} s, "
                                   f"not {getattr(self, name)}")
        for name in ("steady_s", "max_speech_s"):
            if getattr(self, name) <= 0:
                raise EdgeSerError(f"VadOptions {name} must be positive, not {getattr(self, name)}")
        if not 0.0 < self.silero_threshold < 1.0:
            raise EdgeSerError(f"VadOptions silero_threshold must be in (0, 1), not {self.silero_threshold}")


def check_vad(name: str, options: VadOptions, sample_rate: int) -> None:
    """Raise EdgeSerError for a VAD that cannot run: unknown name, bad options or sample rate, missing package or
    model."""
    if not isinstance(name, str) or name not in VADS:
        raise EdgeSerError(f"unknown VAD {name!r}; choose one of: {', '.join(VADS)}")
    if not isinstance(options, VadOptions):
        raise EdgeSerError(f"vad_options must be a VadOptions, not {type(options).__name__}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or not MIN_RATE <= sample_rate <= MAX_RATE:
        raise EdgeSerError(f"the VAD needs a whole-number sample rate of {MIN_RATE}..{MAX_RATE} Hz, "
                           f"not {sample_rate!r}")
    if name == "webrtc":
        _webrtcvad()
        if sample_rate not in (8000, 16000, 32000, 48000):
            raise EdgeSerError("the webrtc VAD needs 8/16/32/48 kHz audio")
    if name == "silero":
        if sample_rate != SAMPLE_RATE:
            raise EdgeSerError(f"the silero VAD runs at {SAMPLE_RATE} Hz, not {sample_rate} Hz; use --vad energy")
        _silero_session()


@dataclass(frozen=True)
class Segment:
    """Speech between two sample offsets (``end`` exclusive)."""

    start: int
    end: int


class NoiseFloor:
    """An adaptive noise floor over frame levels (dB): it drops at once, rises by ``noise_rise_db_s``, and jumps to a
    level that stayed within ``steady_db`` for ``steady_s`` (levels averaged over ``STEADY_SMOOTH_S``, as the level
    of a short frame of hum or buzz swings by a few dB with its phase)."""

    def __init__(self, options: VadOptions, frame_s: float):
        self.options = options
        self.lowest = options.floor_db - options.threshold_db
        self.rise = options.noise_rise_db_s * frame_s
        self.recent: collections.deque = collections.deque(maxlen=max(2, round(options.steady_s / frame_s)))
        self.smooth: collections.deque = collections.deque(maxlen=max(1, round(STEADY_SMOOTH_S / frame_s)))
        self.reset()

    def reset(self) -> None:
        self.noise_db = self.lowest
        self.recent.clear()
        self.smooth.clear()

    def update(self, e: float) -> tuple[bool, bool]:
        """(the frame of level ``e`` stands out as speech, it ends a steady stretch of ``steady_s``)."""
        o = self.options
        self.smooth.append(10.0 ** (e / 10.0))
        self.recent.append(10.0 * math.log10(sum(self.smooth) / len(self.smooth)))
        steady = len(self.recent) == self.recent.maxlen and max(self.recent) - min(self.recent) < o.steady_db
        if steady:
            self.noise_db = max(self.noise_db, min(self.recent))
        speech = e > max(o.floor_db, self.noise_db + o.threshold_db)
        self.noise_db = max(min(e, self.noise_db + self.rise), self.lowest)
        return speech, steady


class EnergyDetector:
    """Speech-band frame energy in dB against adaptive noise floors, once as it is and once with whatever repeats at
    a mains period taken out (hum, buzz): a frame is speech when it stands out without hum, and also as a whole when
    some of it is hum (``HUM_SOME_DB``); a frame that is mostly hum (``HUM_MOST_DB``) is not speech."""

    def __init__(self, options: VadOptions, sample_rate: int):
        self.options = options
        self.frame_size = sample_rate * options.frame_ms // 1000
        freqs = np.fft.rfftfreq(self.frame_size, 1.0 / sample_rate)
        self.band = (freqs >= SPEECH_BAND_HZ[0]) & (freqs <= SPEECH_BAND_HZ[1])
        self.window = np.hanning(self.frame_size)
        # one-sided spectrum -> mean power, so a full-scale in-band sine reads about -3 dB as before
        self.scale = 2.0 / (self.frame_size ** 2 * float(np.mean(self.window ** 2)))
        self.lags = sorted({max(1, round(p * sample_rate)) for p in MAINS_PERIODS_S})
        self.floors = [NoiseFloor(options, self.frame_size / sample_rate) for _ in range(2)]
        self.steady_frames = self.floors[0].recent.maxlen
        self.reset()

    def reset(self) -> None:
        """Forget the audio seen so far (a new stream)."""
        for floor in self.floors:
            floor.reset()
        self.history = np.zeros(self.lags[-1])   # the samples before the next frame
        self.steady = np.zeros(0, dtype=bool)    # per frame of the last call: it ends steady_frames of steady noise

    def levels(self, frames: np.ndarray) -> np.ndarray:
        """Speech-band level of each frame, dB re full scale."""
        spec = np.fft.rfft(frames.astype(np.float64) * self.window, axis=1)[:, self.band]
        return 10.0 * np.log10(self.scale * np.sum(spec.real ** 2 + spec.imag ** 2, axis=1) + 1e-12)

    def hum_free_levels(self, frames: np.ndarray) -> np.ndarray:
        """Speech-band level of each frame (which follow the frames of the last call) with mains hum and buzz taken
        out: the lowest of its own level and the levels of it minus the audio one mains period earlier (a comb
        filter that cancels anything repeating at 50 or 60 Hz, whatever its harmonics, and leaves speech, which
        does not repeat, as loud or louder)."""
        return self._levels(frames)[1]

    def _levels(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = frames.astype(np.float64)
        n, size = x.shape
        h = len(self.history)
        flat = np.concatenate([self.history, x.ravel()])
        levels = [self.levels(x)] + [self.levels(x - flat[h - lag:h - lag + n * size].reshape(n, size))
                                     for lag in self.lags]
        self.history = flat[len(flat) - h:]
        return levels[0], np.min(levels, axis=0)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        plain, hum_free = self._levels(frames)
        speech = np.zeros(len(frames), dtype=bool)
        self.steady = np.zeros(len(frames), dtype=bool)
        for i, (level, free) in enumerate(zip(plain, hum_free)):
            (a, steady_a), (b, steady_b) = self.floors[0].update(level), self.floors[1].update(free)
            # with little hum in it a frame is judged by its hum-free level; with more, it must also stand out as
            # a whole (an unsteady hum, or one that jitters, is only partly taken out); mostly hum, it is not speech
            hum = level - free
            speech[i] = b and (a or hum < HUM_SOME_DB) and hum < HUM_MOST_DB
            self.steady[i] = steady_a or steady_b
        return speech


def varies_like_speech(x: np.ndarray, sample_rate: int = SAMPLE_RATE, options: VadOptions | None = None) -> bool:
    """True when the speech-band level of ``x`` (30 ms frames) rises and falls as speech does: its loud frames
    (90th percentile) reach ``floor_db - 20`` and stand ``threshold_db`` above its quiet ones (10th percentile),
    and the frames within 20 dB of the loud ones are not steady (their 10th and 90th percentiles are ``steady_db``
    apart). Digital silence, DC, mains hum, a buzz and steady noise are not, also when they start after a silence:
    their sounding frames vary by under 2 dB; speech clips (EmoDB, TurEV) vary by 4 dB or more."""
    options = options or VadOptions()
    detector = EnergyDetector(replace(options, frame_ms=30), sample_rate)
    n = len(x) // detector.frame_size
    if n < 2:
        return False
    levels = detector.levels(np.reshape(x[:n * detector.frame_size], (n, -1)))
    quiet, loud = np.percentile(levels, [10, 90])
    low, high = np.percentile(levels[levels >= loud - 20.0], [10, 90])
    return bool(loud >= options.floor_db - 20.0 and loud - quiet >= options.threshold_db
                and high - low >= options.steady_db)


def _webrtcvad():
    try:
        import webrtcvad
    except ImportError:
        raise EdgeSerError("the webrtc VAD needs webrtcvad: pip install edge-ser[webrtc] "
                           "(or use --vad energy or --vad silero)") from None
    return webrtcvad


class WebRtcDetector:
    """Google's WebRTC VAD on 16-bit frames, where the energy detector hears speech too (WebRTC alone takes a 50 Hz
    hum or a buzz for speech, to the end of the file)."""

    def __init__(self, options: VadOptions, sample_rate: int):
        self.mode = options.webrtc_mode
        self.sample_rate = sample_rate
        self.energy = EnergyDetector(options, sample_rate)
        self.frame_size = self.energy.frame_size
        self.steady_frames = self.energy.steady_frames
        self.reset()

    @property
    def steady(self) -> np.ndarray:
        return self.energy.steady

    def reset(self) -> None:
        self.vad = _webrtcvad().Vad(self.mode)
        self.energy.reset()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).astype("<i2")
        speech = np.array([self.vad.is_speech(f.tobytes(), self.sample_rate) for f in pcm], dtype=bool)
        return speech & self.energy(frames)


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
        self.reset()

    def reset(self) -> None:
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
    """Segments speech from fixed-size frames; ``feed`` and ``flush`` return finished segments.

    Frames are counted from the stream's first sound, and again from the first sound after each stretch of
    ``QUIET_RESET_S`` of digital silence outside speech, where the detector starts afresh: so the same audio after
    such a silence gives the same segments wherever it falls in the stream, and leading silence changes nothing.
    """

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
        self.reset_after = max(1, math.ceil(QUIET_RESET_S / frame_s - 1e-9))   # quiet frames in a row
        self.total = 0                      # samples fed
        self._rest = np.zeros(0, np.float32)  # the incomplete frame (the ring buffer)
        self._idle = True                   # in digital silence after a reset: waiting for a sound
        self._origin = 0                    # stream sample where frame 0 starts
        self._frames = 0                    # frames labelled since _origin
        self._quiet = 0                     # digitally silent frames in a row, up to the last labelled
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
        if self._idle:
            return max(self.total - self.pad, self._prev_end, 0)
        return self._padded_start(self._frames)

    def feed(self, samples: np.ndarray) -> list[Segment]:
        x = np.asarray(samples, dtype=np.float32)
        self.total += len(x)
        data = np.concatenate([self._rest, x])
        first = self.total - len(data)      # stream sample of data[0]
        segments, i, size = [], 0, self.frame_size
        while True:
            if self._idle:                  # skip the silence; the next sound starts the frames afresh
                loud = np.flatnonzero(np.abs(data[i:]) >= SILENCE_PEAK)
                if not loud.size:
                    i = len(data)
                    break
                i += int(loud[0])
                self._idle, self._origin, self._frames, self._quiet = False, first + i, 0, 0
                self.detect.reset()
            n = (len(data) - i) // size
            if n == 0:
                break
            frames = data[i:i + n * size].reshape(n, size)
            # label up to the frame that completes reset_after silent frames in a row (if any)
            quiet, stop = self._quiet, n
            for j, silent in enumerate(np.max(np.abs(frames), axis=1) < SILENCE_PEAK):
                quiet = quiet + 1 if silent else 0
                if quiet >= self.reset_after:
                    stop = j + 1
                    break
            segments += self._label(frames[:stop])
            self._quiet, i = quiet, i + stop * size
            if quiet >= self.reset_after and self._start is None:
                self._idle = True
        self._rest = data[i:].copy()
        return segments

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
        return max(self._origin + frame * self.frame_size - self.pad, self._prev_end, 0)

    def _label(self, frames: np.ndarray) -> list[Segment]:
        segments = []
        labels = self.detect(frames)
        steady = getattr(self.detect, "steady", None)
        for j, speech in enumerate(labels):
            i = self._frames
            self._frames += 1
            if steady is not None and steady[j] and self._start is not None:
                self._forget_noise(i + 1 - self.detect.steady_frames)
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

    def _forget_noise(self, first: int) -> None:
        """Frames ``first`` on, taken for speech while the detector learned them, were steady noise (a hum or buzz
        starting): drop the open segment if little else is left of it, else end its speech before them."""
        if first - self._start < max(1, self.min_speech):
            self._start = None
        else:
            self._last = min(self._last, first - 1)

    def _close(self, end_frame: int) -> list[Segment]:
        start, self._start = self._start, None
        if end_frame - start < self.min_speech:
            return []
        end = min(self._origin + end_frame * self.frame_size + self.pad, self._origin + self._frames * self.frame_size,
                  self.total)
        segment = Segment(self._padded_start(start), end)
        self._prev_end = end
        return [segment]
