"""Tests for cltm_pipeline.report: one self-contained, byte-stable HTML report from CLTM results."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from plotly.offline import get_plotlyjs

from cltm_pipeline.analysis.matrix import RUNS_SCHEMA, build_matrices
from cltm_pipeline.data.languages import read_languages
from cltm_pipeline.report import MatrixEntry, figures, render_report, write_figure_html

LANGUAGES = pl.DataFrame(
    {
        "locale": ["es", "it", "de", "nl"],
        "name": ["Spanish", "Italian", "German", "Dutch"],
        "family": ["Indo-European (Romance)", "Indo-European (Romance)", "Indo-European (Germanic)",
                   "Indo-European (Germanic)"],
        "iso639_3": ["spa", "ita", "deu", "nld"],
    }
)
LANGS = ["es", "it", "de", "nl"]

# Per-seed P for 3 seeds. nl's self gain (0.001) is tiny against its seed noise: ill-conditioned row.
# The dual cell nl+es was never run.
BASE = {"es": 0.60, "it": 0.55, "de": 0.65, "nl": 0.70}
GAIN = {"es": 0.10, "it": 0.08, "de": 0.09, "nl": 0.001}
NOISE = (-0.01, 0.0, 0.012)


def synthetic_runs() -> pl.DataFrame:
    rows = []
    for t in LANGS:
        for donor in [None, *LANGS]:
            if (t, donor) == ("nl", "es"):
                continue
            if donor is None:
                mean = BASE[t]
            elif donor == t:
                mean = BASE[t] + GAIN[t]
            else:
                mean = BASE[t] + (0.8 if LANGUAGES_FAMILY[t] == LANGUAGES_FAMILY[donor] else 0.3) * GAIN[t]
            for seed, eps in enumerate(NOISE):
                jitter = 0.002 * ((seed + len(t) + (len(donor) if donor else 0)) % 3)
                rows.append((t, donor, seed, mean + eps + jitter))
    return pl.DataFrame(rows, schema=RUNS_SCHEMA, orient="row")


LANGUAGES_FAMILY = dict(zip(LANGUAGES["locale"], LANGUAGES["family"]))


def inventory_for(runs: pl.DataFrame) -> pl.DataFrame:
    done = {(t, d, s) for t, d, s in runs.select(["target", "donor", "seed"]).iter_rows()}
    rows = []
    for t in LANGS:
        for d in [None, *LANGS]:
            for s in range(len(NOISE)):
                status = "done" if (t, d, s) in done else "missing"
                donor = "-" if d is None else d
                rows.append(("gender", "tiny", t, donor, s, status, f"results/runs/gender/tiny/{t}/{donor}/seed{s}"))
    return pl.DataFrame(
        rows,
        schema={"task": pl.String, "arch": pl.String, "target": pl.String, "donor": pl.String, "seed": pl.Int64,
                "status": pl.String, "path": pl.String},
        orient="row",
    )


CONFIG = {"release": "resources/cv-demo", "aggregation": "mean", "tasks": {"gender": {"languages": LANGS}}}


@pytest.fixture(scope="module")
def entry() -> MatrixEntry:
    result = build_matrices(synthetic_runs(), LANGS, metric="macro_f1")
    return MatrixEntry("gender", "tiny", "macro_f1", result)


@pytest.fixture(scope="module")
def report(entry, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("report") / "report.html"
    render_report([entry], LANGUAGES, inventory_for(synthetic_runs()), CONFIG, path, title="Test report")
    return path.read_text(encoding="utf-8")


def test_fixture_has_the_cases_the_report_must_show(entry):
    r = entry.result
    assert ("nl", "es") in r.missing
    assert [t for t, bad in zip(r.languages, r.ill_conditioned) if bad] == ["nl"]


def test_report_is_self_contained(report):
    bundle = get_plotlyjs()
    assert report.count(bundle[:2000]) == 1  # plotly.js inline, exactly once
    assert not re.search(r"<script[^>]+src=", report)
    assert report.count("cdn.plot.ly") == bundle.count("cdn.plot.ly")  # only the bundle's unused geo default
    assert report.startswith("<!DOCTYPE html>") and report.rstrip().endswith("</html>")


def test_report_names_languages_policy_metric_and_counts(report, entry):
    for row in LANGUAGES.iter_rows(named=True):
        assert row["name"] in report and row["locale"] in report
    assert "policy <b>mean</b>" in report
    assert "macro_f1" in report
    finite = int(np.isfinite(entry.result.C).sum())
    assert finite == 15
    assert f"<b>{finite} / 16</b> cells finite" in report
    assert "C = 1</b>: the donor's data is worth as much" in report
    assert "Test report" in report


def test_report_flags_the_ill_conditioned_target(report, entry):
    rows = re.findall(r'<tr class="ill">.*?</tr>', report)
    assert len(rows) == 1 and "Dutch" in rows[0] and "⚠" in rows[0]
    assert "1 row ill-conditioned" in report
    # The heatmap's row label carries the flag (in plotly's JSON: \u26a0 \u003c/b\u003e), and the row is boxed.
    assert re.search(r"\\u26a0\\u003c\\u002fb\\u003e.{0,80}Dutch", report)
    fig = figures(entry, LANGUAGES)["cltm"]
    flagged = [t for t in fig.layout.yaxis.ticktext if "⚠" in t]
    assert len(flagged) == 1 and "Dutch" in flagged[0]
    assert any(s.line.color == "#b45309" and s.y0 == -0.5 and s.y1 == 0.5 for s in fig.layout.shapes)


def test_report_lists_the_missing_cell(report):
    assert "Missing cells (1)" in report
    assert ">nl+es<" in report
    # ... and the inventory lists its runs as not done, with their seeds.
    assert "Runs not done: 3 runs in 1 cell" in report
    assert re.search(r"<td class=code>nl</td><td class=code>es</td><td>dual</td>.*?0, 1, 2", report)


def test_report_carries_config_and_versions(report):
    assert "release: resources/cv-demo" in report
    assert "plotly" in report and "polars" in report and "numpy" in report


def test_report_is_byte_stable(entry, tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "sub" / "b.html"
    inv = inventory_for(synthetic_runs())
    render_report([entry], LANGUAGES, inv, CONFIG, a, title="T", generated="2025-01-01")
    render_report([entry], LANGUAGES, inv, CONFIG, b, title="T", generated="2025-01-01")
    assert a.read_bytes() == b.read_bytes()
    assert "generated 2025-01-01" in a.read_text(encoding="utf-8")


def test_figures_order_by_family_and_grey_the_missing_cell(entry):
    figs = figures(entry, LANGUAGES)
    assert set(figs) == {"cltm", "m"}
    fig = figs["cltm"]
    labels = [re.sub(r"<[^>]+>|⚠", "", t).strip() for t in fig.layout.yaxis.ticktext]
    assert labels == ["Dutch", "German", "Italian", "Spanish"]  # Germanic, then Romance; by name within
    values = next(t for t in fig.data if t.name == "value")
    missing = next(t for t in fig.data if t.name == "missing")
    z = np.array(values.z, dtype=float)
    assert math.isnan(z[0, 3])  # nl (row 0) + es (column 3)
    assert missing.z[0][3] is not None and missing.text[0][3] == "–"
    assert "cell nl+es not run" in missing.hovertext[0][3]
    assert z[1, 1] == 1.0  # de self cell
    assert values.zmid == 0 and values.zmin == -values.zmax
    hover = values.hovertext[1][2]  # de <- it
    assert "German (de)" in hover and "Italian (it)" in hover and "SE" in hover and "CI" in hover


def test_write_figure_html_is_self_contained_and_stable(entry, tmp_path):
    fig = figures(entry, LANGUAGES)["cltm"]
    write_figure_html(fig, tmp_path / "cltm.html")
    write_figure_html(figures(entry, LANGUAGES)["cltm"], tmp_path / "again" / "cltm.html")
    text = (tmp_path / "cltm.html").read_text(encoding="utf-8")
    assert get_plotlyjs()[:2000] in text
    assert not re.search(r"<script[^>]+src=", text)
    assert (tmp_path / "cltm.html").read_bytes() == (tmp_path / "again" / "cltm.html").read_bytes()


def test_54_languages_random_matrix(tmp_path):
    sheet = read_languages(Path(__file__).resolve().parents[1] / "config" / "languages.tsv")
    langs = [code for code in sheet["locale"] if code != "fi"]
    assert len(langs) == 54
    rng = np.random.default_rng(0)
    rows = []
    for t in langs:
        for donor in [None, *langs]:
            for seed in range(2):
                rows.append((t, donor, seed, float(rng.uniform(0.5, 0.9))))
    result = build_matrices(pl.DataFrame(rows, schema=RUNS_SCHEMA, orient="row"), langs)
    entry = MatrixEntry("gender", "mhubert", "macro_f1", result)
    extra = MatrixEntry("asr", "mhubert", "1-wer", result)
    path = tmp_path / "big.html"
    render_report([entry, extra], sheet, pl.DataFrame(), {}, path)
    text = path.read_text(encoding="utf-8")
    assert 'href="#gender-mhubert"' in text and 'href="#asr-mhubert"' in text  # table of contents
    for name in sheet.filter(pl.col("locale") != "fi")["name"]:
        assert name in text
    fig = figures(entry, sheet)["cltm"]
    assert fig.layout.width <= 1400  # fits a laptop window
    assert len(fig.layout.yaxis.ticktext) == 54


# --------------------------------------------------------------------------------------------------
# Analyses in the report (issue 7)
# --------------------------------------------------------------------------------------------------


def _analysed(entry: MatrixEntry, task: str, arch: str) -> MatrixEntry:
    from cltm_pipeline.analysis.properties import analyse

    r = entry.result
    fam = [LANGUAGES_FAMILY[t] for t in r.languages]
    rng = np.random.default_rng(0)
    dist = rng.uniform(0.2, 1.0, (4, 4))
    dist = (dist + dist.T) / 2
    np.fill_diagonal(dist, 0)
    locales = [t for t in r.languages for _ in range(5)]
    records = [{"target": t, "donor": t, "seed": 0, "cell": "self",
                "probe": {"accuracy": 0.8, "chance": 0.25, "languages": list(r.languages), "n": 20,
                          "projection": {"x": rng.normal(size=20).tolist(), "y": rng.normal(size=20).tolist(),
                                         "locale": locales}},
                "training": {"dev_curve": [[4, 0.5], [8, 0.8]]}} for t in r.languages]
    records += [{"target": t, "donor": None, "seed": 0, "cell": "single", "training": {"dev_curve": [[4, 0.5], [8, 0.7]]}}
                for t in r.languages]
    a = analyse(r, fam, synthetic_runs().iter_rows(), records, {"genetic": dist}, permutations=99)
    return MatrixEntry(task, arch, entry.metric, r, analysis=a)


def test_report_puts_the_cross_task_summary_first_and_every_analysis_per_matrix(entry, tmp_path):
    from cltm_pipeline.analysis.learning_curve import CURVE_SCHEMA, fit_curve, recommend

    entries = [_analysed(entry, "gender", "tiny"), _analysed(entry, "asr", "tiny")]
    curve = pl.DataFrame([("es", 4.0, "single", 4.0, s, 0.5 + 0.01 * s) for s in range(3)]
                         + [("es", 4.0, "self", 8.0, s, 0.7 + 0.01 * s) for s in range(3)], schema=CURVE_SCHEMA,
                         orient="row")
    rec = {"task": "gender", "arch": "tiny", "metric": "macro_f1", "unit": "utterances", "languages": ["es"],
           "seeds": [0, 1, 2],
           **recommend(curve), "fit": fit_curve(curve)}
    out = tmp_path / "index.html"
    render_report(entries, LANGUAGES, inventory_for(synthetic_runs()), CONFIG, out,
                  learning_curves=[{"curve": curve, "rec": rec}])
    html = out.read_text()
    summary = html.index('id="summary"')
    assert summary < html.index('<nav class="toc"') < html.index('<section id="gender-tiny"')
    table = html[summary:html.index("</table>", summary)]
    assert table.count("<tr>") == 3  # header + gender + asr
    for part in ("-properties-section", "-map-section", "-typology-section", "-probes-section",
                 "-training-time-section"):
        assert f'id="gender-tiny{part}"' in html and f'id="asr-tiny{part}"' in html
    for div in ("summary-plot", "gender-tiny-strength", "gender-tiny-map", "gender-tiny-probe", "learning-curve-0"):
        assert f'id="{div}"' in html
    assert "Recommended N = 4" in html
    render_report(entries, LANGUAGES, inventory_for(synthetic_runs()), CONFIG, tmp_path / "again.html",
                  learning_curves=[{"curve": curve, "rec": rec}])
    assert (tmp_path / "again.html").read_bytes() == out.read_bytes()


def test_cltm_heatmap_marks_significant_cells_and_explains_them(entry):
    fig = figures(entry, LANGUAGES)["cltm"]
    names = [t.name for t in fig.data]
    zero = next(t for t in fig.data if t.name.startswith("● C ≠ 0"))
    r = entry.result
    off = ~np.eye(4, dtype=bool)
    assert len([x for x in zero.x if x is not None]) == int(((r.q_zero < 0.05) & off).sum())
    assert any(n.startswith("◆ C ≠ 1") for n in names)
    # a matrix written before the p-values: no marks, no empty legend entries
    from dataclasses import replace

    old = MatrixEntry("gender", "tiny", "macro_f1", replace(r, p_zero=None, p_one=None, q_zero=None, q_one=None))
    assert not any((t.name or "").startswith(("●", "◆")) for t in figures(old, LANGUAGES)["cltm"].data)


# --------------------------------------------------------------------------------------------------
# Typed results: a key the writer always writes fails loudly when missing, never as a silent "–"
# --------------------------------------------------------------------------------------------------

# Containers keyed by data (a language, a cell kind, a distance): their entries are not keys of the format.
_KEYED_BY_DATA = {"properties.donor_strength", "properties.receiver_strength", "mantel", "probes.by_kind",
                  "probes.projections", "training_time.by_kind", "training_time.by_donor"}
# Written by cltm analyse but not shown in the report.
_NOT_SHOWN = {"families", "ill_conditioned", "properties.mean_offdiag_C.se", "properties.mean_offdiag_C.method",
              "significance.alpha", "map.distance", "map.min_shared_coordinates", "probes.projections.*.chance",
              "typology.iso639_3"}


def _format_keys(obj, path=(), pattern=()):
    """(key path, its pattern with "*" for an entry of a data-keyed container) for every key of the format."""
    keyed = ".".join(pattern) in _KEYED_BY_DATA
    for k, v in obj.items():
        p, q = (*path, str(k)), (*pattern, "*" if keyed else str(k))
        if not keyed:
            yield p, ".".join(q)
        if isinstance(v, dict):
            yield from _format_keys(v, p, q)


def _without(obj, path):
    import copy

    out = copy.deepcopy(obj)
    d = out
    for k in path[:-1]:
        d = d[k]
    del d[path[-1]]
    return out


@pytest.fixture(scope="module")
def analysis_json(entry, tmp_path_factory) -> dict:
    """analysis.json as cltm analyse writes it (JSON round trip: NaN stays NaN, tuples become lists)."""
    import json

    from cltm_pipeline.io import write_json

    path = tmp_path_factory.mktemp("analysis") / "analysis.json"
    a = dict(_analysed(entry, "gender", "tiny").analysis)
    a["typology"] = {"source": "URIEL+ (test)", "iso639_3": {}, "unknown_iso": [], "locales_without_iso": []}
    write_json(path, a)
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_key_the_report_shows_is_required_with_a_one_line_error(analysis_json, entry, tmp_path):
    from cltm_pipeline.report import Analysis, ResultsError

    Analysis.parse(analysis_json, "analysis.json")  # the writer's own output reads back
    checked = 0
    for path, pattern in _format_keys(analysis_json):
        key = ".".join(path)
        if pattern in _NOT_SHOWN or key == "typology":  # typology is optional: analyse() alone does not add it
            continue
        with pytest.raises(ResultsError) as err:
            Analysis.parse(_without(analysis_json, path), "results/matrices/gender/tiny/analysis.json")
        msg = str(err.value)
        assert msg.startswith("results/matrices/gender/tiny/analysis.json: missing key ") and repr(key) in msg, msg
        assert "\n" not in msg
        checked += 1
    assert checked > 60  # every statistic, count and label the report prints


def test_a_stale_analysis_json_fails_before_rendering_naming_the_file(analysis_json, entry, tmp_path):
    import json

    from cltm_pipeline.report import ResultsError, read_entry

    mdir = tmp_path / "matrices" / "gender" / "tiny"
    entry.result.write(mdir)
    stale = _without(analysis_json, ("properties", "shares", "positive"))
    (mdir / "analysis.json").write_text(json.dumps(stale), encoding="utf-8")
    with pytest.raises(ResultsError, match=r"analysis\.json: missing key 'properties\.shares\.positive'") as err:
        read_entry(mdir)
    assert str(mdir / "analysis.json") in str(err.value)
    with pytest.raises(ResultsError, match=r"^analysis\.json of gender/tiny: missing key 'properties\.shares\.positive'"):
        MatrixEntry("gender", "tiny", "macro_f1", entry.result, analysis=stale)  # as the CLI builds it
    # an undefined number (NaN, null) is not a missing key: it is shown as "–"
    undefined = json.loads(json.dumps(analysis_json))
    undefined["properties"]["asymmetry"]["value"] = None
    out = tmp_path / "r.html"
    render_report([MatrixEntry("gender", "tiny", "macro_f1", entry.result, analysis=undefined)], LANGUAGES, None,
                  CONFIG, out)
    assert "<td class=num>–</td>" in out.read_text(encoding="utf-8")


def test_a_recommendation_without_a_written_key_fails_naming_it(entry, tmp_path):
    from cltm_pipeline.analysis.learning_curve import CURVE_SCHEMA, fit_curve, recommend
    from cltm_pipeline.report import ResultsError

    curve = pl.DataFrame([("es", 4.0, "single", 4.0, s, 0.5 + 0.01 * s) for s in range(3)]
                         + [("es", 4.0, "self", 8.0, s, 0.7 + 0.01 * s) for s in range(3)], schema=CURVE_SCHEMA,
                         orient="row")
    rec = {"task": "gender", "arch": "tiny", "metric": "macro_f1", "languages": ["es"], "seeds": [0, 1, 2],
           **recommend(curve), "fit": fit_curve(curve)}  # no "unit"
    with pytest.raises(ResultsError, match=r"^recommendation\.json of learning curve 1: missing key 'unit'"):
        render_report([entry], LANGUAGES, None, CONFIG, tmp_path / "r.html", learning_curves=[{"curve": curve, "rec": rec}])
    assert not (tmp_path / "r.html").exists()  # nothing half-written


def test_report_needs_no_torch():
    """The report runs on a CPU-only login node: importing it must not pull in torch (seconds, GBs)."""
    import subprocess
    import sys

    code = "import sys, cltm_pipeline.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
