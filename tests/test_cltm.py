"""Tests for cltm_pipeline.analysis.matrix against values worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from cltm_pipeline.analysis.inference import fieller
from cltm_pipeline.analysis.matrix import (
    RUNS_SCHEMA,
    aggregate,
    build_matrices,
    read_result,
    read_run_metrics,
    read_study_csv,
)

SCHEMA = {"target": pl.String, "donor": pl.String, "seed": pl.Int64, "value": pl.Float64}


def runs_frame(cells: dict[tuple[str, str | None], list[float] | dict[int, float]]) -> pl.DataFrame:
    """Long table from {(target, donor): values by seed 0.. or {seed: value}}."""
    rows = []
    for (target, donor), values in cells.items():
        items = values.items() if isinstance(values, dict) else enumerate(values)
        rows.extend((target, donor, seed, value) for seed, value in items)
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


# Three languages, three seeds. es+pt is never run (missing dual). pt's self gain is small against its SE.
EXAMPLE = {
    ("es", None): [0.50, 0.52, 0.54],  # b = 0.52, var = (0.02^2 + 0 + 0.02^2)/2 = 0.0004
    ("es", "es"): [0.60, 0.62, 0.64],  # c = 0.62, var = 0.0004
    ("es", "it"): [0.55, 0.56, 0.60],  # a = 1.71/3 = 0.57, var = (0.02^2+0.01^2+0.03^2)/2 = 0.0007
    ("it", None): [0.40, 0.42, 0.44],  # b = 0.42
    ("it", "it"): [0.50, 0.52, 0.54],  # c = 0.52
    ("it", "es"): [0.38, 0.40, 0.42],  # a = 0.40
    ("it", "pt"): [0.53, 0.54, 0.55],  # a = 0.54
    ("pt", None): [0.70, 0.72, 0.74],  # b = 0.72, var = 0.0004
    ("pt", "pt"): [0.71, 0.72, 0.75],  # c = 2.18/3, var = ((1/60)^2+(1/150)^2+(7/300)^2)/2 = 0.0013/3
    ("pt", "es"): [0.72, 0.73, 0.74],  # a = 0.73
    ("pt", "it"): [0.70, 0.71, 0.72],  # a = 0.71
}
ES, IT, PT = 0, 1, 2


@pytest.fixture(scope="module")
def result():
    return build_matrices(runs_frame(EXAMPLE), metric="macro_f1")


def test_aggregate_by_hand():
    agg = aggregate(runs_frame(EXAMPLE))
    row = agg.filter((pl.col("target") == "es") & (pl.col("donor") == "it")).row(0, named=True)
    assert row["policy"] == "mean"
    assert row["n"] == 3
    assert row["mu"] == pytest.approx(0.57, abs=1e-12)
    assert row["var"] == pytest.approx(0.0007, abs=1e-12)  # (0.0004 + 0.0001 + 0.0009) / 2
    assert row["v"] == pytest.approx(0.0007 / 3, abs=1e-12)
    single = agg.filter((pl.col("target") == "es") & pl.col("donor").is_null()).row(0, named=True)
    assert single["mu"] == pytest.approx(0.52, abs=1e-12)


def test_aggregate_one_seed_gives_nan_variance():
    agg = aggregate(runs_frame({("es", None): [0.5]}))
    row = agg.row(0, named=True)
    assert row["n"] == 1 and math.isnan(row["var"]) and math.isnan(row["v"])


def test_unknown_policy_is_named():
    runs = runs_frame(EXAMPLE)
    with pytest.raises(ValueError, match="'trimmed'"):
        aggregate(runs, policy="trimmed")
    with pytest.raises(ValueError, match="'best_seeds'"):
        build_matrices(runs, policy="best_seeds")


def test_duplicate_run_rejected():
    runs = runs_frame({("es", None): {0: 0.5}}).vstack(runs_frame({("es", None): {0: 0.6}}))
    with pytest.raises(ValueError, match="duplicate"):
        aggregate(runs)


def test_M_by_hand(result):
    assert result.languages == ("es", "it", "pt")
    expected = np.array(
        [
            [0.10 / 0.52, 0.05 / 0.52, np.nan],  # es: (0.62-0.52)/0.52, (0.57-0.52)/0.52, missing
            [-0.02 / 0.42, 0.10 / 0.42, 0.12 / 0.42],  # it: (0.40-0.42)/0.42, (0.52-0.42)/0.42, (0.54-0.42)/0.42
            [0.01 / 0.72, -0.01 / 0.72, (0.02 / 3) / 0.72],  # pt: (0.73-0.72), (0.71-0.72), (2.18/3-0.72)
        ]
    )
    np.testing.assert_allclose(result.M, expected, rtol=1e-9, equal_nan=True)


def test_C_by_hand(result):
    expected = np.array(
        [
            [1.0, 0.5, np.nan],  # es: (0.57-0.52)/(0.62-0.52) = 0.05/0.10
            [-0.2, 1.0, 1.2],  # it: -0.02/0.10, 0.12/0.10
            [1.5, -1.5, 1.0],  # pt: 0.01/(0.02/3), -0.01/(0.02/3)
        ]
    )
    np.testing.assert_allclose(result.C, expected, rtol=1e-9, equal_nan=True)
    assert np.all(np.diag(result.C) == 1.0)


def test_delta_method_se_one_cell_by_hand(result):
    # Cell es <- it on its 3 paired seeds: num_s = a_s - b_s = (0.05, 0.04, 0.06), den_s = c_s - b_s = 0.10 each.
    # var(num) = 0.0001 (ddof 1), var(den) = cov = 0, so Var(C) = var(num)/n / den^2 = 0.0001/3/0.01 = 0.01/3.
    assert result.se[ES, IT] == pytest.approx(math.sqrt(0.01 / 3), rel=1e-9)
    assert np.all(np.diag(result.se) == 0.0)
    assert math.isnan(result.se[ES, PT])  # missing dual


def test_missing_dual_is_nan_and_listed(result):
    assert math.isnan(result.C[ES, PT]) and math.isnan(result.M[ES, PT])
    assert result.missing == [("es", "pt")]
    assert result.n_seeds[ES, PT] == 0 and result.n_seeds[ES, IT] == 3
    assert result.ci_kind[ES, PT] == "none" and math.isnan(result.p_zero[ES, PT])


def test_missing_single_gives_nan_row_and_is_listed():
    cells = dict(EXAMPLE)
    del cells[("it", None)]
    res = build_matrices(runs_frame(cells))
    assert np.all(np.isnan(res.C[IT])) and np.all(np.isnan(res.M[IT])) and np.all(np.isnan(res.ci_low[IT]))
    assert ("it", None) in res.missing
    assert bool(res.ill_conditioned[IT])  # an undefined self gain is not clearly positive
    assert res.C[ES, IT] == pytest.approx(0.5)  # other rows untouched


def test_missing_self_gives_nan_C_row():
    cells = dict(EXAMPLE)
    del cells[("es", "es")]
    res = build_matrices(runs_frame(cells))
    assert np.all(np.isnan(res.C[ES]))
    assert res.M[ES, IT] == pytest.approx(0.05 / 0.52)  # M needs only a and b
    assert ("es", "es") in res.missing


def test_language_without_runs_lists_every_cell():
    res = build_matrices(runs_frame(EXAMPLE), languages=["es", "it", "pt", "ca"])
    assert np.all(np.isnan(res.C[3])) and np.all(np.isnan(res.C[:, 3]))
    # L singles + L selfs + L(L-1) duals are checked; ca's single, self, 3 duals, and the 3 duals into ca.
    assert [c for c in res.missing if "ca" in c] == [
        ("es", "ca"),
        ("it", "ca"),
        ("pt", "ca"),
        ("ca", None),
        ("ca", "ca"),
        ("ca", "es"),
        ("ca", "it"),
        ("ca", "pt"),
    ]


def test_ill_conditioned_row_flagged_but_present(result):
    # pt: c_s - b_s = (0.01, 0.00, 0.01): gain 0.02/3, paired SE = sd/sqrt(3) = (0.01/sqrt(3))/sqrt(3) = 0.01/3,
    # t = 2.0 < t(0.975, 2 df) = 4.303: not significantly positive, so the row is flagged (and its Fieller
    # sets are unbounded). es and it gain exactly 0.10 at every seed: clearly positive.
    assert result.self_gain[PT] == pytest.approx(0.02 / 3, rel=1e-9)
    assert result.self_gain_se[PT] == pytest.approx(0.01 / 3, rel=1e-9)
    assert result.ill_conditioned.tolist() == [False, False, True]
    assert np.all(np.isfinite(result.C[PT]))  # flagged, not dropped
    assert set(result.ci_kind[PT, [ES, IT]]) <= {"rays", "unbounded"}
    assert np.all(np.isinf(result.ci_low[PT, [ES, IT]])) and np.all(np.isinf(result.ci_high[PT, [ES, IT]]))


def test_negative_self_gain_flagged():
    cells = dict(EXAMPLE)
    cells[("pt", "pt")] = [0.69, 0.70, 0.71]  # c = 0.70 < b = 0.72
    res = build_matrices(runs_frame(cells))
    assert res.self_gain[PT] == pytest.approx(-0.02)
    assert bool(res.ill_conditioned[PT])
    assert res.C[PT, ES] == pytest.approx(0.01 / -0.02)


def test_M_is_undefined_for_a_non_positive_baseline():
    # ASR's P = 1 - WER is negative when WER > 1: a relative gain over it would flip sign, so M is NaN and named.
    cells = {("xx", None): [-0.2, -0.1], ("xx", "xx"): [0.1, 0.2], ("xx", "yy"): [0.0, 0.1],
             ("yy", None): [0.5, 0.6], ("yy", "yy"): [0.7, 0.8], ("yy", "xx"): [0.55, 0.65]}
    res = build_matrices(runs_frame(cells))
    assert np.all(np.isnan(res.M[0])) and res.M[1, 0] == pytest.approx(0.05 / 0.55)
    assert res.C[0, 1] == pytest.approx(0.2 / 0.3)  # C stays defined
    assert res.summary()["m_undefined_targets"] == ["xx"]


def test_worked_fieller_interval_and_paired_tests(result):
    # es <- it: mean num 0.05, den 0.10 with no seed-to-seed variance, v_num = 0.0001/3, t = t(0.975, 2).
    # A = 0.01, B = 0.005, C = 0.0025 - t^2 0.0001/3; the roots are 0.5 -+ t sqrt(0.0001/3)/0.1.
    t = stats.t.ppf(0.975, 2)
    half = t * math.sqrt(0.0001 / 3) / 0.1
    assert result.ci_kind[ES, IT] == "bounded"
    assert result.ci_low[ES, IT] == pytest.approx(0.5 - half, rel=1e-9)
    assert result.ci_high[ES, IT] == pytest.approx(0.5 + half, rel=1e-9)
    # Paired t of C = 0 on a_s - b_s = (0.05, 0.04, 0.06): t = 0.05 / (0.01/sqrt 3); C = 1 on a_s - c_s = -(same).
    p = 2 * stats.t.sf(0.05 / (0.01 / math.sqrt(3)), 2)
    assert result.p_zero[ES, IT] == pytest.approx(p, rel=1e-9) and result.p_one[ES, IT] == pytest.approx(p, rel=1e-9)
    assert result.p_floor[ES, IT] == 0.0
    # Duality: the Fieller interval excludes 0 exactly when the t-test of C = 0 rejects at 5 %.
    assert (result.ci_low[ES, IT] > 0) == (result.p_zero[ES, IT] < 0.05)
    # Self cells are 1 by construction: no test.
    assert math.isnan(result.p_zero[ES, ES]) and result.ci_low[ES, ES] == result.ci_high[ES, ES] == 1.0


def test_sign_flip_test_is_exact_and_says_when_it_cannot_reject():
    # 3 seeds all on one side: the exact two-sided sign-flip p is 2/8, whatever the size of the effect.
    res = build_matrices(runs_frame(EXAMPLE), test="signflip")
    assert res.p_zero[ES, IT] == pytest.approx(0.25) and res.p_floor[ES, IT] == pytest.approx(0.25)
    summ = res.summary()
    assert summ["cells_tested"] == 5 and summ["cells_untestable"] == 5  # none can reach p < 0.05
    assert not res.testable().any()


@pytest.mark.parametrize("num,den,kind", [
    ([0.05, 0.04, 0.06], [0.10, 0.11, 0.09], "bounded"),
    ([1.0, 1.1, 0.9, 1.05], [0.1, -0.05, 0.2, 0.02], "rays"),
    ([0.01, -0.02, 0.03], [0.1, -0.1, 0.02], "unbounded"),
])
def test_fieller_set_matches_its_definition(num, den, kind):
    """Bounded, two rays or the whole line: membership on a grid equals the defining inequality."""
    x, y = np.array(num), np.array(den)
    n = x.size
    fs = fieller(x, y, 0.95)
    assert fs.kind == kind
    t2 = stats.t.ppf(0.975, n - 1) ** 2
    cov = np.cov(np.vstack([x, y]), ddof=1) / n
    grid = np.linspace(-60, 60, 24001)
    inside = (x.mean() - grid * y.mean()) ** 2 <= t2 * (cov[0, 0] - 2 * grid * cov[0, 1] + grid**2 * cov[1, 1])
    if kind == "bounded":
        claimed = (grid >= fs.low) & (grid <= fs.high)
    elif kind == "rays":
        assert fs.low == -math.inf and fs.high == math.inf and fs.gap_low < fs.gap_high
        claimed = (grid <= fs.gap_low) | (grid >= fs.gap_high)
    else:
        assert fs.low == -math.inf and fs.high == math.inf
        claimed = np.ones_like(grid, dtype=bool)
    # Grid points within a step of a bound may fall either way.
    step = grid[1] - grid[0]
    edge = np.zeros_like(grid, dtype=bool)
    for b in (fs.low, fs.high, fs.gap_low, fs.gap_high):
        if math.isfinite(b):
            edge |= np.abs(grid - b) <= step
    assert np.array_equal(inside[~edge], claimed[~edge])


def test_intervals_are_reproducible_and_per_cell(result):
    again = build_matrices(runs_frame(EXAMPLE))
    np.testing.assert_array_equal(again.ci_low, result.ci_low)
    np.testing.assert_array_equal(again.ci_high, result.ci_high)
    cells = {k: v for k, v in EXAMPLE.items() if k[0] != "pt"}
    res = build_matrices(runs_frame(cells), languages=["es", "it", "pt"])
    assert res.ci_low[IT, ES] == result.ci_low[IT, ES] and res.ci_high[IT, ES] == result.ci_high[IT, ES]


def test_one_seed_set_for_estimate_and_interval_after_a_partial_failure():
    # Seed 2 of es <- it failed; seeds 3 and 4 of single and self exist without it. C, SE, interval and
    # tests all use the paired seeds {0, 1} and the cell is marked partial: the interval cannot exclude C.
    cells = dict(EXAMPLE)
    cells[("es", None)] = [0.50, 0.52, 0.54, 0.10, 0.12]
    cells[("es", "es")] = [0.60, 0.62, 0.64, 0.95, 0.97]
    cells[("es", "it")] = {0: 0.55, 1: 0.56}
    res = build_matrices(runs_frame(cells))
    assert res.n_paired[ES, IT] == 2 and bool(res.partial[ES, IT]) and not res.partial[IT, ES]
    assert res.C[ES, IT] == pytest.approx((0.05 + 0.04) / 2 / 0.10)
    assert res.ci_low[ES, IT] <= res.C[ES, IT] <= res.ci_high[ES, IT]
    assert res.mu[ES, IT] == pytest.approx(0.555) and res.summary()["cells_partial"] >= 1


def test_fewer_than_two_paired_seeds_gives_nan_ci():
    cells = dict(EXAMPLE)
    cells[("es", "it")] = {0: 0.55, 7: 0.56, 8: 0.60}  # only seed 0 is paired with single and self
    res = build_matrices(runs_frame(cells))
    assert res.n_paired[ES, IT] == 1
    assert math.isfinite(res.C[ES, IT]) and math.isnan(res.ci_low[ES, IT]) and math.isnan(res.ci_high[ES, IT])
    assert res.ci_kind[ES, IT] == "none" and math.isnan(res.p_zero[ES, IT]) and math.isnan(res.p_floor[ES, IT])


def test_to_long_has_one_row_per_cell(result):
    long = result.to_long()
    assert long.height == 9
    row = long.filter((pl.col("target") == "es") & (pl.col("donor") == "it")).row(0, named=True)
    assert row["kind"] == "dual" and row["policy"] == "mean"
    assert row["C"] == pytest.approx(0.5) and row["a"] == pytest.approx(0.57) and row["b"] == pytest.approx(0.52)
    assert row["c"] == pytest.approx(0.62) and row["n_seeds"] == 3 and row["n_paired"] == 3


def test_write_is_deterministic_and_complete(result, tmp_path: Path):
    first, second = tmp_path / "a", tmp_path / "b"
    result.write(first)
    # Same runs in another order must give the same bytes too.
    shuffled = runs_frame(EXAMPLE).sample(fraction=1.0, shuffle=True, seed=3)
    build_matrices(shuffled, metric="macro_f1").write(second)
    names = ["cells.tsv", "cltm.tsv", "m.tsv", "se.tsv", "self_gain.tsv", "missing.tsv", "summary.json"]
    assert sorted(p.name for p in first.iterdir()) == sorted(names)  # no temp files left
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    result.write(first)  # rewriting in place is atomic and changes nothing
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name

    cltm_lines = (first / "cltm.tsv").read_text().splitlines()
    assert cltm_lines[0] == "target\tes\tit\tpt"
    assert cltm_lines[1].split("\t")[0:2] == ["es", "1.0"] and cltm_lines[1].split("\t")[3] == "NaN"
    assert (first / "missing.tsv").read_text() == "target\tdonor\tkind\tpolicy\nes\tpt\tdual\tmean\n"
    summary = json.loads((first / "summary.json").read_text())
    assert summary["policy"] == "mean" and summary["metric"] == "macro_f1"
    assert summary["cells_all"] == 9 and summary["cells_finite"] == 8
    assert summary["ill_conditioned_targets"] == ["pt"] and summary["inference"]["ci"] == 0.95
    assert summary["inference"]["test"] == "t" and summary["inference"]["interval"] == "fieller"


# ------------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------------


def write_run(path: Path, target: str, donor: str | None, seed: int, metrics: dict) -> Path:
    path.write_text(json.dumps({"target": target, "donor": donor, "seed": seed, "metrics": metrics}))
    return path


def test_read_run_metrics(tmp_path: Path):
    paths = [
        write_run(tmp_path / "1.json", "es", None, 0, {"macro_f1": 0.8, "eer": 0.25}),
        write_run(tmp_path / "2.json", "es", "es", 0, {"macro_f1": 0.9, "eer": 0.125}),
        write_run(tmp_path / "3.json", "es", "it", 1, {"macro_f1": 0.85, "eer": 0.2}),
    ]
    runs = read_run_metrics(paths, "macro_f1")
    assert runs.schema == pl.Schema(SCHEMA)
    assert runs.rows() == [("es", None, 0, 0.8), ("es", "es", 0, 0.9), ("es", "it", 1, 0.85)]
    eer = read_run_metrics(paths, "eer")
    assert eer["value"].to_list() == pytest.approx([0.75, 0.875, 0.8])  # 1 - eer


def test_read_run_metrics_errors_name_the_file(tmp_path: Path):
    a = write_run(tmp_path / "a.json", "es", None, 0, {"macro_f1": 0.8})
    b = write_run(tmp_path / "b.json", "es", None, 0, {"macro_f1": 0.7})
    with pytest.raises(ValueError, match="duplicate"):
        read_run_metrics([a, b], "macro_f1")
    with pytest.raises(ValueError, match=r"a\.json.*no metric 'wer'"):
        read_run_metrics([a], "wer")


STUDY_CSV = """model_id,type,lang_src,lang_tgt,seed,eer
es,single,es,,42,0.30
es,single,es,,43,0.25
es_es,dual,es,es,42,0.20
es_es,dual,es,es,43,0.15
es_it,dual,es,it,42,0.25
es_it,dual,es,it,43,0.20
it,single,it,it,42,0.40
"""


def test_read_study_csv(tmp_path: Path):
    path = tmp_path / "sv.csv"
    path.write_text(STUDY_CSV)
    runs, metric = read_study_csv(path)
    assert metric == "eer"
    got = {(t, d, s): v for t, d, s, v in runs.rows()}
    # lang_src is the target, lang_tgt the donor; eer becomes 1 - eer.
    assert got == pytest.approx(
        {
            ("es", None, 42): 0.70,
            ("es", None, 43): 0.75,
            ("es", "es", 42): 0.80,  # self: dual with lang_src == lang_tgt
            ("es", "es", 43): 0.85,
            ("es", "it", 42): 0.75,
            ("es", "it", 43): 0.80,
            ("it", None, 42): 0.60,  # single with lang_tgt == lang_src
        }
    )
    # The study-format table feeds the matrices: C[es, it] = (0.775 - 0.725) / (0.825 - 0.725) = 0.5
    res = build_matrices(runs, metric=metric)
    assert res.C[0, 1] == pytest.approx(0.5)
    flipped, _ = read_study_csv(path, target_column="lang_tgt")
    assert ("it", "es", 42) in {(t, d, s) for t, d, s, _ in flipped.rows()}


def test_read_study_csv_higher_is_better_metric(tmp_path: Path):
    path = tmp_path / "g.csv"
    path.write_text("model_id,type,lang_src,lang_tgt,seed,f1\nes,single,es,,0,0.8\n")
    runs, metric = read_study_csv(path)
    assert metric == "f1" and runs["value"].to_list() == [0.8]


@pytest.mark.parametrize(
    ("body", "row", "what"),
    [
        ("es,single,es,,0,0.3\nes_it,bilingual,es,it,0,0.2\n", 2, "unknown type 'bilingual'"),
        ("es,single,es,,0,0.3\nes_it,dual,es,it,0,n/a\n", 2, "non-numeric eer value 'n/a'"),
        ("es,single,es,,x,0.3\n", 1, "non-numeric seed 'x'"),
        ("es,single,es,,0,0.3\nes,single,es,,1,0.3\nes,single,es,es,0,0.2\n", 3, "duplicate"),
        ("es,single,es,,0,0.3\nes_it,dual,es,it,0\n", 2, "missing column 'eer'"),
        ("es_it,dual,es,,0,0.3\n", 1, "dual row needs lang_src and lang_tgt"),
        ("es,single,es,it,0,0.3\n", 1, "single row must name one language"),
    ],
)
def test_read_study_csv_bad_rows(tmp_path: Path, body: str, row: int, what: str):
    path = tmp_path / "bad.csv"
    path.write_text("model_id,type,lang_src,lang_tgt,seed,eer\n" + body)
    with pytest.raises(ValueError) as err:
        read_study_csv(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: row {row} (line {row + 1}): ")
    assert what in message


def test_read_study_csv_missing_header_column(tmp_path: Path):
    path = tmp_path / "bad.csv"
    path.write_text("model_id,type,lang_src,seed,eer\nes,single,es,0,0.3\n")
    with pytest.raises(ValueError, match=r"bad\.csv: header \(line 1\): missing column 'lang_tgt'$"):
        read_study_csv(path)


def test_read_study_csv_several_metrics_needs_a_choice(tmp_path: Path):
    path = tmp_path / "sv.csv"
    path.write_text("model_id,type,lang_src,lang_tgt,seed,eer,auc,threshold\nes,single,es,,0,0.25,0.8,0.5\n")
    with pytest.raises(ValueError, match="several metric columns"):
        read_study_csv(path)
    runs, metric = read_study_csv(path, metric="auc")
    assert metric == "auc" and runs["value"].to_list() == [0.8]


def test_written_result_reads_back_exactly(tmp_path):
    """read_result is the exact inverse of write (the report reads matrices back from disk)."""
    rng = np.random.default_rng(3)
    rows = [
        (t, d, s, float(rng.uniform(0.5, 0.9)))
        for t in ("aa", "bb", "cc")
        for d in (None, "aa", "bb", "cc")
        for s in range(3)
        if not (t == "cc" and d == "aa")  # one missing dual
    ]
    res = build_matrices(pl.DataFrame(rows, schema=RUNS_SCHEMA, orient="row"), metric="macro_f1")
    res.write(tmp_path / "a")
    back = read_result(tmp_path / "a")
    back.write(tmp_path / "b")
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name
    assert back.missing == res.missing and back.languages == res.languages
    np.testing.assert_array_equal(back.C, res.C)


def test_cli_reports_a_bad_study_csv_in_one_line(tmp_path, capsys):
    from cltm_pipeline.cli import main

    bad = tmp_path / "s.csv"
    bad.write_text("model_id,type,lang_src,lang_tgt,seed,f1\nm,single,es,,0,0.5\nm,bogus,es,it,0,0.6\n")
    assert main(["matrix", "--study-csv", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cltm matrix: error: {bad}: row 2 (line 3): unknown type 'bogus' (expected single or dual)"
