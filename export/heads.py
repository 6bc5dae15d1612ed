"""Classifier heads on clip features ``X[N, L, F]`` (L layers of pooled features; a baseline has L = 1).

``fit_head(kind, X, y, n_classes, seed, groups, **options) -> nn.Module`` whose ``forward(X[B, L, F])`` returns
logits ``[B, C]``. Every head starts with ``Standardize``: the mean and standard deviation of each layer and
feature, computed from the training X only and stored as buffers, so they travel into exported graphs.

- ``"linear"``: multinomial logistic regression with an L2 penalty on the concatenated layers (``layers="all"``),
  on one layer (an int), or on the layer chosen by inner cross-validation (``"best"``; ``"auto"`` also lets
  "all" compete). The penalty, when not given, is chosen by inner cross-validation from ``L2_GRID``. Inner folds
  are disjoint groups of the training speakers (``groups``), or of clips when no groups are given.
- ``"mlp"``: SUPERB's learned softmax-weighted sum of the layers, then Linear-GELU-Dropout-Linear, trained with
  AdamW on small batches for a fixed number of steps.

Training is class-balanced (loss weights inversely proportional to class counts), seeded and deterministic,
and leaves torch's global random state and determinism setting as they were.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from edge_ser.metrics import scores

from .features import pool_layers

KINDS = ("linear", "mlp")     # and "auto" in choose_head
L2_GRID = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)   # strongest first: ties go to the simpler model
MIN_STEPS = 100


@dataclass
class HeadConfig:
    """Options of ``fit_head`` (linear: l2, layers, inner_folds; mlp: the rest)."""
    l2: float | None = None        # linear: None = chosen by inner CV from L2_GRID
    layers: str | int = "best"     # linear: "all" | "best" | "auto" | a layer index
    inner_folds: int = 3
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
    """Standardise, keep ``layers``, flatten, one linear layer."""

    def __init__(self, norm: Standardize, layers: list[int], weight: Tensor, bias: Tensor):
        super().__init__()
        self.norm = norm
        self.register_buffer("layers", torch.tensor(layers, dtype=torch.long))
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x).index_select(1, self.layers).flatten(1))


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


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """N / (classes present * count) per class; 0 for classes absent from y."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return np.divide(len(y), (counts > 0).sum() * counts, out=np.zeros(n_classes), where=counts > 0)


