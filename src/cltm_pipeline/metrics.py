"""Evaluation metrics in plain numpy: the performance measures P of DESIGN.md §1 (higher is better).

Each function takes the true and predicted labels of one evaluation set; labels may be strings or
integers. Results are Python floats so they serialise to JSON as they are.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["macro_f1", "accuracy", "eer", "min_dcf", "auc"]


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


# --------------------------------------------------------------------------------------------------
# Verification trials: scores (higher = more likely the same speaker) and labels (1 target, 0 non-target)
# --------------------------------------------------------------------------------------------------


def _trials(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Target and non-target scores, each sorted ascending; both kinds must be present."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got shapes {s.shape} and {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    tgt, non = np.sort(s[y == 1]), np.sort(s[y == 0])
    if tgt.size == 0 or non.size == 0 or tgt.size + non.size != s.size:
        raise ValueError("labels must be 0 (non-target) or 1 (target), with at least one of each")
    return tgt, non


def _error_rates(tgt: np.ndarray, non: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every candidate threshold (each score and each midpoint; accept iff > t).

    The same candidates as speechbrain's EER/minDCF, computed by binary search in O(n log n) instead of
    its O(n^2) loop, so 10^6 trials take well under a second.
    """
    u = np.unique(np.concatenate([tgt, non]))
    t = np.sort(np.concatenate([u, (u[:-1] + u[1:]) / 2]))
    p_miss = np.searchsorted(tgt, t, side="right") / tgt.size
    p_fa = (non.size - np.searchsorted(non, t, side="right")) / non.size
    return p_miss, p_fa


def eer(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Equal error rate: (miss + false alarm) / 2 at the threshold where they are closest (speechbrain's rule)."""
    p_miss, p_fa = _error_rates(*_trials(scores, labels))
    i = int(np.argmin(np.abs(p_fa - p_miss)))  # first of equals, as speechbrain
    return float((p_miss[i] + p_fa[i]) / 2)


def min_dcf(scores: Sequence[float], labels: Sequence[int], p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised minimum detection cost (NIST SRE / Kaldi): min over thresholds of C_det / C_default.

    C_det = c_miss P_miss p_target + c_fa P_fa (1 - p_target); C_default = min(c_miss p_target,
    c_fa (1 - p_target)), the cost of always rejecting or always accepting. 0 is perfect, 1 is no better
    than a trivial system.
    """
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    p_miss, p_fa = _error_rates(*_trials(scores, labels))
    c_det = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    return float(np.min(c_det) / min(c_miss * p_target, c_fa * (1 - p_target)))


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: the probability a target trial outscores a non-target one (ties count half)."""
    tgt, non = _trials(scores, labels)
    # for each target score: non-targets strictly below, plus half of those equal
    below = np.searchsorted(non, tgt, side="left")
    equal = np.searchsorted(non, tgt, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (tgt.size * non.size))
