"""Audio in: decode (soundfile), downmix, resample (soxr) to float32 mono 16 kHz in [-1, 1].

Every entry point returns float32 1-D arrays at `SAMPLE_RATE` (or the `sr` asked for).
Bad input raises `AudioError` whose message names the file and says what to do; the
error's `reason` attribute is a short tag ("empty file", "unreadable audio",
"non-finite samples", ...) that the dataset loader counts as a skip reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
SILENCE_PEAK = 1e-4  # about -80 dBFS: below 4 LSB of 16-bit audio
_FIX = "re-encode it as WAV/FLAC/OGG (e.g. `ffmpeg -i IN -ac 1 -ar 16000 OUT.wav`) or remove it"


def _error(reason: str, message: str) -> AudioError:
    err = AudioError(message)
    err.reason = reason
    return err


def _open(path: str | Path) -> sf.SoundFile:
    path = Path(path)
    if not path.is_file():
        raise _error("missing file", f"{path}: no such audio file; check the path")
    if path.stat().st_size == 0:
        raise _error("empty file", f"{path}: the file is empty (0 bytes); {_FIX}")
    try:
        f = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError) as e:
        raise _error("unreadable audio", f"{path}: not decodable audio ({e}); {_FIX}") from None
    if f.frames == 0:
        f.close()
        raise _error("empty file", f"{path}: the file holds no samples; {_FIX}")
    return f


def _mono(x: np.ndarray, name: str) -> np.ndarray:
    """[samples] or [samples, channels] of any float/signed-int dtype -> float32 [samples]."""
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise _error("bad shape", f"{name}: expected audio shaped [samples] or [samples, channels], "
                                  f"got shape {x.shape}")
    if np.issubdtype(x.dtype, np.signedinteger):
        x = x / np.float32(np.iinfo(x.dtype).max + 1)
    elif not np.issubdtype(x.dtype, np.floating):
        raise _error("bad dtype", f"{name}: unsupported sample type {x.dtype}; pass float or signed int PCM")
    if x.ndim == 2:
        x = x.mean(axis=1)
    return x.astype(np.float32, copy=False)


def _check_finite(x: np.ndarray, name: str, sr: int, offset: int = 0) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        first = (offset + int(np.argmax(bad))) / sr
        raise _error("non-finite samples",
                     f"{name}: {int(bad.sum())} NaN/Inf samples (first at {first:.2f} s); "
                     "the recording is damaged: re-export it from the source or remove it")


def _check_rate(sr: int, name: str) -> None:
    if not (isinstance(sr, (int, np.integer)) and sr > 0):
        raise _error("bad sample rate", f"{name}: sample rate must be a positive integer, got {sr!r}")


def clip_fraction(x: np.ndarray, level: float = 0.999) -> float:
    """Fraction of samples at or beyond full scale (a sign of clipped recording)."""
    x = np.asarray(x)
    return float(np.mean(np.abs(x) >= level)) if x.size else 0.0


def is_silent(x: np.ndarray, peak: float = SILENCE_PEAK) -> bool:
    """True when the audio is empty or its peak is below `peak` (digital silence)."""
    x = np.asarray(x)
    return x.size == 0 or float(np.max(np.abs(x))) < peak


def prepare(x: np.ndarray, sr: int, *, out_sr: int = SAMPLE_RATE, name: str = "audio") -> np.ndarray:
    """In-memory audio [samples] or [samples, channels] at `sr` -> float32 mono at `out_sr`.

    Float input beyond [-1, 1] is clipped; signed integers are scaled from full scale.
    Raises AudioError for empty input or NaN/Inf samples.
    """
    _check_rate(sr, name)
    x = _mono(x, name)
    if x.size == 0:
        raise _error("empty file", f"{name}: no samples; pass at least one sample")
    _check_finite(x, name, sr)
    x = np.clip(x, -1.0, 1.0)
    if sr != out_sr:
        x = np.clip(soxr.resample(x, sr, out_sr, quality="HQ"), -1.0, 1.0)
    return x


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a whole file (WAV/FLAC/OGG/...) to float32 mono at `sr` in [-1, 1]."""
    with _open(path) as f:
        try:
            x = f.read(dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as e:
            raise _error("unreadable audio", f"{path}: decoding failed ({e}); {_FIX}") from None
        return prepare(x, f.samplerate, out_sr=sr, name=str(path))


def stream_audio(path: str | Path, block_s: float = 1.0, sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks at `sr` of about `block_s` seconds each, in bounded memory.

    The file is read block by block and resampled with a streaming resampler, so a
    file of any length never sits in memory whole. Block lengths vary by a few samples.
    """
    with _open(path) as f:
        name, rate = str(path), f.samplerate
        rs = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ") if rate != sr else None
        offset = 0
        try:
            for block in f.blocks(blocksize=max(1, round(block_s * rate)), dtype="float32", always_2d=True):
                x = _mono(block, name)
                _check_finite(x, name, rate, offset)
                offset += len(x)
                x = np.clip(x, -1.0, 1.0)
                if rs is not None:
                    x = np.clip(rs.resample_chunk(x), -1.0, 1.0)
                if x.size:
                    yield x
        except (sf.SoundFileError, RuntimeError) as e:
            raise _error("unreadable audio", f"{path}: decoding failed ({e}); {_FIX}") from None
        if rs is not None:
            tail = rs.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield np.clip(tail, -1.0, 1.0)


def stream_pcm16(fileobj: BinaryIO, sr: int = SAMPLE_RATE, block_s: float = 0.5) -> Iterator[np.ndarray]:
    """Yield float32 mono 16 kHz blocks from raw signed 16-bit little-endian mono PCM.

    `fileobj` is a binary stream such as `sys.stdin.buffer` (e.g. `arecord -f S16_LE -r 16000 -c 1 -t raw`);
    `sr` is the stream's sample rate, resampled to 16 kHz when it differs.
    """
    _check_rate(sr, "PCM stream")
    nbytes = 2 * max(1, round(block_s * sr))
    rs = soxr.ResampleStream(sr, SAMPLE_RATE, 1, dtype="float32", quality="HQ") if sr != SAMPLE_RATE else None
    carry = b""
    while True:
        data = fileobj.read(nbytes)
        if not data:
            break
        data = carry + data
        cut = len(data) - len(data) % 2
        data, carry = data[:cut], data[cut:]
        x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if rs is not None:
            x = rs.resample_chunk(x)
        if x.size:
            yield np.clip(x, -1.0, 1.0)
    if rs is not None:
        tail = rs.resample_chunk(np.zeros(0, np.float32), last=True)
        if tail.size:
            yield np.clip(tail, -1.0, 1.0)
