"""Clip-level features: pooled teacher layers, and hand-crafted baselines (MFCC, log-mel, eGeMAPS).

Every extractor returns float32 arrays with one row per clip: pretrained ``[N, L, 2D]`` (mean and standard
deviation over time of each of the L hidden states), baselines ``[N, F]``. ``teacher_features`` and
``baseline_features`` keep their result in an ``.npz`` cache keyed by the extractor and a corpus key
(``corpus_key``), so a second run over the same corpus is fast.
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.fft import dct, rfft
from scipy.stats import kurtosis, skew
from torch import Tensor

from edge_ser.audio import SAMPLE_RATE, TRIM_DB
from edge_ser.progress import progress as track
from edge_ser.run import atomic_file

from . import parallel

MAX_CHUNK_S = 30.0          # Whisper encoders see at most 30 s; longer clips are embedded in pieces
POOL_EPS = 1e-8
BASELINES = ("mfcc", "logmel", "egemaps")


# ------------------------------------------------------------------------------------------- pretrained
def pool_layers(hidden: Tensor) -> Tensor:
    """Mean and standard deviation over time of every layer: ``[L, B, T, D] -> [B, L, 2D]`` (in-graph)."""
    mean = hidden.mean(dim=2)
    var = ((hidden - mean.unsqueeze(2)) ** 2).mean(dim=2)
    return torch.cat([mean, torch.sqrt(var + POOL_EPS)], dim=-1).transpose(0, 1)


def _hidden(model: torch.nn.Module, wave: np.ndarray) -> Tensor:
    """All hidden states ``[L, 1, T, D]`` of one clip; clips over MAX_CHUNK_S are run in pieces and joined in time."""
    n = int(MAX_CHUNK_S * SAMPLE_RATE)
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None].to(_device_of(model))
    pieces = [x[:, i:i + n] for i in range(0, x.shape[1], n)]
    if len(pieces) > 1 and pieces[-1].shape[1] < SAMPLE_RATE // 2:   # a stub: take the clip's last n samples
        pieces[-1] = x[:, -n:]
    return torch.cat([model(p) for p in pieces], dim=2)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def embed(model: torch.nn.Module, waves: Sequence[np.ndarray], description: str = "embedding",
          show_progress: bool = True, shard: bool = True) -> np.ndarray:
    """Pooled hidden states ``[N, L, 2D]`` of whole clips (batch 1, so no padding enters the statistics).

    Under torchrun every process embeds its share of the clips and all get the whole result (``shard=False``:
    this process embeds every clip itself).
    """
    model.eval()
    out = []
    with torch.inference_mode():
        for w in track(parallel.shard(waves) if shard else waves, description=description, enabled=show_progress):
            out.append(pool_layers(_hidden(model, w))[0].float().cpu().numpy())
    return np.stack(parallel.gather(out) if shard else out).astype(np.float32)


def corpus_key(items: Sequence) -> str:
    """Short hash of a corpus' file list (name, size, label, speaker of each item, in order) and of how clips are
    prepared (silence trimming)."""
    h = hashlib.sha1(f"trim {TRIM_DB}\n".encode())
    for it in items:
        p = Path(it.path)
        h.update(f"{p.name}|{p.stat().st_size if p.exists() else -1}|{it.label}|{it.speaker}\n".encode())
    return h.hexdigest()[:12]


def waves_key(waves: Sequence[np.ndarray]) -> str:
    """Short hash of audio itself (every sample, in order): the key of what was computed from it."""
    h = hashlib.sha1()
    for w in waves:
        h.update(w.tobytes())
    return h.hexdigest()[:12]


def _cache_path(cache_dir: Path, extractor: str, key: str) -> Path:
    return Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', extractor)}__{key}.npz"


def cached(cache_dir: str | Path | None, extractor: str, key: str, n: int,
           compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()`` once per (extractor, key), stored as ``.npz`` in cache_dir (None: no caching)."""
    if cache_dir is None:
        return compute()
    path = _cache_path(cache_dir, extractor, key)
    if path.is_file():
        with np.load(path) as f:
            if len(f["features"]) == n:
                return f["features"]
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "--cache", binary=True, keep_partial=False) as f:   # per-process temp name
        np.savez(f, features=features)
    return features


