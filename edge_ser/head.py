"""The head: the small classifier the runtime applies to a variant's pooled embedding, and its fitting in numpy.

Every graph of a bundle maps audio to ``embedding[B, dim]`` (pooled hidden states, see ``Head.inputs`` in the
manifest); the head maps that to probabilities, ``softmax(((e - mean) / scale) @ weight.T + bias)``. Its numbers
are a separate checksummed file of the bundle, an uncompressed ``.npz`` of float32 arrays ``mean[dim]``,
``scale[dim]``, ``weight[labels, dim]``, ``bias[labels]`` read without pickle, so ``edge-ser adapt`` can
replace it without touching the encoder files.

Fitting (``edge-ser adapt`` and the export toolchain's heads use the same rule): class-balanced multinomial
logistic regression with an L2 penalty on standardised features. The penalty is chosen by speaker-grouped folds
when the data has at least :data:`MIN_SPEAKERS` speakers (leave-one-speaker-out up to :data:`MAX_FOLDS`
speakers); with fewer, no choice may rest on one to three speakers, so the robust default :data:`DEFAULT_L2` is
used and the estimate comes from those few speakers (or, with one speaker, from clip folds: not
speaker-independent). A temperature fitted on the out-of-fold predictions is folded into the weights, so the
probabilities are calibrated; its expected calibration error is reported.
"""
from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .errors import BundleError, EdgeSerError
from .metrics import ece, scores

ARRAYS = ("mean", "scale", "weight", "bias")
MAX_HEAD_BYTES = 64 << 20
L2_GRID = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)   # strongest first: ties go to the simpler model
DEFAULT_L2 = 0.1          # below MIN_SPEAKERS speakers (a robust choice on every corpus of the adapt benchmark)
MIN_SPEAKERS = 4          # fewer speakers: no choice is made from the data (DEFAULT_L2)
BLIND_MIN_SPEAKERS = 10   # fewer speakers: no speaker direction is removed (few cannot tell them from the labels')
MAX_FOLDS = 5             # leave-one-speaker-out up to this many speakers, else this many speaker groups
CLIP_FOLDS = 4            # one speaker: stratified clip folds (not speaker-independent)
UNSURE_BELOW = 0.5        # calibrated top probability under which an event is marked unsure
SHARPEN_MIN_CLIPS = 20    # clips per label a temperature below 1 (sharper probabilities) needs


@dataclass
class LinearHead:
    mean: np.ndarray     # [dim]
    scale: np.ndarray    # [dim], positive
    weight: np.ndarray   # [classes, dim]
    bias: np.ndarray     # [classes]

    @property
    def dim(self) -> int:
        return len(self.mean)

    @property
    def classes(self) -> int:
        return len(self.bias)

    def logits(self, e: np.ndarray) -> np.ndarray:
        return ((np.asarray(e, np.float64) - self.mean) / self.scale) @ self.weight.T + self.bias

    def probs(self, e: np.ndarray) -> np.ndarray:
        return softmax(self.logits(e)).astype(np.float32)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(getattr(self, k), np.float32) for k in ARRAYS})
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, dim: int, classes: int, where: str) -> LinearHead:
        """A head from untrusted bytes: exactly the four arrays, stored uncompressed, float32, of the shapes the
        manifest gives, finite, with positive scales."""
        bad = f"{where} is not an edge-ser head ({{}}); re-export the bundle"
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                infos = {i.filename: i for i in z.infolist()}
                if sorted(infos) != sorted(f"{k}.npy" for k in ARRAYS):
                    raise BundleError(bad.format(f"arrays {sorted(infos)}"))
                if any(i.compress_type != zipfile.ZIP_STORED or i.file_size > MAX_HEAD_BYTES for i in infos.values()):
                    raise BundleError(bad.format("compressed or oversized arrays"))
                shapes = {"mean": (dim,), "scale": (dim,), "weight": (classes, dim), "bias": (classes,)}
                arrays = {k: _npy(z.read(f"{k}.npy"), k, shapes[k], bad,
                                  f"{classes} labels and {dim} numbers per clip") for k in ARRAYS}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise BundleError(bad.format(str(e).splitlines()[0][:100] if str(e) else type(e).__name__)) from None
        for k, a in arrays.items():
            if not np.isfinite(a).all():
                raise BundleError(bad.format(f"{k} holds NaN or Inf"))
        if (arrays["scale"] <= 0).any():
            raise BundleError(bad.format("a scale is not positive"))
        return cls(**{k: a.astype(np.float64) for k, a in arrays.items()})


