"""Render example CLTM reports from synthetic runs, for visual checks of the report layout.

    .venv/bin/python bench/render_example_report.py OUT_DIR [--only demo|study] [--figures] [--png] [--typology uriel.json]

Writes OUT_DIR/demo_report.html (the demo's 6 languages, 5 seeds, demo-like noise) and
OUT_DIR/study_report.html (the reference study's 54-language gender grid: every language of
config/languages.tsv but ``fi``, 10 seeds; plus a 9-language ASR matrix so the report has a table of
contents). The numbers are synthetic but shaped like the study's: high transfer overall, a family bonus,
weak targets, strong donors, a few interference cells, ill-conditioned rows, missing cells and failed seeds.
``--figures`` also writes each heatmap as its own HTML page; ``--png`` screenshots each report with a
headless Chromium if one is installed (``chromium`` on PATH).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from cltm_pipeline.analysis.matrix import RUNS_SCHEMA, build_matrices  # noqa: E402
from cltm_pipeline.analysis.properties import analyse  # noqa: E402
from cltm_pipeline.data.languages import read_languages
from cltm_pipeline.report import MatrixEntry, figures, render_report, write_figure_html  # noqa: E402

DEMO_LANGS = ["es", "it", "de", "nl", "fi", "hu"]
ASR_LANGS = ["eo", "en", "de", "ca", "fr", "es", "be", "ug", "mhr"]
WEAK_TARGETS = {"th", "tr", "uz", "lg"}  # rows with low, partly negative transfer, as in the study
STRONG_DONORS = {"lv", "fa", "ab"}  # columns above 1
FLAT_TARGETS = {"lt", "kab"}  # self gain within seed noise: ill-conditioned rows


def synth_runs(
    langs: list[str],
    families: dict[str, str],
    *,
    seeds: int,
    base: tuple[float, float],
    gain: tuple[float, float],
    noise: float,
    rng: np.random.Generator,
    flat: set[str] = frozenset(),
    drop_cells: int = 0,
    drop_seeds: int = 0,
) -> tuple[pl.DataFrame, list[tuple[str, str | None, int, str]]]:
    """Per-seed runs (target, donor, seed, value) and the inventory rows (target, donor, seed, status)."""
    n = len(langs)
    rows: list[tuple[str, str | None, int, float]] = []
    inventory: list[tuple[str, str | None, int, str]] = []
    b = rng.uniform(*base, n)
    delta = rng.uniform(*gain, n)
    for k, t in enumerate(langs):
        if t in flat:
            delta[k] = noise * 0.3
    c_true = 0.8 + rng.normal(0.0, 0.12, (n, n))
    for i, t in enumerate(langs):
        for j, d in enumerate(langs):
            if families[t] == families[d]:
                c_true[i, j] += 0.12
            if t in WEAK_TARGETS:
                c_true[i, j] -= rng.uniform(0.3, 1.1)
            if d in STRONG_DONORS:
                c_true[i, j] += 0.3
    dual_cells = [(t, d) for t in langs for d in langs if t != d]
    dropped = set()
    if drop_cells:
        dropped = {dual_cells[k] for k in rng.choice(len(dual_cells), size=drop_cells, replace=False)}
    cells = [(t, None) for t in langs] + [(t, d) for t in langs for d in langs]
    failed = {cells[k] for k in rng.choice(len(cells), size=drop_seeds, replace=False)} if drop_seeds else set()
    for i, t in enumerate(langs):
        subset = rng.normal(0.0, noise * 0.7, seeds)  # the target subset of a seed is shared by its cells
        for donor in [None, *langs]:
            j = None if donor is None else langs.index(donor)
            if donor is None:
                mean = b[i]
            elif donor == t:
                mean = b[i] + delta[i]
            else:
                mean = b[i] + c_true[i, j] * delta[i]
            for s in range(seeds):
                if (t, donor) in dropped:
                    inventory.append((t, donor, s, "missing"))
                    continue
                if (t, donor) in failed and s == seeds - 1:
                    inventory.append((t, donor, s, "failed"))
                    continue
                value = float(np.clip(mean + subset[s] + rng.normal(0.0, noise * 0.7), 0.0, 1.0))
                rows.append((t, donor, s, value))
                inventory.append((t, donor, s, "done"))
    return pl.DataFrame(rows, schema=RUNS_SCHEMA, orient="row"), inventory


def inventory_frame(task: str, arch: str, rows: list[tuple[str, str | None, int, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            (task, arch, t, "-" if d is None else d, s, status,
             f"results/runs/{task}/{arch}/{t}/{'-' if d is None else d}/seed{s}/metrics.json")
            for t, d, s, status in rows
        ],
        schema={"task": pl.String, "arch": pl.String, "target": pl.String, "donor": pl.String,
                "seed": pl.Int64, "status": pl.String, "path": pl.String},
        orient="row",
    )


def with_analysis(entry: MatrixEntry, runs: pl.DataFrame, families: dict[str, str], typology: dict | None) -> MatrixEntry:
    """The entry with its analyses (no probes or dev curves: synthetic runs have none)."""
    from cltm_pipeline.analysis.typology import read_typology

    langs = list(entry.result.languages)
    dist = read_typology(typology, langs) if typology else {}
    a = analyse(entry.result, [families.get(t, "Unknown family") for t in langs], runs.iter_rows(), [], dist,
                permutations=999)
    if typology:
        a["typology"] = {"source": typology["source"], "unknown_iso": typology["unknown_iso"],
                         "locales_without_iso": typology["locales_without_iso"]}
    return MatrixEntry(entry.task, entry.arch, entry.metric, entry.result, analysis=a)


def demo_report(out: Path, sheet: pl.DataFrame, *, write_figures: bool, typology: dict | None = None) -> Path:
    families = dict(zip(sheet["locale"], sheet["family"]))
    rng = np.random.default_rng(1)
    runs, inv = synth_runs(DEMO_LANGS, families, seeds=5, base=(0.62, 0.72), gain=(0.04, 0.09), noise=0.03,
                           rng=rng, flat={"hu"}, drop_cells=1, drop_seeds=2)
    result = build_matrices(runs, DEMO_LANGS, metric="macro_f1")
    entry = with_analysis(MatrixEntry("gender", "tiny-hubert", "macro_f1", result), runs, families, typology)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    path = out / "demo_report.html"
    render_report([entry], sheet, inventory_frame("gender", "tiny-hubert", inv), config, path,
                  title="CLTM report — demo corpus (synthetic numbers)", generated="2025-01-01 00:00 UTC")
    if write_figures:
        for name, fig in figures(entry, sheet).items():
            write_figure_html(fig, out / f"demo_{name}.html")
    return path


def study_report(out: Path, sheet: pl.DataFrame, *, write_figures: bool, typology: dict | None = None) -> Path:
    families = dict(zip(sheet["locale"], sheet["family"]))
    gender_langs = [code for code in sheet["locale"] if code != "fi"]
    rng = np.random.default_rng(54)
    runs, inv_g = synth_runs(gender_langs, families, seeds=10, base=(0.80, 0.93), gain=(0.02, 0.05),
                             noise=0.008, rng=rng, flat=FLAT_TARGETS, drop_cells=7, drop_seeds=40)
    gender = with_analysis(MatrixEntry("gender", "mhubert-147", "macro_f1",
                                       build_matrices(runs, gender_langs, metric="macro_f1")),
                           runs, families, typology)
    runs, inv_a = synth_runs(ASR_LANGS, families, seeds=10, base=(0.45, 0.75), gain=(0.04, 0.10),
                             noise=0.01, rng=rng, drop_cells=1, drop_seeds=3)
    asr = with_analysis(MatrixEntry("asr", "mhubert-147", "1-wer", build_matrices(runs, ASR_LANGS)),
                        runs, families, typology)
    inventory = pl.concat(
        [inventory_frame("gender", "mhubert-147", inv_g), inventory_frame("asr", "mhubert-147", inv_a)]
    )
    config = {
        "release": "resources/cv-corpus-17.0-2024-03-15",
        "languages_sheet": "config/languages.tsv",
        "results": "results",
        "aggregation": {"policy": "mean"},
        "tasks": {
            "gender": {"languages": gender_langs, "seeds": 10, "regime": {"unit": "utterances", "n": 1000},
                       "balance": "gender", "archs": ["mhubert-147"]},
            "asr": {"languages": ASR_LANGS, "seeds": 10, "regime": {"unit": "hours", "n": 1.0},
                    "archs": ["mhubert-147"]},
        },
    }
    path = out / "study_report.html"
    render_report([gender, asr], sheet, inventory, config, path,
                  title="CLTM report — reference grid (synthetic numbers)")
    if write_figures:
        for entry in (gender, asr):
            for name, fig in figures(entry, sheet).items():
                write_figure_html(fig, out / f"study_{entry.task}_{name}.html")
    return path


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 2000) -> bool:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("no chromium on PATH: skipping screenshots", file=sys.stderr)
        return False
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "--virtual-time-budget=5000",
             f"--screenshot={png}", html.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--only", choices=["demo", "study"], help="render one example only")
    parser.add_argument("--figures", action="store_true", help="also write each heatmap as its own page")
    parser.add_argument("--png", action="store_true", help="screenshot each report with headless Chromium")
    parser.add_argument("--height", type=int, default=2000, help="screenshot height in px")
    parser.add_argument("--typology", type=Path, help="URIEL+ distances from `cltm typology` (else no Mantel tests)")
    args = parser.parse_args(argv)
    import json

    typology = json.loads(args.typology.read_text(encoding="utf-8")) if args.typology else None
    args.out.mkdir(parents=True, exist_ok=True)
    sheet = read_languages(REPO / "config" / "languages.tsv")
    written = []
    if args.only in (None, "demo"):
        written.append(demo_report(args.out, sheet, write_figures=args.figures, typology=typology))
    if args.only in (None, "study"):
        written.append(study_report(args.out, sheet, write_figures=args.figures, typology=typology))
    for path in written:
        print(path)
        if args.png and screenshot(path, path.with_suffix(".png"), height=args.height):
            print(path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
