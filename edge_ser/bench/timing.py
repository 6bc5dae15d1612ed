"""Latency of many engines timed round-robin in one loop, so a noisy machine's drift hits all of them alike."""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class TimingConfig:
    """How long to measure. ``reps=None`` picks as many repetitions as fit ``budget_s``."""

    window_s: float = 2.0
    warmup: int = 5
    settle: int = 1           # untimed calls on switching engines: the last engine's idle threads must not
                              # bill the next one
    reps: int | None = None
    min_reps: int = 20
    max_reps: int = 200
    budget_s: float = 60.0    # timed seconds per thread count when reps is None
    seed: int = 0


def test_window(sample_rate: int, cfg: TimingConfig) -> np.ndarray:
    """A fixed clip [1, N] of speech-like noise (latency does not depend on the content)."""
    n = int(round(cfg.window_s * sample_rate))
    rng = np.random.default_rng(cfg.seed)
    t = np.arange(n) / sample_rate
    x = 0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)[None]


def time_interleaved(runners: dict[tuple, Callable[[np.ndarray], object]], window: np.ndarray, cfg: TimingConfig,
                     advance: Callable[[int, int], None] = lambda done, total: None) -> tuple[dict, int]:
    """{key: latencies in ms} for every runner, timed round-robin; and the repetitions used.

    ``advance(done, total)`` reports progress after every timed call.
    """
    keys = list(runners)
    round_s = 0.0
    for _ in range(cfg.warmup):
        start = time.perf_counter()
        for k in keys:
            for _ in range(1 + cfg.settle):
                runners[k](window)
        round_s = time.perf_counter() - start
    reps = cfg.reps or int(np.clip(cfg.budget_s / max(round_s, 1e-6), cfg.min_reps, cfg.max_reps))
    times = {k: [] for k in keys}
    done = 0
    for r in range(reps):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:   # rotate so no engine always follows another
            for _ in range(cfg.settle):
                runners[k](window)
            start = time.perf_counter()
            runners[k](window)
            times[k].append((time.perf_counter() - start) * 1e3)
            done += 1
            advance(done, reps * len(keys))
    gc.collect()
    return {k: np.array(v) for k, v in times.items()}, reps
