"""Classification metrics used everywhere: UA (mean per-class recall), WA (accuracy), macro-F1, and the expected
calibration error of probabilities."""
from __future__ import annotations

import numpy as np


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return m


def scores(y_true, y_pred, n_classes: int) -> dict:
    """UA, WA and macro-F1 over the classes present in y_true (absent classes are not averaged in)."""
    m = confusion(y_true, y_pred, n_classes)
    support = m.sum(1)
    present = support > 0
    tp = np.diag(m).astype(float)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=present)
    predicted = m.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    n = int(support.sum())
    return {
        "ua": float(recall[present].mean()) if n else float("nan"),
        "wa": float(tp.sum() / n) if n else float("nan"),
        "f1": float(f1[present].mean()) if n else float("nan"),
        "n": n,
    }


def recalls(y_true, y_pred, labels: list[str]) -> dict[str, float]:
    """Recall of each label present in y_true."""
    m = confusion(y_true, y_pred, len(labels))
    return {lab: float(m[i, i] / m[i].sum()) for i, lab in enumerate(labels) if m[i].sum()}


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |accuracy - confidence| of the top label, averaged over equal-width bins."""
    top, right = probs.max(1), (probs.argmax(1) == y)
    which = np.minimum((top * bins).astype(int), bins - 1)
    return float(sum(abs(right[which == b].mean() - top[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))