def teacher_features(teacher, waves: Sequence[np.ndarray], cache_dir: str | Path | None, key: str,
                     show_progress: bool = True) -> np.ndarray:
    """Pooled teacher layers ``[N, L, 2D]`` of every clip, cached per teacher name and corpus key."""
    return cached(cache_dir, teacher.name, key, len(waves),
                  lambda: embed(teacher, waves, f"{teacher.name} features", show_progress))


# ------------------------------------------------------------------------------------------- baselines
def _frames(x: np.ndarray, win: int = 400, hop: int = 160) -> np.ndarray:
    """[frames, win] windows of x (zero-padded to at least one frame)."""
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    n = 1 + (len(x) - win) // hop
    return np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n]


@lru_cache(maxsize=4)
def _mel_bank(n_mels: int, n_fft: int = 512, sr: int = SAMPLE_RATE, fmin: float = 20.0,
              fmax: float = 8000.0) -> np.ndarray:
    """HTK-scale triangular filters [n_mels, n_fft // 2 + 1]."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


def log_mel(x: np.ndarray, n_mels: int = 40) -> np.ndarray:
    """Log mel energies [frames, n_mels]: 25 ms Hamming windows, 10 ms hop, 512-point FFT, pre-emphasis 0.97."""
    x = np.append(x[:1], x[1:] - 0.97 * x[:-1]).astype(np.float64)
    power = np.abs(rfft(_frames(x) * np.hamming(400), n=512)) ** 2
    return np.log(power @ _mel_bank(n_mels).T + 1e-10)


def deltas(c: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas along time (rows) over +-width frames, edges repeated (HTK)."""
    padded = np.pad(c, ((width, width), (0, 0)), mode="edge")
    n = len(c)
    num = sum(k * (padded[width + k:width + k + n] - padded[width - k:width - k + n]) for k in range(1, width + 1))
    return num / (2 * sum(k * k for k in range(1, width + 1)))


def statistics(lld: np.ndarray) -> np.ndarray:
    """Mean, std, min, max, skewness and kurtosis over time of each column of ``[frames, C]`` -> ``[6C]``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = [lld.mean(0), lld.std(0), lld.min(0), lld.max(0), skew(lld, axis=0), kurtosis(lld, axis=0)]
    return np.nan_to_num(np.concatenate(stats)).astype(np.float32)


def mfcc_stats(x: np.ndarray, n_mfcc: int = 13) -> np.ndarray:
    """Statistics of 13 MFCCs (c0 included) with deltas and delta-deltas: ``[6 * 39]``."""
    c = dct(log_mel(x, 40), type=2, norm="ortho", axis=1)[:, :n_mfcc]
    d = deltas(c)
    return statistics(np.hstack([c, d, deltas(d)]))


def logmel_stats(x: np.ndarray, n_mels: int = 64) -> np.ndarray:
    """Statistics of 64 log mel energies: ``[6 * 64]``."""
    return statistics(log_mel(x, n_mels))


@lru_cache(maxsize=1)
def _smile():
    import opensmile
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals)


def egemaps(x: np.ndarray) -> np.ndarray:
    """The 88 eGeMAPS v02 functionals of openSMILE (NaN, e.g. from clips too short for a functional, -> 0)."""
    return np.nan_to_num(_smile().process_signal(x, SAMPLE_RATE).to_numpy()[0]).astype(np.float32)


EXTRACTORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"mfcc": mfcc_stats, "logmel": logmel_stats,
                                                             "egemaps": egemaps}


def baseline_features(name: str, waves: Sequence[np.ndarray], cache_dir: str | Path | None = None,
                      key: str = "", show_progress: bool = True) -> np.ndarray:
    """Hand-crafted features ``[N, F]`` of every clip: ``name`` is one of BASELINES."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown baseline feature set {name!r}; use one of {', '.join(BASELINES)}")
    fn = EXTRACTORS[name]

    def compute():
        rows = [fn(w) for w in track(waves, description=f"{name} features", enabled=show_progress)]
        return np.stack(rows).astype(np.float32)

    return cached(cache_dir, name, key, len(waves), compute)
