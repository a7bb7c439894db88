"""EER, minDCF and AUC against scikit-learn and speechbrain, including ties, tiny lists and real trial scores."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import roc_auc_score
from speechbrain.utils.metric_stats import EER as sb_eer
from speechbrain.utils.metric_stats import minDCF as sb_min_dcf

from cltm_pipeline.metrics import auc, eer, min_dcf


def speechbrain(scores, labels, p_target=None):
    s, y = torch.tensor(scores, dtype=torch.float64), torch.tensor(labels)
    pos, neg = s[y == 1], s[y == 0]
    if p_target is None:
        return sb_eer(pos, neg)[0]
    raw = sb_min_dcf(pos, neg, c_miss=1.0, c_fa=1.0, p_target=p_target)[0]
    return raw / min(p_target, 1 - p_target)  # speechbrain's minDCF is not normalised


CASES = {
    "tiny": ([0.9, 0.1], [1, 0]),
    "swapped": ([0.1, 0.9], [1, 0]),
    "ties": ([0.5, 0.5, 0.5, 0.2, 0.8, 0.5], [1, 0, 1, 0, 1, 0]),
    "all tied": ([1.0] * 6, [1, 0, 1, 0, 1, 0]),
    "three": ([0.3, 0.6, 0.2], [1, 1, 0]),
    "random": (list(np.random.default_rng(0).normal(size=300)), list(np.random.default_rng(1).integers(0, 2, 300))),
    "quantised": (list(np.round(np.random.default_rng(2).normal(size=400), 1)),
                  list(np.random.default_rng(3).integers(0, 2, 400))),
}


@pytest.mark.parametrize("name", CASES)
def test_against_scikit_learn_and_speechbrain(name):
    scores, labels = CASES[name]
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert eer(scores, labels) == pytest.approx(speechbrain(scores, labels), abs=1e-6)
    for p in (0.01, 0.05):
        assert min_dcf(scores, labels, p) == pytest.approx(speechbrain(scores, labels, p), abs=1e-5)


def test_known_values():
    assert eer([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 0.0 and auc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 1.0 and auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert auc([0.5, 0.5], [1, 0]) == 0.5
    assert min_dcf([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 0.01) == pytest.approx(1.0)  # no better than rejecting all


def test_real_study_trial_scores(realworld):
    """zh-HK speaker-verification trials of the reference study (3,850 trials, 1,925 target)."""
    df = pl.read_csv(realworld / "seed_sv_scores" / "test_scores.tsv", separator="\t")
    scores, labels = df["score"].to_list(), df["label"].to_list()
    assert len(labels) == 3850 and sum(labels) == 1925
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert eer(scores, labels) == pytest.approx(speechbrain(scores, labels), abs=1e-6)
    for p in (0.01, 0.05):
        assert min_dcf(scores, labels, p) == pytest.approx(speechbrain(scores, labels, p), abs=1e-5)
    assert 0 < eer(scores, labels) < 0.5


@pytest.mark.parametrize("bad", [([0.1], [1]), ([0.1, 0.2], [1, 2]), ([np.nan, 0.2], [1, 0]), ([0.1, 0.2], [1])])
def test_bad_trials_are_refused(bad):
    with pytest.raises(ValueError):
        eer(*bad)
