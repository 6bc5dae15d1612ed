"""Classifier heads on clip features ``X[N, L, F]`` (L layers of pooled features; a baseline has L = 1).

``fit_head(kind, X, y, n_classes, seed, groups, **options) -> nn.Module`` whose ``forward(X[B, L, F])`` returns
logits ``[B, C]``. Every head standardises its input first, with the mean and standard deviation of each
feature computed from the training X only.

- ``"linear"``: the runtime's calibrated head (:func:`edge_ser.head.fit_linear`: class-balanced logistic
  regression with an L2 penalty chosen by speaker-grouped folds, optionally blind to the directions that tell the
  training speakers apart, a temperature fitted out of fold) on the
  concatenated layers (``layers="all"``), on one layer (an int), or on the layers chosen by the same folds
  (``"best"``: one layer; ``"auto"``: one layer or all). With fewer than ``edge_ser.head.MIN_SPEAKERS`` speakers
  in ``groups`` no choice is made from the data: every layer, the default penalty. It is what a bundle ships
  (its numbers are :attr:`LinearHead.numbers`).
- ``"mlp"``: SUPERB's learned softmax-weighted sum of the layers, then Linear-GELU-Dropout-Linear, trained with
  AdamW on small batches for a fixed number of steps.

Training is class-balanced (loss weights inversely proportional to class counts), seeded and deterministic,
and leaves torch's global random state and determinism setting as they were. Bundles ship linear heads only
(the runtime applies them in numpy); the MLP serves the feature study.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from edge_ser import head as numpy_head
from edge_ser.head import FitReport, class_weights, fit_linear

from .features import pool_layers

KINDS = ("linear", "mlp")
MIN_STEPS = 100


@dataclass
class HeadConfig:
    """Options of ``fit_head`` (linear: l2, layers; mlp: the rest)."""
    l2: float | None = None        # linear: None = chosen by speaker folds (edge_ser.head.fit_linear)
    speaker_directions: int = 0    # linear: directions telling the training speakers apart, left out of the fit
    layers: str | int | list = "auto"   # linear: "all" | "best" | "auto" | a layer index | a list of them
    hidden: int = 256
    dropout: float = 0.5
    epochs: int = 40               # mlp: passes over X, kept to MIN_STEPS..max_steps optimiser steps
    max_steps: int = 500
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05


class Standardize(nn.Module):
    """(x - mean) / std per layer and feature, with statistics fitted on training data ([L, F] buffers)."""

    def __init__(self, x: Tensor):
        super().__init__()
        std = x.std(dim=0, unbiased=False)
        self.register_buffer("mean", x.mean(dim=0))
        self.register_buffer("scale", torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.scale


class LinearHead(nn.Module):
    """Keep ``layers``, flatten, then the runtime's head (:class:`edge_ser.head.LinearHead`, ``numbers``): its torch
    twin, for distillation and torch scores. ``report`` says how it was fit."""

    def __init__(self, layers: list[int], numbers: numpy_head.LinearHead, report: FitReport | None = None):
        super().__init__()
        self.numbers, self.report = numbers, report
        self.register_buffer("layers", torch.tensor(layers, dtype=torch.long))
        self.register_buffer("mean", torch.from_numpy(numbers.mean).float())
        self.register_buffer("scale", torch.from_numpy(numbers.scale).float())
        self.linear = nn.Linear(numbers.dim, numbers.classes)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(numbers.weight))
            self.linear.bias.copy_(torch.from_numpy(numbers.bias))

    def embedding(self, x: Tensor) -> Tensor:
        """What the bundle's graph outputs: the chosen layers of ``x[B, L, F]``, flattened."""
        return x.index_select(1, self.layers).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear((self.embedding(x) - self.mean) / self.scale)


class MLPHead(nn.Module):
    """Standardise, softmax-weighted sum of the layers (SUPERB), then Linear-GELU-Dropout-Linear."""

    def __init__(self, norm: Standardize, n_layers: int, dim: int, n_classes: int, hidden: int, dropout: float):
        super().__init__()
        self.norm = norm
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.net = nn.Sequential(nn.Dropout(dropout / 2), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_classes))

    def layer_weights(self) -> Tensor:
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.net((self.norm(x) * self.layer_weights()[:, None]).sum(dim=1))


@contextmanager
def _seeded(seed: int):
    """Deterministic algorithms, one thread (small problems; results independent of the core count) and a
    seeded torch RNG inside; global state restored after."""
    before, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]), threadpool_limits(1):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.set_num_threads(threads)


def _flat(x: np.ndarray, layers: list[int]) -> np.ndarray:
    return x[:, layers].reshape(len(x), -1)