def row_space(z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(z V, V^T) with V an orthonormal basis of z's row space when F > N, else (z, None).

    L2-penalised logistic regression on z V is exactly the one on z (its optimum lies in the row space),
    with N instead of F weights per class; map weights back with ``w @ V^T``.
    """
    if z.shape[1] <= z.shape[0]:
        return z, None
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    return u * s, vt


def logistic(z: np.ndarray, y: np.ndarray, n_classes: int, l2: float, weights: np.ndarray,
             init: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weights [C, F] and bias [C] minimising class-weighted mean cross-entropy + l2/2 |W|^2 (float64, L-BFGS)."""
    n, f = z.shape
    onehot = np.eye(n_classes)[y]
    sample_w = weights[y] / weights[y].sum()

    def loss_grad(theta):
        w, b = theta[:n_classes * f].reshape(n_classes, f), theta[n_classes * f:]
        logits = z @ w.T + b
        logits -= logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        loss = -(sample_w * (logp * onehot).sum(1)).sum() + 0.5 * l2 * (w * w).sum()
        g = (np.exp(logp) - onehot) * sample_w[:, None]
        return loss, np.concatenate([(g.T @ z + l2 * w).ravel(), g.sum(0)])

    theta = np.zeros(n_classes * (f + 1)) if init is None else np.concatenate([init[0].ravel(), init[1]])
    theta = minimize(loss_grad, theta, jac=True, method="L-BFGS-B", options={"maxiter": 300, "gtol": 1e-5}).x
    return theta[:n_classes * f].reshape(n_classes, f), theta[n_classes * f:]


def inner_folds(y: np.ndarray, groups: np.ndarray | None, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs: k disjoint groups of ``groups`` (speakers), else stratified clip folds."""
    rng = np.random.default_rng(seed)
    if groups is not None and len(set(groups)) >= 2:
        unique = np.array(sorted(set(groups)))
        parts = np.array_split(rng.permutation(unique), min(k, len(unique)))
        fold_of = np.empty(len(y), dtype=int)
        for i, part in enumerate(parts):
            fold_of[np.isin(groups, part)] = i
    else:
        fold_of = np.empty(len(y), dtype=int)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            fold_of[rng.permutation(idx)] = np.arange(len(idx)) % k
    return [(np.flatnonzero(fold_of != i), np.flatnonzero(fold_of == i)) for i in np.unique(fold_of)]


def _flat(z: np.ndarray, layers: list[int]) -> np.ndarray:
    return z[:, layers].reshape(len(z), -1)


def _select_linear(z: np.ndarray, y: np.ndarray, n_classes: int, cfg: HeadConfig, candidates: list[list[int]],
                   groups: np.ndarray | None, seed: int) -> tuple[list[int], float]:
    """The (layers, l2) with the best pooled inner-CV UA over the training data."""
    grid = L2_GRID if cfg.l2 is None else (cfg.l2,)
    folds = inner_folds(y, groups, cfg.inner_folds, seed)
    best, best_ua = (candidates[0], grid[0]), -1.0
    for layers in candidates:
        x = _flat(z, layers)
        pred = {l2: np.empty(len(y), dtype=int) for l2 in grid}
        for tr, va in folds:
            init, weights = None, class_weights(y[tr], n_classes)
            z_tr, vt = row_space(x[tr])
            z_va = x[va] if vt is None else x[va] @ vt.T
            for l2 in grid:   # warm start from the next stronger penalty
                init = logistic(z_tr, y[tr], n_classes, l2, weights, init)
                pred[l2][va] = (z_va @ init[0].T + init[1]).argmax(1)
        for l2 in grid:
            ua = scores(y, pred[l2], n_classes)["ua"]
            if ua > best_ua + 1e-9:
                best, best_ua = (layers, l2), ua
    return best


def _fit_linear(norm: Standardize, x: Tensor, y: np.ndarray, n_classes: int, cfg: HeadConfig,
                groups: np.ndarray | None, seed: int) -> LinearHead:
    n_layers = x.shape[1]
    z = norm(x).double().numpy()
    every, singles = [list(range(n_layers))], [[i] for i in range(n_layers)]
    if isinstance(cfg.layers, int):
        candidates = [[cfg.layers % n_layers]]
    elif cfg.layers == "all" or (n_layers == 1 and cfg.layers in ("best", "auto")):
        candidates = every
    elif cfg.layers in ("best", "auto"):
        candidates = singles if cfg.layers == "best" else every + singles
    else:
        raise ValueError(f"layers must be 'all', 'best', 'auto' or a layer index, not {cfg.layers!r}")
    if len(candidates) > 1 or cfg.l2 is None:
        layers, l2 = _select_linear(z, y, n_classes, cfg, candidates, groups, seed)
    else:
        layers, l2 = candidates[0], cfg.l2
    z, vt = row_space(_flat(z, layers))
    w, b = logistic(z, y, n_classes, l2, class_weights(y, n_classes))
    w = w if vt is None else w @ vt
    head = LinearHead(norm, layers, torch.from_numpy(w).float(), torch.from_numpy(b).float())
    head.selected = {"layers": layers, "l2": l2}
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
        norm = Standardize(x)
        if kind == "linear":
            return _fit_linear(norm, x, y, n_classes, cfg, groups, seed).eval()
        return _fit_mlp(norm, x, y, n_classes, cfg)


HEAD_CANDIDATES = {"linear-layer": ("linear", {"layers": "best"}), "linear-all": ("linear", {"layers": "all"}),
                   "mlp": ("mlp", {})}


def choose_head(kind: str, X, y, n_classes: int, groups, seed: int = 0, folds: int = 3) -> tuple[str, dict, dict]:
    """(kind, options, inner-CV UA per candidate): ``kind`` "linear" or "mlp" as given; "auto" picks among one
    layer (linear), every layer concatenated (linear) and a learned weighted sum of layers (mlp) by the pooled UA
    of inner cross-validation over the groups (speakers) of the training data only."""
    if kind != "auto":
        return kind, {}, {}
    X, y = np.asarray(X), np.asarray(y)
    splits = inner_folds(y, np.asarray(groups), folds, seed)
    uas = {}
    for name, (k, options) in HEAD_CANDIDATES.items():
        pred = np.empty(len(y), dtype=int)
        for tr, va in splits:
            head = fit_head(k, X[tr], y[tr], n_classes, seed=seed, groups=np.asarray(groups)[tr], **options)
            pred[va] = predict(head, X[va]).argmax(1)
        uas[name] = scores(y, pred, n_classes)["ua"]
    best = next(iter(HEAD_CANDIDATES))
    for name in HEAD_CANDIDATES:    # simplest first: another candidate must do strictly better
        if uas[name] > uas[best] + 1e-9:
            best = name
    return (*HEAD_CANDIDATES[best], uas)


def head_inputs(head: nn.Module) -> str:
    """Which hidden states a fitted head reads, for people (manifest, model card)."""
    layers = getattr(head, "layers", None)
    if layers is None:
        return "a learned softmax-weighted sum of every layer (mean+std pooled)"
    layers = layers.tolist()
    return f"layer {layers[0]} (mean+std pooled)" if len(layers) == 1 else \
        f"layers {', '.join(map(str, layers))} (mean+std pooled, concatenated)"


def predict(head: nn.Module, X) -> np.ndarray:
    """Class probabilities [N, C] of a fitted head."""
    x = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    with torch.inference_mode():
        return torch.softmax(head(x if x.ndim == 3 else x[:, None]), dim=-1).numpy()


class EmotionModel(nn.Module):
    """``audio[B, N] -> probs[B, C]``: encoder hidden states, pooled per layer, then the head (one graph)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, audio: Tensor) -> Tensor:
        return torch.softmax(self.head(pool_layers(self.encoder(audio))), dim=-1)
