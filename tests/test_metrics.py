"""Metrics against scikit-learn, including the degenerate cases a tiny model produces."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from cltm_pipeline.metrics import accuracy, macro_f1

LABELS = ("female", "male")


def sk_macro_f1(t, p, labels=LABELS):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UndefinedMetricWarning on the ill-defined cases, scored 0 like ours
        return f1_score(t, p, average="macro", labels=list(labels))


@pytest.mark.parametrize(
    "t, p",
    [
        (["female", "male", "male", "female"], ["female", "male", "female", "female"]),
        (["female"] * 5 + ["male"] * 5, ["female"] * 10),  # one class never predicted
        (["female"] * 5 + ["male"] * 5, ["male"] * 10),
        (["female"] * 4, ["female"] * 4),  # one class absent and never predicted (ill-defined: 0)
        (["female"] * 4, ["male"] * 4),  # all wrong, one class absent
        (["male", "female"], ["female", "male"]),  # all wrong
        (["female", "male"], ["female", "male"]),  # perfect
        (["female", "male", "male"], ["other", "male", "male"]),  # a prediction outside the labels
    ],
)
def test_macro_f1_matches_sklearn_on_edge_cases(t, p):
    assert macro_f1(t, p) == pytest.approx(sk_macro_f1(t, p), abs=1e-12)
    assert accuracy(t, p) == pytest.approx(accuracy_score(t, p), abs=1e-12)


def test_constant_prediction_on_balanced_set_is_one_third():
    t = ["female"] * 10 + ["male"] * 10
    assert macro_f1(t, ["male"] * 20) == pytest.approx(1 / 3)
    assert accuracy(t, ["male"] * 20) == 0.5


def test_random_labels_match_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        t = rng.choice(LABELS, n)
        p = rng.choice(LABELS, n, p=_probs(rng))  # sometimes all one class
        assert macro_f1(t, p) == pytest.approx(sk_macro_f1(t, p), abs=1e-12)
        assert accuracy(t, p) == pytest.approx(accuracy_score(t, p), abs=1e-12)


def _probs(rng):
    a = float(rng.choice([0.0, 1.0, rng.random()]))
    return [a, 1 - a]


def test_integer_labels_and_other_label_sets():
    t, p = [0, 1, 2, 2, 1], [0, 2, 2, 2, 0]
    assert macro_f1(t, p, labels=(0, 1, 2)) == pytest.approx(sk_macro_f1(t, p, labels=(0, 1, 2)))
    assert macro_f1(t, p, labels=(0, 2)) == pytest.approx(sk_macro_f1(t, p, labels=(0, 2)))


def test_results_are_python_floats():
    assert type(macro_f1(["male"], ["male"])) is float
    assert type(accuracy(["male"], ["male"])) is float


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        macro_f1([], [])
    with pytest.raises(ValueError):
        accuracy(["male"], ["male", "female"])
    with pytest.raises(ValueError):
        macro_f1(["male"], ["male"], labels=())