def _fit_linear(x: np.ndarray, y: np.ndarray, n_classes: int, cfg: HeadConfig, groups: np.ndarray | None,
                seed: int) -> LinearHead:
    n_layers = x.shape[1]
    every, singles = [list(range(n_layers))], [[i] for i in range(n_layers)]
    few = groups is None or len(set(groups)) < numpy_head.MIN_SPEAKERS
    if isinstance(cfg.layers, (int, list)):
        candidates = [[i % n_layers for i in np.atleast_1d(cfg.layers).tolist()]]
    elif cfg.layers == "all" or n_layers == 1 or (few and cfg.layers in ("best", "auto")):
        candidates = every   # no choice may rest on one to three speakers
    elif cfg.layers in ("best", "auto"):
        candidates = singles if cfg.layers == "best" else every + singles
    else:
        raise ValueError(f"layers must be 'all', 'best', 'auto' or a layer index, not {cfg.layers!r}")
    best = None
    for layers in candidates:   # simplest first: another candidate must do strictly better out of fold
        fit = fit_linear(_flat(x, layers), y, n_classes, groups, l2=cfg.l2, seed=seed,
                         speaker_directions=cfg.speaker_directions)
        if best is None or (fit[1].ua or 0.0) > (best[2].ua or 0.0) + 1e-9:
            best = (layers, *fit)
    head = LinearHead(*best)
    head.selected = {"layers": best[0], "l2": best[2].l2}
    return head


def _fit_mlp(norm: Standardize, x: Tensor, y: np.ndarray, n_classes: int, cfg: HeadConfig) -> MLPHead:
    head = MLPHead(norm, x.shape[1], x.shape[2], n_classes, cfg.hidden, cfg.dropout)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch, len(y))
    steps = max(MIN_STEPS, min(cfg.max_steps, cfg.epochs * -(-len(y) // batch)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    weights, yt = torch.from_numpy(class_weights(y, n_classes)).float(), torch.from_numpy(y)
    order = torch.randperm(len(y))
    pos = 0
    head.train()
    for _ in range(steps):
        if pos + batch > len(y):
            order, pos = torch.randperm(len(y)), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss = F.cross_entropy(head(x[idx]), yt[idx], weight=weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head.eval()


def fit_head(kind: str, X, y, n_classes: int, seed: int = 0, groups=None, **options) -> nn.Module:
    """Fit a ``kind`` head ("linear" | "mlp") on ``X[N, L, F]`` (or ``[N, F]``) and labels ``y`` in [0, n_classes).

    ``groups`` (e.g. speaker per clip) makes the linear head's inner cross-validation speaker-independent.
    ``options`` are ``HeadConfig`` fields. Returns the head in eval mode: ``forward(X[B, L, F]) -> logits[B, C]``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown head {kind!r}; use one of {', '.join(KINDS)}")
    cfg = HeadConfig(**options)
    x = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    if x.ndim == 2:
        x = x[:, None]
    y = np.asarray(y, dtype=np.int64)
    groups = None if groups is None else np.asarray(groups)
    if x.ndim != 3 or len(x) != len(y):
        raise ValueError(f"X must be [N, L, F] (or [N, F]) with one label per row; got X {tuple(x.shape)}, "
                         f"{len(y)} labels")
    with _seeded(seed):
        if kind == "linear":
            return _fit_linear(x.double().numpy(), y, n_classes, cfg, groups, seed).eval()
        return _fit_mlp(Standardize(x), x, y, n_classes, cfg)


def head_inputs(layers: list[int]) -> str:
    """Which hidden states a linear head reads, for people (manifest, model card)."""
    return f"layer {layers[0]} (mean+std pooled)" if len(layers) == 1 else \
        f"layers {', '.join(map(str, layers))} (mean+std pooled, concatenated)"


def predict(head: nn.Module, X) -> np.ndarray:
    """Class probabilities [N, C] of a fitted head."""
    x = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    with torch.inference_mode():
        return torch.softmax(head(x if x.ndim == 3 else x[:, None]), dim=-1).numpy()


class EmotionModel(nn.Module):
    """``audio[B, N] -> probs[B, C]``: encoder hidden states, pooled per layer, then the linear head;
    ``embedder`` is the part a bundle's graph holds (``audio -> embedding``), the head ships as numbers."""

    def __init__(self, encoder: nn.Module, head: LinearHead):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.embedder = Embedder(encoder, head)

    def forward(self, audio: Tensor) -> Tensor:
        return torch.softmax(self.head(pool_layers(self.encoder(audio))), dim=-1)


class Embedder(nn.Module):
    """``audio[B, N] -> embedding[B, D]``: the pooled layers a linear head reads (without ``head``: all of them),
    flattened."""

    def __init__(self, encoder: nn.Module, head: LinearHead | None = None):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, audio: Tensor) -> Tensor:
        pooled = pool_layers(self.encoder(audio))
        return pooled.flatten(1) if self.head is None else self.head.embedding(pooled)