def _npy(data: bytes, name: str, shape: tuple[int, ...], bad: str, context: str) -> np.ndarray:
    """A float32 array of ``shape`` from untrusted .npy bytes: the header and the data's size are checked before the
    shape it declares sizes any allocation (numpy allocates the whole array before reading its data)."""
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise BundleError(bad.format(f"{name} is .npy version {version}"))
    declared, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                          np.lib.format.read_array_header_2_0)(f)
    if dtype != np.float32 or declared != shape:
        raise BundleError(bad.format(f"{name} is {dtype}{list(declared)}, not float32{list(shape)} for {context}"))
    if len(data) - f.tell() != 4 * math.prod(shape):
        raise BundleError(bad.format(f"{name} holds {len(data) - f.tell()} bytes of data, not {4 * math.prod(shape)}"))
    f.seek(0)
    return np.load(f, allow_pickle=False)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------- fitting
def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """N / (classes present * count) per class; 0 for classes absent from y."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return np.divide(len(y), (counts > 0).sum() * counts, out=np.zeros(n_classes), where=counts > 0)


def row_space(z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(z V, V^T) with V an orthonormal basis of z's row space when F > 2 N, else (z, None).

    L2-penalised logistic regression on z V is exactly the one on z (its optimum lies in the row space),
    with N instead of F weights per class; map weights back with ``w @ V^T``. V comes from the eigenvectors of the
    N x N Gram matrix (z z^T = U S^2 U^T, z V = U S), several times cheaper than an SVD of z, but still O(N^3):
    with N above F / 2 it costs more than it saves (thousands of clips).
    """
    if z.shape[1] <= 2 * z.shape[0]:
        return z, None
    s2, u = np.linalg.eigh(z @ z.T)
    keep = s2 > s2.max() * 1e-10
    s, u = np.sqrt(s2[keep]), u[:, keep]
    return u * s, (z.T @ (u / s)).T


