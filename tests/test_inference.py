"""Paired-seed inference: the tests and intervals against scipy and by hand, and their calibration by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cltm_pipeline.analysis.inference import fieller, holm, p_floor, paired_test, ratio_mean_interval
from cltm_pipeline.analysis.matrix import build_matrices
from cltm_pipeline.analysis.properties import per_seed_arrays, transfer_summary
from cltm_pipeline.analysis.simulate import simulate_study


def test_paired_t_matches_scipy():
    rng = np.random.default_rng(0)
    d = rng.normal(0.3, 1.0, size=(5, 40))
    expected = stats.ttest_1samp(d, 0.0, axis=0).pvalue
    np.testing.assert_allclose(paired_test(d, "t"), expected, rtol=1e-10)
    assert paired_test(np.array([0.25, 0.25, 0.25]), "t") == 0.0  # identical non-zero differences (exact in binary)
    assert paired_test(np.zeros(3), "t") == 1.0
    assert math.isnan(paired_test(np.array([0.2]), "t"))


def test_sign_flip_is_exact():
    # 3 seeds, all positive: only the identity and its mirror reach |mean|: p = 2/8, the floor.
    assert paired_test(np.array([0.1, 0.2, 0.3]), "signflip") == pytest.approx(0.25)
    assert p_floor(3, "signflip") == pytest.approx(0.25) and p_floor(5, "signflip") == pytest.approx(1 / 16)
    # Hand count for (1, -2, 3): |mean| = 2/3; sign patterns with |±1 ±2 ±3| >= 2: all but (+,+,-)→0 and (-,-,+)→0.
    assert paired_test(np.array([1.0, -2.0, 3.0]), "signflip") == pytest.approx(6 / 8)
    assert p_floor(4, "t") == 0.0 and math.isnan(p_floor(1, "t"))


def test_holm_by_hand():
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, np.nan])), [0.03, 0.06, 0.06, np.nan])
    assert np.isnan(holm(np.array([np.nan]))).all()


def test_fieller_reduces_to_t_interval_when_the_denominator_is_exact():
    x = np.array([0.5, 0.7, 0.6, 0.4])
    fs = fieller(x, np.ones(4), 0.9)
    half = stats.t.ppf(0.95, 3) * x.std(ddof=1) / 2
    assert fs.kind == "bounded" and fs.low == pytest.approx(x.mean() - half) and fs.high == pytest.approx(x.mean() + half)
    assert fieller(x[:1], np.ones(1)).kind == "none"


def test_ratio_mean_interval_by_hand():
    # Constant denominators: the mean of ratios is a mean of num / den per seed, its SE the t-test SE of that.
    num = np.array([[0.1, 0.2], [0.3, 0.2], [0.2, 0.5]])
    den = np.full((3, 2), 0.5)
    out = ratio_mean_interval(num, den)
    per_seed = (num / 0.5).mean(axis=1)
    half = stats.t.ppf(0.975, 2) * per_seed.std(ddof=1) / math.sqrt(3)
    assert out["mean"] == pytest.approx(per_seed.mean()) and out["ci_high"] - out["mean"] == pytest.approx(half)


# ------------------------------------------------------------------------------------------------
# Calibration, by simulation with a known answer (bench/inference_calibration.py prints the full table)
# ------------------------------------------------------------------------------------------------


def _mc(p: float, reps: int) -> float:
    return 3.0 * math.sqrt(p * (1 - p) / reps)


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_bh_on_an_all_null_matrix_holds_its_level(n_seeds):
    """The percentile bootstrap this replaced flagged a cell in 10 of 10 null matrices; nominal is <= 5 %."""
    rng = np.random.default_rng(12 + n_seeds)
    reps, L = 150, 6
    off = ~np.eye(L, dtype=bool)
    hits = sum(bool((build_matrices(simulate_study(rng, np.zeros((L, L)), np.full(L, 5.0), n_seeds).runs).q_zero[off]
                     < 0.05).any()) for _ in range(reps))
    assert hits / reps <= 0.05 + _mc(0.05, reps)


def test_fieller_intervals_and_the_matrix_mean_cover_at_their_level():
    """95 % intervals of C cover the truth in ~95 % of cells of well-conditioned rows (the bootstrap: 84 % at 5
    seeds), and the whole-matrix mean's interval covers the true mean."""
    rng = np.random.default_rng(7)
    reps, L, n = 60, 6, 5
    off = ~np.eye(L, dtype=bool)
    cover, mean_cover = [], []
    for _ in range(reps):
        st = simulate_study(rng, rng.uniform(-0.5, 1.5, (L, L)), np.full(L, 5.0), n)
        res = build_matrices(st.runs, st.languages)
        inside = (res.ci_low <= st.C) & (st.C <= res.ci_high)
        inside &= ~((res.ci_kind == "rays") & (st.C > res.ci_gap_low) & (st.C < res.ci_gap_high))
        cover.extend(inside[off].tolist())
        a, b, c = per_seed_arrays(st.runs.iter_rows(), list(st.languages))
        m = transfer_summary(a, b, c, ill_conditioned=res.ill_conditioned)
        truth = st.C[off & ~np.asarray(res.ill_conditioned)[:, None]].mean()
        mean_cover.append(m["ci_low"] <= truth <= m["ci_high"])
    # Cells of one matrix share seeds: the effective sample is between reps and reps * L(L-1); use reps * L.
    assert np.mean(cover) >= 0.95 - _mc(0.95, reps * L)
    assert np.mean(mean_cover) >= 0.95 - _mc(0.95, reps)


def test_an_ill_conditioned_row_gets_honest_unbounded_intervals():
    rng = np.random.default_rng(3)
    L, n = 5, 5
    st = simulate_study(rng, np.full((L, L), 0.5), np.full(L, 0.0), n)  # no self gain at all
    res = build_matrices(st.runs, st.languages)
    off = ~np.eye(L, dtype=bool)
    assert res.ill_conditioned.sum() >= L - 1
    ill = np.asarray(res.ill_conditioned)[:, None] & off
    assert set(res.ci_kind[ill]) <= {"rays", "unbounded"}
    assert np.isinf(res.ci_low[ill]).all() and np.isinf(res.ci_high[ill]).all()
