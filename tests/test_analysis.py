"""Each analysis statistic on a constructed matrix whose answer is known (issue 7)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import cltm_pipeline
from cltm_pipeline.analysis import properties as A
from cltm_pipeline.analysis.inference import bh
from cltm_pipeline.analysis.learning_curve import CURVE_SCHEMA, fit_curve, recommend
from cltm_pipeline.analysis.matrix import RUNS_SCHEMA, build_matrices, read_result
from cltm_pipeline.analysis.typology import DISTANCES, uriel_distances

ANALYSIS_MODULES = ("inference", "matrix", "properties", "typology", "simulate", "learning_curve")
FAMILIES = ["Romance", "Romance", "Germanic", "Germanic", "Uralic", "Uralic"]


def block_diagonal() -> np.ndarray:
    """Transfer only inside family blocks (0.7), none across them (0), 1 on the diagonal."""
    fam = np.array(FAMILIES)
    C = np.where(fam[:, None] == fam[None, :], 0.7, 0.0)
    np.fill_diagonal(C, 1.0)
    return C


def test_block_diagonal_family_blocks_give_intra_family_share_one():
    share, uniform = A.intra_family_share(block_diagonal(), FAMILIES)
    assert share == 1.0
    assert uniform == pytest.approx(6 / 30)  # 6 intra-family off-diagonal cells of 30


def test_intra_family_share_on_mixed_mass_and_nan():
    C = block_diagonal()
    C[0, 2] = 0.7  # one cross-family cell with as much mass as an intra-family one
    C[1, 0] = np.nan  # an intra-family cell missing: its mass is simply not there
    share, _ = A.intra_family_share(C, FAMILIES)
    assert share == pytest.approx(0.7 * 5 / (0.7 * 6))
    # every language its own family: no intra-family cell, so no share (not 0)
    share, uniform = A.intra_family_share(block_diagonal(), ["a", "b", "c", "d", "e", "f"])
    assert math.isnan(share) and uniform == 0.0


def test_symmetric_matrix_has_asymmetry_zero_and_antisymmetric_part_counts():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 5))
    S = (X + X.T) / 2
    np.fill_diagonal(S, 1.0)
    value, n = A.asymmetry(S)
    assert value == 0.0 and n == 25
    C = np.array([[1.0, 1.0], [0.0, 1.0]])
    value, n = A.asymmetry(C)  # ||[[0,1],[-1,0]]|| / ||C|| = sqrt(2) / sqrt(3)
    assert value == pytest.approx(math.sqrt(2 / 3))
    C[1, 0] = np.nan  # the mirror of (0, 1) missing: that pair is left out
    assert A.asymmetry(C) == (0.0, 2)


def test_strengths_sum_positive_off_diagonal_cells_only():
    C = np.array([[1.0, 0.5, -0.3], [0.2, 1.0, np.nan], [1.5, 0.0, 1.0]])
    donor, n_donor = A.donor_strength(C)
    receiver, n_receiver = A.receiver_strength(C)
    np.testing.assert_allclose(donor, [1.7, 0.5, 0.0])
    np.testing.assert_allclose(receiver, [0.5, 0.2, 1.5])
    assert n_donor.tolist() == [2, 2, 1] and n_receiver.tolist() == [2, 1, 2]


def test_shares_of_positive_negative_and_above_one_cells():
    C = np.array([[1.0, 0.5, -0.3], [1.2, 1.0, np.nan], [0.0, 2.0, 1.0]])
    s = A.shares(C)
    assert s == {"positive": 0.6, "negative": 0.2, "above_one": 0.4, "n": 5}
    assert A.shares(np.full((3, 3), np.nan))["n"] == 0


def test_bh_against_a_hand_computed_example():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan, 0.5])
    # sorted: 0.005, 0.01, 0.03, 0.04, 0.5 (m = 5): p*m/k = 0.025, 0.025, 0.05, 0.05, 0.5; running min
    # from the top keeps them monotone
    expected = [0.025, 0.05, 0.05, 0.025, np.nan, 0.5]
    np.testing.assert_allclose(bh(p), expected)
    assert np.isnan(bh([np.nan])).all()
    assert bh(np.array([0.9, 0.95])).max() <= 1.0


def test_mds_on_exactly_planar_points_has_zero_stress_and_recovers_distances():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(7, 2))
    D = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(axis=2))
    out = A.mds(D)
    assert out["stress"] == pytest.approx(0.0, abs=1e-9)
    xy = np.column_stack([out["x"], out["y"]])
    np.testing.assert_allclose(np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(axis=2)), D, atol=1e-9)
    assert A.mds(D) == out  # deterministic, signs fixed


def test_mds_and_clusters_drop_languages_with_undefined_distances():
    C = block_diagonal()
    C[5, :] = np.nan
    C[:, 5] = np.nan
    D, used = A.profile_distance(C)
    assert np.isnan(D[5, 0]) or used[5, 0] == 0
    out = A.mds(D)
    assert 5 not in out["used"] and len(out["x"]) == len(out["used"])


def test_clusters_recover_family_blocks():
    D, _ = A.profile_distance(block_diagonal())
    out = A.clusters(D)
    assert out["k"] == 3 and out["labels"] == [1, 1, 2, 2, 3, 3]
    assert out["silhouette"] > 0.5


def test_mantel_on_a_matrix_built_from_the_distance_itself_is_significant():
    rng = np.random.default_rng(3)
    pts = rng.normal(size=(8, 2))
    dist = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(axis=2))
    C = 1.0 - dist / dist.max()  # transfer falls with distance
    out = A.mantel(A.symmetrised(C), dist, permutations=999, seed=0)
    assert out["r"] == pytest.approx(-1.0)
    assert out["p"] < 0.01 and out["n_pairs"] == 28 and not out["exact"]
    # six languages: 720 permutations, enumerated exactly; only the identity and its mirrors hit
    exact = A.mantel(A.symmetrised(C[:6, :6]), dist[:6, :6], permutations=999)
    assert exact["exact"] and exact["p"] < 0.01


def test_mantel_on_an_unrelated_matrix_is_not_significant():
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(9, 2))
    dist = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(axis=2))
    noise = rng.normal(size=(9, 9))
    out = A.mantel(A.symmetrised(noise), dist, permutations=999, seed=0)
    assert out["p"] > 0.05


def test_mantel_skips_undefined_distances_and_counts_pairs():
    rng = np.random.default_rng(5)
    dist = rng.uniform(size=(6, 6))
    dist = (dist + dist.T) / 2
    dist[0, 1] = dist[1, 0] = np.nan  # e.g. URIEL has no shared features for this pair
    out = A.mantel(-dist, dist, permutations=999)
    assert out["n_pairs"] == 14 and out["r"] == pytest.approx(-1.0)


def test_symmetrised_uses_the_finite_mirror():
    C = np.array([[1.0, 0.2], [np.nan, 1.0]])
    np.testing.assert_allclose(A.symmetrised(C), [[1.0, 0.2], [0.2, 1.0]])


def _record(target, donor, seed, curve, probe=None):
    rec = {"target": target, "donor": donor, "seed": seed, "cell": "single" if donor is None else
           ("self" if donor == target else "dual"), "training": {"dev_curve": curve}}
    if probe is not None:
        rec["probe"] = probe
    return rec


def test_steps_to_reach_and_probe_summary_on_constructed_runs():
    single = [[10, 0.5], [20, 0.7], [30, 0.8], [40, 0.8]]
    fast = [[10, 0.6], [20, 0.85], [30, 0.9]]
    never = [[10, 0.1], [20, 0.2]]
    recs = [
        _record("es", None, 0, single, {"accuracy": 0.9, "chance": 0.5}),
        _record("es", "es", 0, fast, {"accuracy": 0.8, "chance": 0.5}),
        _record("es", "de", 0, never),
    ]
    rows = {r["donor"]: r for r in A.steps_to_reach(recs)}
    assert rows["es"]["single_steps"] == 30 and rows["es"]["steps"] == 20
    assert rows["es"]["ratio"] == pytest.approx(2 / 3)
    assert math.isnan(rows["de"]["ratio"])
    probes = A.probe_summary(recs)
    assert probes["runs_without_probe"] == 1
    assert probes["by_kind"]["single"]["accuracy"] == 0.9 and probes["by_kind"]["self"]["n_runs"] == 1


def _runs(C_true: np.ndarray, seeds: int, noise: float, rng) -> pl.DataFrame:
    """Per-seed runs whose CLTM is exactly C_true in every seed: a = b + C (c - b), c = b + 0.2 + noise.

    Since every seed gives the same C, a cell at 0 has a_s - b_s = 0 at every seed and can never be told
    from 0, nor a cell at 1 from 1, and any other value is told from both."""
    langs = [f"l{k}" for k in range(C_true.shape[0])]
    rows = []
    for i, t in enumerate(langs):
        for s in range(seeds):
            b = 0.5 + rng.normal(0, noise)
            gain = 0.2 + rng.normal(0, noise)
            rows.append((t, None, s, b))
            for j, d in enumerate(langs):
                rows.append((t, d, s, b + C_true[i, j] * gain))
    return pl.DataFrame(rows, schema=RUNS_SCHEMA, orient="row")


def test_significance_marks_zero_and_one_cells_and_round_trips(tmp_path):
    C_true = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.0, 1.0]])
    runs = _runs(C_true, seeds=8, noise=0.01, rng=np.random.default_rng(0))
    res = build_matrices(runs)
    off = ~np.eye(3, dtype=bool)
    # cells at 0 are not different from 0; cells at 1 not from 1; the 0.5 cell differs from both
    assert (res.q_zero[(C_true == 0) & off] > 0.05).all() and (res.q_one[(C_true == 0) & off] < 0.05).all()
    assert (res.q_one[(C_true == 1) & off] > 0.05).all() and (res.q_zero[(C_true == 1) & off] < 0.05).all()
    assert res.q_zero[1, 2] < 0.05 and res.q_one[1, 2] < 0.05
    assert np.isnan(np.diag(res.p_zero)).all()
    res.write(tmp_path / "m")
    back = read_result(tmp_path / "m")
    for k in ("p_zero", "p_one", "q_zero", "q_one", "ci_low", "ci_high"):
        np.testing.assert_array_equal(getattr(back, k), getattr(res, k))
    # a cells.tsv written before the significance columns still reads, with NaN p-values
    cells = (tmp_path / "m" / "cells.tsv").read_text().splitlines()
    (tmp_path / "m" / "cells.tsv").write_text("\n".join("\t".join(l.split("\t")[:17]) for l in cells) + "\n")
    old = read_result(tmp_path / "m")
    assert np.isnan(old.p_zero).all()
    np.testing.assert_array_equal(old.ci_low, res.ci_low)


def test_transfer_summary_mean_and_ci():
    rng = np.random.default_rng(2)
    L, S = 4, 10
    b = 0.5 + rng.normal(0, 0.01, (L, S))
    c = b + 0.2
    a = b[:, None, :] + 0.2 * 0.5 + rng.normal(0, 0.01, (L, L, S))
    out = A.transfer_summary(a, b, c)
    assert out["mean"] == pytest.approx(0.5, abs=0.05) and out["n"] == 12
    assert out["ci_low"] < out["mean"] < out["ci_high"]
    a[0, 1, :] = np.nan  # a missing cell leaves the mean over the others
    assert A.transfer_summary(a, b, c)["n"] == 11
    # an ill-conditioned row is left out of the mean and counted
    out = A.transfer_summary(a, b, c, ill_conditioned=np.array([True, False, False, False]))
    assert out["n"] == 9 and out["rows_ill"] == 1 and out["cells_left_out"] == 2


def _curve(gains: dict[float, float], seeds: int = 4, sd: float = 0.01):
    """A synthetic ladder: at each N, single = base(N), self = base(N) + gains[N], seeded noise."""
    rng = np.random.default_rng(0)
    rows, base = [], 0.5
    for n in sorted(gains):
        for t in ("es", "fi"):
            for s in range(seeds):
                rows.append((t, n, "single", n, s, base + rng.normal(0, sd)))
                rows.append((t, n, "self", 2 * n, s, base + gains[n] + rng.normal(0, sd)))
        base += gains[n]
    return pl.DataFrame(rows, schema=CURVE_SCHEMA, orient="row")


def test_learning_curve_recommends_the_largest_n_whose_doubling_still_clearly_helps():
    # doubling helps a lot at 4, 8 and 16, then saturates at 32
    rec = recommend(_curve({4.0: 0.15, 8.0: 0.1, 16.0: 0.06, 32.0: 0.0}))
    assert rec["recommended_n"] == 16.0
    assert [s["all_clear"] for s in rec["steps"]] == [True, True, True, False]
    assert "largest N" in rec["rule"]
    # nothing ever clearly helps: no recommendation, said as such
    assert recommend(_curve({4.0: 0.0, 8.0: 0.0}))["recommended_n"] is None
    fit = fit_curve(_curve({4.0: 0.1, 8.0: 0.1, 16.0: 0.1}, sd=0.0))
    assert fit["es"]["beta"] == pytest.approx(0.1)  # exactly +0.1 per doubling


def test_uriel_distances_offline_with_unknown_codes():
    d, unknown = uriel_distances(["spa", "ita", "deu", "qqq"])
    assert unknown == ["qqq"] and set(d) == set(DISTANCES)
    g = d["genetic"]
    assert g[0, 1] < g[0, 2]  # Spanish is closer to Italian than to German
    assert np.isnan(g[3]).all() and np.diag(g)[:3].tolist() == [0.0, 0.0, 0.0]
    assert np.allclose(g[:3, :3], g[:3, :3].T)


def test_cltm_analyse_end_to_end_on_constructed_run_files(tmp_path):
    """matrix -> analyse through the CLI, from metrics.json files shaped like the worker's (probe optional)."""
    import json

    from cltm_pipeline.cli import main

    langs = ["es", "it", "de"]
    runs = tmp_path / "runs"
    rng = np.random.default_rng(0)
    for t in langs:
        for s in range(3):
            b = 0.6 + rng.normal(0, 0.005)
            for d in [None, *langs]:
                value = b if d is None else b + (0.1 if d == t else 0.05) + rng.normal(0, 0.005)
                rec = {"target": t, "donor": d, "seed": s, "cell": "single" if d is None else
                       ("self" if d == t else "dual"), "metrics": {"macro_f1": value},
                       "training": {"dev_curve": [[10, value - 0.1], [20, value]]}}
                if d == t and t != "de":  # some runs without a probe, as old runs or other archs
                    rec["probe"] = {"languages": langs, "n": 6, "accuracy": 0.9, "chance": 1 / 3,
                                    "projection": {"x": [0, 1, 2, 3, 4, 5], "y": [0, 1, 0, 1, 0, 1],
                                                   "locale": ["es", "es", "it", "it", "de", "de"]}}
                path = runs / t / (d or "-") / f"seed{s}" / "metrics.json"
                path.parent.mkdir(parents=True)
                path.write_text(json.dumps(rec))
    typ = {"source": "test", "locales": ["es", "it", "de"], "iso639_3": {"es": "spa", "it": "ita", "de": "deu"},
           "unknown_iso": [], "locales_without_iso": [],
           "distances": {"genetic": [[0, 0.5, 0.9], [0.5, 0, 0.9], [0.9, 0.9, 0]]}}
    (tmp_path / "uriel.json").write_text(json.dumps(typ))
    mat = tmp_path / "matrices" / "gender" / "tiny"
    assert main(["matrix", "--runs-dir", str(runs), "--languages", *langs, "--metric", "macro_f1", "--out", str(mat)]) == 0
    assert main(["analyse", "--matrix", str(mat), "--runs-dir", str(runs), "--languages-sheet",
                 "config/languages.tsv", "--typology", str(tmp_path / "uriel.json"), "--permutations", "99",
                 "--out", str(mat / "analysis.json"), "--overlap-out", str(mat / "overlap.tsv")]) == 0
    a = json.loads((mat / "analysis.json").read_text())
    # runs without fine-tuning footprints: said, not filled (tests/test_footprint.py has the ones with)
    assert a["footprint"]["available"] is False and a["footprint"]["cells_with_footprint"] == 0
    assert (mat / "overlap.tsv").read_text() == "language_a\tlanguage_b\tjaccard\tsd\tseeds\n"
    assert a["properties"]["mean_offdiag_C"]["mean"] == pytest.approx(0.5, abs=0.1)
    assert a["probes"]["by_kind"]["self"]["n_runs"] == 6 and a["probes"]["runs_without_probe"] == 30
    assert sorted(a["probes"]["projections"]) == ["es", "it"]
    assert a["mantel"]["genetic"]["n_pairs"] == 3 and a["typology"]["source"] == "test"
    assert a["training_time"]["by_kind"]["self"]["cells"] == 9


def test_the_analysis_layer_loads_no_torch_and_typology_loads_urielplus_only_when_asked():
    """A fresh interpreter imports every analysis module and metrics: no torch, no transformers, no urielplus."""
    code = ("import sys; import cltm_pipeline.metrics; "
            + "; ".join(f"import cltm_pipeline.analysis.{m}" for m in ANALYSIS_MODULES)
            + "; print(sorted(m for m in ('torch', 'transformers', 'urielplus') if m in sys.modules))")
    src = str(Path(cltm_pipeline.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"
