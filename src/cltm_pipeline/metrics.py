"""Evaluation metrics in plain numpy: the performance measures P of DESIGN.md §1 (higher is better).

Each function takes the true and predicted labels of one evaluation set; labels may be strings or
integers. Results are Python floats so they serialise to JSON as they are.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["macro_f1", "accuracy"]


def _pair(y_true: Sequence, y_pred: Sequence) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got shapes {t.shape} and {p.shape}")
    if t.size == 0:
        raise ValueError("cannot score an empty evaluation set")
    return t, p


def macro_f1(
    y_true: Sequence, y_pred: Sequence, labels: Sequence = ("female", "male"), zero_division: float = 0.0
) -> float:
    """Unweighted mean over ``labels`` of the per-label F1 = 2 TP / (2 TP + FP + FN).

    A label that is neither present nor predicted has an undefined F1, scored ``zero_division`` (0, as in
    scikit-learn's ``f1_score(average="macro", labels=labels)``). A label that is present but never
    predicted scores 0, so always predicting one class gives at most 2/3 on a balanced binary set.
    """
    t, p = _pair(y_true, y_pred)
    if len(labels) == 0:
        raise ValueError("macro_f1 needs at least one label")
    scores = []
    for label in labels:
        tp = np.sum((t == label) & (p == label))
        fp = np.sum((t != label) & (p == label))
        fn = np.sum((t == label) & (p != label))
        denom = 2 * tp + fp + fn
        scores.append(2.0 * tp / denom if denom else float(zero_division))
    return float(np.mean(scores))


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Share of predictions equal to the truth."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))
