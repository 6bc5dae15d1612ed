"""Audio as other microphones, rooms, lines and levels would give it: the augmented copies distillation and the
fast student's refit learn from (the training corpora's own audio is too narrow for speech nobody trained on).

:func:`augmented` chains, each drawn at random: speed 0.9-1.1 (pitch with it); half the time a synthetic room
(:func:`room`); a third of the time a telephone line (300-3400 Hz and G.711 mu-law, :func:`band`, :func:`mu_law`),
another third a low-pass at 4-8 kHz (a cheap microphone, a resampled recording); a fifth of the time a lossy codec
at a low bitrate (:func:`lossy`: MP3 or Ogg Vorbis through soundfile); gain -6..+6 dB; white, pink or brown noise
at 5-35 dB SNR (:func:`noise`). Numpy, soxr and soundfile only; nothing is downloaded.
"""
from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import soxr

from edge_ser.audio import SAMPLE_RATE

CODECS = (("MP3", "MPEG_LAYER_III"), ("OGG", "VORBIS"))
AVAILABLE = {f for f, _ in CODECS if f in sf.available_formats()}   # libsndfile builds differ


def _filter(y: np.ndarray, gain: np.ndarray | None = None, kernel: np.ndarray | None = None) -> np.ndarray:
    """``y`` through a frequency response ``gain(freqs)`` or convolved with ``kernel`` (FFT; same length)."""
    n = len(y) + (0 if kernel is None else len(kernel) - 1)
    spectrum = np.fft.rfft(y, n)
    spectrum *= gain if kernel is None else np.fft.rfft(kernel, n)
    return np.fft.irfft(spectrum, n)[:len(y)]


def band(y: np.ndarray, low: float, high: float) -> np.ndarray:
    """``y`` with what lies under ``low`` Hz or over ``high`` Hz removed."""
    freqs = np.fft.rfftfreq(len(y), 1 / SAMPLE_RATE)
    return _filter(y, ((freqs >= low) & (freqs <= high)).astype(np.float64))


def room(y: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """``y`` in a room whose reverberation decays by 60 dB in ``rt60`` seconds: convolved with the direct sound
    and an exponentially decaying noise tail; the level is kept."""
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    kernel = rng.standard_normal(len(t)) * 10 ** (-3 * t / rt60) * 10 ** (-rng.uniform(0.0, 10.0) / 20) / 10
    kernel[0] = 1.0
    wet = _filter(y, kernel=kernel)
    return wet * np.sqrt((np.mean(y ** 2) + 1e-12) / (np.mean(wet ** 2) + 1e-12))


def mu_law(y: np.ndarray, mu: int = 255) -> np.ndarray:
    """``y`` (in -1..1) through 8-bit mu-law companding, as G.711 telephone lines carry it."""
    code = np.round(np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu) * 127) / 127
    return np.sign(code) * np.expm1(np.abs(code) * np.log1p(mu)) / mu


def lossy(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``y`` (in -1..1) encoded at a low bitrate by one of :data:`CODECS`, and decoded; unchanged when this
    libsndfile lacks the codec drawn (the draws are the same on every machine, so a seed gives the same copies)."""
    fmt, subtype = CODECS[rng.integers(len(CODECS))]
    level = rng.uniform(0.5, 1.0)
    if fmt not in AVAILABLE:
        return y
    if fmt == "MP3":   # LAME refuses the lowest bitrates (levels over 0.9999)
        level = min(level, 0.999)
    buffer = io.BytesIO()
    sf.write(buffer, y, SAMPLE_RATE, format=fmt, subtype=subtype, compression_level=level)
    buffer.seek(0)
    out = sf.read(buffer, dtype="float64")[0]
    return np.pad(out, (0, max(0, len(y) - len(out))))[:len(y)]


def noise(n: int, colour: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of unit-power noise whose power falls as 1/f^colour (0 white, 1 pink, 2 brown)."""
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    x = _filter(rng.standard_normal(n), np.maximum(freqs, 20.0) ** (-colour / 2))
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def augmented(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` (16 kHz) through a random chain of the effects above (see the module); float32 in -1..1."""
    if len(x) < SAMPLE_RATE // 100:
        return x.astype(np.float32)
    speed = rng.uniform(0.9, 1.1)
    y = soxr.resample(x.astype(np.float32), SAMPLE_RATE * speed, SAMPLE_RATE, quality="HQ").astype(np.float64)
    if rng.random() < 0.5:
        y = room(y, rng.uniform(0.2, 0.8), rng)
    line = rng.random()
    if line < 1 / 3:
        y = mu_law(np.clip(band(y, 300.0, 3400.0), -1.0, 1.0))
    elif line < 2 / 3:
        y = band(y, 0.0, rng.uniform(4000.0, 8000.0))
    if rng.random() < 0.2 and len(y) >= SAMPLE_RATE // 10:
        y = lossy(np.clip(y, -1.0, 1.0), rng)
    y = y * 10 ** (rng.uniform(-6.0, 6.0) / 20)
    power = float(np.mean(y ** 2)) + 1e-12
    y = y + noise(len(y), int(rng.integers(3)), rng) * np.sqrt(power / 10 ** (rng.uniform(5.0, 35.0) / 10))
    return np.clip(y, -1.0, 1.0).astype(np.float32)
