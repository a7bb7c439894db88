"""Adaptive design (``cltm plan``): the initial spread, the batch picker, and the CLI contract with bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cltm_pipeline.analysis.completion import read_wide
from cltm_pipeline.analysis.design import RULES, initial_design, next_batch, pick, read_cells
from cltm_pipeline.cli import main as cltm

STUDY = Path(__file__).resolve().parents[2] / "shared" / "realworld" / "study_matrices"


def _asr() -> tuple[list[str], np.ndarray]:
    if not (STUDY / "asr_mhubert.tsv").is_file():
        pytest.skip(f"{STUDY} not present (../shared/realworld)")
    return read_wide(STUDY / "asr_mhubert.tsv")


def _write_cells(path: Path, langs: list[str], C: np.ndarray, measured: np.ndarray, se: float = 0.05) -> Path:
    """A cells.tsv shaped like the workflow's (target donor kind C se; NaN for an unmeasured cell)."""
    rows = ["target\tdonor\tkind\tC\tse"]
    for i, t in enumerate(langs):
        for j, d in enumerate(langs):
            value = C[i, j] if (measured[i, j] or i == j) else np.nan
            rows.append(f"{t}\t{d}\t{'self' if i == j else 'dual'}\t{value}\t{se if i != j else 0.0}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("n, count", [(9, 27), (9, 31), (54, 572)])
def test_the_initial_design_spreads_its_cells_evenly_over_rows_and_columns(n, count):
    mask = initial_design(n, count, seed=3)
    assert mask.sum() == count and not mask.diagonal().any()
    for counts in (mask.sum(0), mask.sum(1)):
        assert counts.max() - counts.min() <= 1, counts
    assert (initial_design(n, count, seed=3) == mask).all() and (initial_design(n, count, seed=4) != mask).any()


def test_a_batch_caps_each_row_and_column_and_is_a_function_of_the_seed():
    rng = np.random.default_rng(0)
    score = rng.random((9, 9))
    score[0, :] += 10.0  # one row far above the rest would take the whole batch without the cap
    np.fill_diagonal(score, -np.inf)
    cells = pick(score, 9, seed=1)
    assert len(cells) == 9 and len({tuple(c) for c in cells}) == 9
    # cap ceil(9 / 9) = 1 per row and column, relaxed to 2 only when the greedy pass gets stuck
    assert np.bincount(cells[:, 0], minlength=9).max() <= 2 and np.bincount(cells[:, 1], minlength=9).max() <= 2
    assert cells[0, 0] == 0 and (cells[1:, 0] != 0).sum() >= 7  # the best cell still goes first, then the rest
    assert (pick(score, 9, seed=1) == cells).all()
    assert len(pick(score, 500, seed=1)) == 72  # more than there is: every free cell


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_picks_only_unmeasured_dual_cells(rule):
    langs, C = _asr()
    obs = initial_design(len(langs), 30, seed=0)
    values = np.where(obs, C, np.nan)
    cells, score = next_batch(values, obs, 8, rule=rule, seed=0, noise=np.full(C.shape, 0.05))
    assert len(cells) == 8 and score is not None
    assert not obs[cells[:, 0], cells[:, 1]].any() and (cells[:, 0] != cells[:, 1]).all()


def test_plan_reads_the_workflows_cells_and_writes_the_same_batch_twice(tmp_path):
    langs, C = _asr()
    measured = initial_design(len(langs), 30, seed=0)
    path = _write_cells(tmp_path / "cells.tsv", langs, C, measured)
    for out in ("a.tsv", "b.tsv"):
        assert cltm(["plan", "--cells", str(path), "--budget", "10", "--out", str(tmp_path / out),
                     "--rule", "committee", "--seed", "5"]) == 0
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    plan = pl.read_csv(tmp_path / "a.tsv", separator="\t")
    assert plan.columns == ["target", "donor", "rank", "rule", "score"] and plan.height == 10
    assert plan["rank"].to_list() == list(range(1, 11)) and (plan["rule"] == "committee").all()
    done = {(langs[i], langs[j]) for i, j in np.argwhere(measured)}
    assert not done & set(zip(plan["target"], plan["donor"])) and (plan["target"] != plan["donor"]).all()


def test_plan_with_nothing_measured_gives_the_initial_design_and_a_complete_output_reads_back(tmp_path):
    langs, C = _asr()
    path = _write_cells(tmp_path / "cells.tsv", langs, C, np.zeros(C.shape, dtype=bool))
    assert cltm(["plan", "--cells", str(path), "--budget", "18", "--out", str(tmp_path / "p.tsv")]) == 0
    plan = pl.read_csv(tmp_path / "p.tsv", separator="\t")
    assert plan.height == 18 and (plan["rule"] == "initial").all()
    assert set(plan["target"].value_counts()["count"]) == {2} and set(plan["donor"].value_counts()["count"]) == {2}
    # cltm complete's cells.tsv (measured column): its predicted cells do not count as measured
    hidden = np.where(initial_design(len(langs), 40, seed=1) | np.eye(len(langs), dtype=bool), C, np.nan)
    wide = tmp_path / "in.tsv"
    wide.write_text("\n".join(["\t".join(["target", *langs])] + ["\t".join([t, *map(str, hidden[i])])
                                                               for i, t in enumerate(langs)]) + "\n")
    assert cltm(["complete", "--matrix", str(wide), "--out", str(tmp_path / "done")]) == 0
    got_langs, got, _ = read_cells(tmp_path / "done" / "cells.tsv")
    assert got_langs == langs and np.isfinite(got).sum() == 40


@pytest.mark.parametrize("text, args, message", [
    ("target\tC\nen\t0.5\n", [], r"cells\.tsv: row 1: no column donor \(need target, donor, C\)"),
    ("target\tdonor\tC\nen\tde\t0.5\nde\ten\n", [], r"cells\.tsv: row 3: 2 fields, the header has 3"),
    ("target\tdonor\tC\nen\tde\t0.5\nde\txx\t0.1\n", ["--languages", "en", "de"],
     r"cells\.tsv: row 3: unknown language 'xx' \(donor; not in --languages\)"),
    ("target\tdonor\tC\nen\tde\tabc\n", [], r"cells\.tsv: row 2: C 'abc' is not a number"),
    ("target\tdonor\tC\nen\tde\t0.5\nen\tde\t0.6\n", [], r"cells\.tsv: row 3: cell en <- de appears twice"),
    ("target\tdonor\tC\nen\ten\t1.0\n", [], r"cells\.tsv: fewer than two languages"),
    ("target\tdonor\tC\nen\tde\t0.5\n", ["--budget", "-1"], r"--budget: must be >= 0, got -1"),
])
def test_bad_cells_are_one_line_naming_the_file_and_row(tmp_path, capsys, text, args, message):
    path = tmp_path / "cells.tsv"
    path.write_text(text, encoding="utf-8")
    argv = ["plan", "--cells", str(path), "--budget", "2", "--out", str(tmp_path / "next.tsv"), *args]
    assert cltm(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("cltm plan: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "next.tsv").exists()


def test_the_report_shows_a_completed_matrix_with_predicted_cells_hatched_and_the_budget(tmp_path):
    from cltm_pipeline.report import render_report
    from cltm_pipeline.report.completion import completion_figure, read_completion

    langs, C = _asr()
    measured = initial_design(len(langs), 36, seed=2) | np.eye(len(langs), dtype=bool)
    wide = tmp_path / "in.tsv"
    wide.write_text("\n".join(["\t".join(["target", *langs])] + [
        "\t".join([t, *(str(v) if m else "NaN" for v, m in zip(C[i], measured[i]))]) for i, t in enumerate(langs)]) + "\n")
    assert cltm(["complete", "--matrix", str(wide), "--out", str(tmp_path / "asr")]) == 0
    cm = read_completion(tmp_path / "asr")
    assert cm.summary["measured_dual"] == 36 and cm.summary["dual_cells"] == 72 and cm.summary["cv_cells"] == 36
    fig = completion_figure(cm, None, "u")
    hatch = fig.data[1]
    assert hatch.name == "predicted (hatched)" and sum(x is None for x in hatch.x) == 3 * 36  # 3 strokes a cell
    hover = np.array(fig.data[0].text)
    assert sum("predicted" in h and "90 % interval [" in h for h in hover.ravel()) == 36
    render_report([], None, None, None, tmp_path / "index.html", completions=[cm])
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert '<section id="completion">' in html and "<b>36 of 72</b> dual cells measured (50% of the full grid)" in html
    assert "held-out error on its own 36 measured cells" in html
    render_report([], None, None, None, tmp_path / "again.html", completions=[cm])
    assert (tmp_path / "again.html").read_bytes() == html.encode("utf-8")


def _config(design: dict | None):
    import copy

    from conftest import REPO
    from test_workflow import SMALL

    from cltm_pipeline.config import load_config

    raw = copy.deepcopy(SMALL)
    raw["tasks"]["gender"]["languages"] = ["es", "de", "fi", "it", "nl", "hu"]
    raw["demo"]["languages"] = ["es", "de", "fi", "it", "nl", "hu"]
    if design is not None:
        raw["design"] = design
    return load_config(raw, source="test", root=REPO), raw


def test_the_adaptive_design_trains_every_single_and_self_cell_and_an_even_share_of_duals():
    from cltm_pipeline.workflow import grid

    full, raw = _config(None)
    langs = raw["tasks"]["gender"]["languages"]
    assert all(full.donors("gender", t) == ["-", *langs] for t in langs) and "design" not in full.raw
    adaptive, _ = _config({"mode": "adaptive", "initial": 0.5, "seed": 1})
    duals = {(t, d) for t in langs for d in adaptive.donors("gender", t) if d not in ("-", t)}
    assert len(duals) == 15  # half of 6 x 5
    for side in (0, 1):
        counts = [sum(1 for c in duals if c[side] == lang) for lang in langs]
        assert max(counts) - min(counts) <= 1, counts
    for t in langs:
        assert adaptive.donors("gender", t)[:1] == ["-"] and t in adaptive.donors("gender", t)
    g = grid(adaptive)  # the inventory knows only the planned cells
    assert g.filter(pl.col("cell") == "dual").height == 15 * 2  # two seeds
    assert g.filter(pl.col("cell") != "dual").height == 6 * 2 * 2


def test_a_bad_design_block_is_one_line_naming_the_key():
    from cltm_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"design.*mode|mode.*design"):
        _config({"mode": "sometimes"})
    with pytest.raises(ConfigError, match=r"design.*initial|initial"):
        _config({"mode": "adaptive", "initial": 1.5})


def test_an_adaptive_workflow_trains_only_the_initial_duals_and_completes_each_matrix(tmp_path):
    """A dry run of the small demo with ``design: {mode: adaptive, initial: 0.5}``: each train job gets the
    single, the self and its target's share of the 6 duals as --donors; rule complete feeds the report."""
    import copy
    import re as _re

    from test_workflow import SMALL, make_workdir, snakemake

    raw = copy.deepcopy(SMALL)
    raw["design"] = {"mode": "adaptive", "initial": 0.5}
    out = snakemake(make_workdir(tmp_path / "wf", raw), "-n", "-p").stdout
    donors = {m.group(1): m.group(2).split() for m in _re.finditer(r"--target (\S+) .*?--donors ((?:\S+ )+?)--seeds", out)}
    assert set(donors) == {"es", "de", "fi"}
    for target, names in donors.items():
        assert names[:1] == ["-"] and target in names and len(names) == 3  # one dual each: 3 of 6
    counts = {rule: int(n) for rule, n in _re.findall(r"^(complete|report|train)\s+(\d+)$", out, flags=_re.M)}
    assert counts == {"complete": 1, "report": 1, "train": 6}, counts


def test_a_design_block_with_rounds_checks_its_budget_and_splits_it_over_the_rounds():
    from cltm_pipeline.errors import ConfigError

    cfg, _ = _config({"mode": "adaptive", "initial": 0.3, "rounds": 3, "budget": 0.8})
    assert cfg.round_sizes("gender") == [5, 5, 5]  # round(0.8 x 30) - round(0.3 x 30) = 15 cells, 5 a round
    assert _config({"mode": "adaptive"})[0].round_sizes("gender") == [] == _config(None)[0].round_sizes("gender")
    for design, message in (
        ({"mode": "adaptive", "rounds": 2}, r"design\.budget: needed with design\.rounds"),
        ({"mode": "adaptive", "initial": 0.5, "rounds": 1, "budget": 0.4}, r"design\.budget: 0\.4 is not above design\.initial"),
        ({"mode": "full", "rounds": 1, "budget": 0.5}, r"design\.rounds: only with mode adaptive"),
        ({"mode": "adaptive", "width": 0.2}, r"design\.width: only with design\.rounds >= 1"),
        ({"mode": "adaptive", "rounds": 1, "budget": 2}, r"design.*budget|budget.*maximum"),
    ):
        with pytest.raises(ConfigError, match=message):
            _config(design)


def test_plan_never_repicks_a_trained_cell_whose_c_is_undefined(tmp_path):
    """A workflow matrix's cells.tsv: trained cells (n_seeds > 0) whose C is NaN (zero self gain) are not
    planned again; with no C defined at all the batch is balanced over the untrained cells."""
    langs = ["aa", "bb", "cc"]
    rows = ["target\tdonor\tn_seeds\tC\tse"]
    trained = {("aa", "bb"), ("bb", "cc"), ("cc", "aa")}
    for t in langs:
        for d in langs:
            rows.append(f"{t}\t{d}\t{2 if (t, d) in trained or t == d else 0}\tNaN\tNaN")
    (tmp_path / "cells.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert cltm(["plan", "--cells", str(tmp_path / "cells.tsv"), "--budget", "3", "--out", str(tmp_path / "next.tsv")]) == 0
    from cltm_pipeline.analysis.design import read_plan

    planned = read_plan(tmp_path / "next.tsv")
    assert len(planned) == 3 and not set(planned) & trained and all(t != d for t, d in planned)


ADAPTIVE_ROUNDS = {"mode": "adaptive", "initial": 0.5, "rounds": 1, "budget": 0.67}


def test_the_small_demo_runs_an_adaptive_round_and_its_report_shows_the_completed_matrix(tmp_path, monkeypatch):
    """The tests' small demo, trained enough that some targets have a self gain (the others' C is undefined),
    under design: {mode: adaptive, initial: 0.5, rounds: 1, budget: 0.67}: 3 initial duals, one round of 1
    cell (checkpoint plan, its train job, the matrix after it), the final matrix with exactly those 4 cells,
    the completion and the report; a rerun has nothing to do."""
    import copy
    import json

    from test_workflow import SMALL, make_workdir, snakemake

    from cltm_pipeline.config import load_config
    from conftest import REPO

    raw = copy.deepcopy(SMALL)
    arch = raw["tasks"]["gender"]["architectures"]["mhubert"]
    arch["hparams"] = {"epochs": 8, "lr": 0.002, "max_seconds": 1.0, "freeze_feature_encoder": False}
    arch["resources"] = {"seeds_per_job": 2}
    raw["design"] = ADAPTIVE_ROUNDS
    work = make_workdir(tmp_path / "wf", raw)
    snakemake(work, "--cores", "2")
    cfg = load_config(raw, source="test", root=REPO)
    langs = raw["tasks"]["gender"]["languages"]
    res = work / "results"
    design = res / "design" / "gender" / "mhubert"
    initial = {(t, d) for t in langs for d in cfg.donors("gender", t) if d not in ("-", t)}
    from cltm_pipeline.analysis.design import read_plan

    round1 = read_plan(design / "round1.tsv")
    assert len(initial) == 3 and len(round1) == cfg.round_sizes("gender")[0] == 1
    assert not set(round1) & initial and not (design / "round2.tsv").exists()
    for t, d in round1:  # the round's worker trained its cell for both seeds
        assert (res / "runs" / "gender" / "mhubert" / t / "round1.seed0+1.done").is_file()
        for s in (0, 1):
            assert (res / "runs" / "gender" / "mhubert" / t / d / f"seed{s}" / "metrics.json").is_file()

    def trained(matrix_dir):
        cells = pl.read_csv(matrix_dir / "cells.tsv", separator="\t")
        return {(t, d) for t, d, n in cells.select("target", "donor", "n_seeds").iter_rows() if n > 0 and t != d}

    assert trained(design / "round0") == initial  # the matrix round 1 was planned from
    assert trained(res / "matrices" / "gender" / "mhubert") == initial | set(round1)
    # the completion: measured = trained with C defined; a defined row's untrained cell predicted; a row
    # with zero self gain left NaN
    done = pl.read_csv(res / "completion" / "gender" / "mhubert" / "cells.tsv", separator="\t").filter(
        pl.col("target") != pl.col("donor"))
    summary = json.loads((res / "completion" / "gender" / "mhubert" / "summary.json").read_text())
    undefined = set(summary["undefined_targets"])
    for t, d, C, measured in done.select("target", "donor", "C", "measured").iter_rows():
        if t in undefined:
            assert np.isnan(C) and not measured
        else:
            assert measured == ((t, d) in initial | set(round1)) and np.isfinite(C), (t, d)
    predicted = done.filter(~pl.col("measured") & pl.col("C").is_not_nan())
    assert predicted.height >= 1 and summary["measured_dual"] == done["measured"].sum() >= 1
    html = (res / "report" / "index.html").read_text(encoding="utf-8")
    assert '<section id="completion">' in html and "predicted (hatched)" in html
    assert f"<b>{summary['measured_dual']} of 6</b> dual cells measured" in html
    again = snakemake(work, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    from cltm_pipeline.workflow import inventory

    monkeypatch.chdir(work)  # the config's results path is relative
    inv = inventory(cfg)  # cltm status: the round's cell is in the grid, done as its round's flag says
    assert inv.height == (3 + 3 + 4) * 2 and (inv["status"] == "done").all()
    (t, d), = round1
    (res / "runs" / "gender" / "mhubert" / t / d / "seed1" / "metrics.json").unlink()
    assert inventory(cfg)["status"].to_list().count("missing") == 1
    # a round's cell lost after the run (or its worker killed before the flag): a plain rerun plans exactly
    # that round's worker and the final matrix again, not the round's plan
    out = snakemake(work, "-n", "-p").stdout
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M)}
    assert counts.get("train_round") == 1 and "plan" not in counts and "train" not in counts, counts
    assert f"--target {t} " in out and f"--donors {d} --seeds 0 1" in out, out[-2000:]


def test_plan_width_stops_once_the_predicted_intervals_are_narrow_enough(tmp_path, capsys):
    """--width W: no cell once the completion's mean interval width is at most W; a batch otherwise."""
    langs, C = _asr()
    measured = initial_design(len(langs), 36, seed=0)
    cells = _write_cells(tmp_path / "cells.tsv", langs, C, measured)
    from cltm_pipeline.analysis.design import read_plan

    assert cltm(["plan", "--cells", str(cells), "--budget", "5", "--width", "100", "--out", str(tmp_path / "a.tsv")]) == 0
    assert read_plan(tmp_path / "a.tsv") == [] and "no cell" in capsys.readouterr().out
    assert cltm(["plan", "--cells", str(cells), "--budget", "5", "--width", "0.001", "--out", str(tmp_path / "b.tsv")]) == 0
    planned = read_plan(tmp_path / "b.tsv")
    assert len(planned) == 5 and "mean interval width" in capsys.readouterr().out
    index = {lang: k for k, lang in enumerate(langs)}
    assert not any(measured[index[t], index[d]] for t, d in planned)