def logistic(z: np.ndarray, y: np.ndarray, n_classes: int, l2: float, weights: np.ndarray,
             init: tuple[np.ndarray, np.ndarray] | None = None, tol: float = 1e-5,
             max_iter: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Weights [C, F] and bias [C] minimising class-weighted mean cross-entropy + l2/2 |W|^2 (float64, L-BFGS)."""
    n, f = z.shape
    onehot = np.eye(n_classes)[y]
    sw = weights[y] / weights[y].sum()
    za = np.hstack([z, np.ones((n, 1))])
    reg = np.full(f + 1, l2)
    reg[-1] = 0.0   # the bias is not penalised

    def loss_grad(flat):
        theta = flat.reshape(n_classes, f + 1)
        logits = za @ theta.T
        logits -= logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        g = (np.exp(logp) - onehot) * sw[:, None]
        loss = -(sw * (logp * onehot).sum(1)).sum() + 0.5 * (reg * theta * theta).sum()
        return loss, (g.T @ za + reg * theta).ravel()

    theta = np.zeros((n_classes, f + 1)) if init is None else np.hstack([init[0], init[1][:, None]])
    theta = lbfgs(loss_grad, theta.ravel(), tol, max_iter).reshape(n_classes, f + 1)
    return theta[:, :f], theta[:, f]


def lbfgs(fun, x: np.ndarray, tol: float, max_iter: int, memory: int = 10) -> np.ndarray:
    """Minimise a smooth ``fun(x) -> (value, gradient)`` by L-BFGS with a backtracking (Armijo) line search, until
    the gradient norm is below ``tol``."""
    fx, g = fun(x)
    pairs: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(max_iter):
        if np.linalg.norm(g) < tol:
            break
        q, alphas = g.copy(), []
        for s, y, rho in reversed(pairs):
            a = rho * (s @ q)
            q -= a * y
            alphas.append(a)
        s, y, _ = pairs[-1] if pairs else (g, g, 0.0)
        q *= (s @ y) / (y @ y) if pairs else 1.0 / max(1.0, np.linalg.norm(g))
        for (s, y, rho), a in zip(pairs, reversed(alphas)):
            q += s * (a - rho * (y @ q))
        d, slope = -q, -(g @ q)
        if slope >= 0:   # not a descent direction: start the memory over
            d, slope, pairs = -g, -(g @ g), []
        step = 1.0
        while True:
            x_new = x + step * d
            f_new, g_new = fun(x_new)
            if f_new <= fx + 1e-4 * step * slope or step < 1e-12:
                break
            step *= 0.5
        s, y = x_new - x, g_new - g
        if s @ y > 1e-12:
            pairs = [*pairs[-(memory - 1):], (s, y, 1.0 / (s @ y))]
        x, fx, g = x_new, f_new, g_new
    return x


def inner_folds(y: np.ndarray, groups: np.ndarray | None, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs: k disjoint groups of ``groups`` (speakers), else stratified clip folds."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=int)
    if groups is not None and len(set(groups)) >= 2:
        unique = np.array(sorted(set(groups)))
        for i, part in enumerate(np.array_split(rng.permutation(unique), min(k, len(unique)))):
            fold_of[np.isin(groups, part)] = i
    else:
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            fold_of[rng.permutation(idx)] = np.arange(len(idx)) % k
    return [(np.flatnonzero(fold_of != i), np.flatnonzero(fold_of == i)) for i in np.unique(fold_of)]


def fit_temperature(logits: np.ndarray, y: np.ndarray, lowest: float = 0.05) -> float:
    """The T in [lowest, 20] minimising the cross-entropy of softmax(logits / T) (golden-section search on log T)."""
    def nll(log_t):
        z = logits / np.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean()
    lo, hi, g = np.log(lowest), np.log(20.0), (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        lo, hi = (lo, b) if nll(a) < nll(b) else (a, hi)
    return float(np.exp((lo + hi) / 2))


@dataclass
class FitReport:
    """How a head was fit and what cross-validation says of it (the numbers a manifest and card report)."""

    l2: float
    penalty: str                  # how l2 was set: "chosen by the folds", "default" or "given"
    protocol: str                 # which folds the estimate comes from
    speaker_independent: bool
    ua: float | None = None       # pooled out-of-fold UA at the kept l2
    ua_spread: float | None = None   # standard deviation of the per-fold UAs
    fold_ua: list[float] = field(default_factory=list)
    temperature: float = 1.0
    ece: float | None = None      # of the out-of-fold probabilities after temperature scaling
    ece_before: float | None = None
    speaker_directions: int = 0   # directions that tell the training speakers apart, removed before the fit

    @property
    def chosen(self) -> bool:
        return self.penalty == "chosen by the folds"

    def summary(self) -> str:
        est = f"UA {self.ua:.3f} +/- {self.ua_spread:.3f}" if self.ua is not None else "no estimate"
        blind = f", blind to {self.speaker_directions} speaker directions" if self.speaker_directions else ""
        return (f"logistic regression, L2 {self.l2:g} ({self.penalty}){blind}; "
                f"{est} ({self.protocol}); temperature {self.temperature:.2f}"
                + (f", ECE {self.ece_before:.3f} -> {self.ece:.3f}" if self.ece is not None else ""))


def _folds(y: np.ndarray, groups: np.ndarray | None, seed: int) -> tuple[list, str, bool]:
    speakers = sorted(set(groups)) if groups is not None else []
    if len(speakers) >= 2:
        k = min(len(speakers), MAX_FOLDS)
        what = "leave-one-speaker-out" if k == len(speakers) else f"{k} speaker-grouped folds"
        return inner_folds(y, groups, k, seed), f"{what} over {len(speakers)} speakers", True
    k = max(2, min(CLIP_FOLDS, int(np.bincount(y).min())))
    return inner_folds(y, None, k, seed), f"{k} clip folds of one speaker: NOT speaker-independent", False


def _speaker_basis(z: np.ndarray, y: np.ndarray, groups: np.ndarray, dims: int) -> np.ndarray:
    """The ``dims`` directions (orthonormal rows ``[dims, F]``) along which the speakers' class means of ``z`` depart
    most from each class's mean: what tells speakers apart rather than labels (nuisance attribute projection,
    Solomonoff et al. 2005). Out of domain it helps: a new corpus is new speakers, microphones and rooms."""
    rows = [z[(y == c) & (groups == g)].mean(0) - z[y == c].mean(0)
            for c in np.unique(y) for g in np.unique(groups[y == c])]
    return np.linalg.svd(np.array(rows), full_matrices=False)[2][:dims]


def _project_out(z: np.ndarray, p: np.ndarray | None) -> np.ndarray:
    return z if p is None else z - (z @ p.T) @ p


def fit_linear(X: np.ndarray, y: np.ndarray, n_classes: int, groups=None, l2: float | None = None,
               seed: int = 0, speaker_directions: int = 0) -> tuple[LinearHead, FitReport]:
    """A calibrated linear head on embeddings ``X[N, dim]`` with labels ``y`` in [0, n_classes), and its report.

    ``groups`` (the speaker of each clip) makes the folds speaker-independent; ``l2`` fixes the penalty.
    ``speaker_directions`` > 0 fits the head blind to that many directions that tell the training speakers apart
    (:func:`_speaker_basis`, found in each fold's training speakers; its weights are orthogonal to them, so the
    runtime applies it as any head); with fewer than :data:`BLIND_MIN_SPEAKERS` speakers none is removed.
    """
    X, y = np.asarray(X, np.float64), np.asarray(y, np.int64).reshape(-1)
    groups = None if groups is None else np.asarray(groups)
    if X.ndim != 2 or len(X) != len(y) or (groups is not None and groups.shape != y.shape):
        raise EdgeSerError(f"a head needs embeddings [clips, dim] with one label (and speaker, if given) per clip; "
                           f"got embeddings {list(X.shape)}, {len(y)} labels"
                           + (f", {groups.size} speakers" if groups is not None else ""))
    if ((y < 0) | (y >= n_classes)).any():
        raise EdgeSerError(f"labels must be numbered 0..{n_classes - 1}, not {sorted(set(y.tolist()))[:10]}")
    present = np.bincount(y, minlength=n_classes)
    if n_classes < 2 or (present < 2).any():
        raise EdgeSerError(f"a head needs at least 2 clips of each of at least 2 labels (got {present.tolist()} "
                           "clips per label)")
    if not np.isfinite(X).all() or np.abs(X).max() > np.finfo(np.float32).max:
        raise EdgeSerError("embeddings hold NaN, Inf or numbers beyond float32 (what a head stores); the encoder is "
                           "broken")
    if l2 is not None and not (np.isfinite(l2) and l2 >= 0):
        raise EdgeSerError(f"l2 must be a finite number >= 0, not {l2!r}")
    if speaker_directions < 0:
        raise EdgeSerError(f"speaker_directions must be 0 or more, not {speaker_directions}")
    folds, protocol, independent = _folds(y, groups, seed)
    n_speakers = len(set(groups)) if groups is not None else 1
    grid = (l2,) if l2 is not None else (L2_GRID if n_speakers >= MIN_SPEAKERS else (DEFAULT_L2,))
    dims = speaker_directions if n_speakers >= BLIND_MIN_SPEAKERS else 0

    def blind(z, idx):   # standardised features of clips idx without their speakers' directions, and those
        p = _speaker_basis(z, y[idx], groups[idx], dims) if dims else None
        return _project_out(z, p), p

    oof = {c: np.zeros((len(y), n_classes)) for c in grid}
    for tr, va in folds:
        mean, scale = _standardiser(X[tr])
        z_tr, vt = row_space(blind((X[tr] - mean) / scale, tr)[0])
        z_va = (X[va] - mean) / scale
        z_va = z_va if vt is None else z_va @ vt.T
        init = None
        for c in grid:   # warm start from the next stronger penalty
            init = logistic(z_tr, y[tr], n_classes, c, class_weights(y[tr], n_classes), init)
            oof[c][va] = z_va @ init[0].T + init[1]
    ua = {c: scores(y, oof[c].argmax(1), n_classes)["ua"] for c in grid}
    best = grid[0]
    for c in grid:
        if ua[c] > ua[best] + 1e-9:
            best = c
    fold_ua = [scores(y[va], oof[best][va].argmax(1), n_classes)["ua"] for _, va in folds]
    # few out-of-fold predictions cannot show that a head is underconfident: then the temperature only softens
    temperature = fit_temperature(oof[best], y, 0.05 if len(y) >= SHARPEN_MIN_CLIPS * n_classes else 1.0)
    report = FitReport(l2=best, penalty="given" if l2 is not None else "chosen by the folds" if len(grid) > 1
                       else "default", protocol=protocol, speaker_independent=independent,
                       ua=ua[best], ua_spread=float(np.std(fold_ua)), fold_ua=fold_ua, temperature=temperature,
                       ece=ece(softmax(oof[best] / temperature), y), ece_before=ece(softmax(oof[best]), y),
                       speaker_directions=dims)
    mean, scale = _standardiser(X)
    z, p = blind((X - mean) / scale, slice(None))
    z, vt = row_space(z)
    w, b = logistic(z, y, n_classes, best, class_weights(y, n_classes))
    w = _project_out(w if vt is None else w @ vt, p)
    return LinearHead(mean, scale, w / temperature, b / temperature), report


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    std = x.std(axis=0)
    return x.mean(axis=0), np.where(std > 1e-6, std, 1.0)
