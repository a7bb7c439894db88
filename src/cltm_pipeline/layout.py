"""Every results path, stated once: the rules (through common.smk), the CLI, the worker, the learning curve
and ``cltm status`` build them here.

Patterns are relative to the config's ``results`` directory; ``{name}`` fields are Snakemake wildcards
until :func:`path` fills them.
"""

from __future__ import annotations

import re
from pathlib import Path

from cltm_pipeline.protocol import SINGLE

__all__ = ["PATTERNS", "CELL_DIR", "path", "cell_files", "footprint_files", "run_metrics", "ladder_dir", "ladder_tables"]

#: One cell's directory under ``runs/<task>/<arch>/`` (donor "-" is the single cell).
CELL_DIR = "{target}/{donor}/seed{seed}"

PATTERNS: dict[str, str] = {
    "ingest": "ingest",
    "ingest.table": "ingest/{locale}/utterances.parquet",
    "ingest.audio": "ingest/{locale}/audio.npy",
    "ingest.quarantine": "ingest/{locale}/quarantine.tsv",
    "ingest.summary": "ingest/{locale}/ingest.json",
    "subsets.test": "subsets/{task}/{target}/test.tsv",
    "subsets.dev": "subsets/{task}/{target}/dev.tsv",
    "subsets.seed_table": "subsets/{task}/{target}/seed{seed}.tsv",
    "subsets.seed_stats": "subsets/{task}/{target}/seed{seed}.json",
    "subsets.target_artifact": "subsets/{task}/{target}/{artifact}",
    "subsets.task_artifact": "subsets/{task}/{artifact}",
    "subsets.probe": "subsets/{task}/probe.tsv",
    "runs": "runs/{task}/{arch}",
    "runs.metrics": "runs/{task}/{arch}/" + CELL_DIR + "/metrics.json",
    "runs.failed": "runs/{task}/{arch}/" + CELL_DIR + "/failed.json",
    # a single cell's fine-tuning footprint: per-tensor index (JSON) and top-k |update| mask as packed bits
    "runs.footprint": "runs/{task}/{arch}/" + CELL_DIR + "/footprint.json",
    "runs.footprint_bits": "runs/{task}/{arch}/" + CELL_DIR + "/footprint.bits",
    # one worker job (and log) per (task, arch, target, seed group "3" or "0+1+2+3") trains all its cells
    "runs.flag": "runs/{task}/{arch}/{target}/seed{seeds}.done",
    "logs.runs": "logs/runs/{task}/{arch}/{target}/seed{seeds}.log",
    # design: {mode: adaptive, rounds: k}: round r's worker job of a target trains the cells round r planned
    "runs.round_flag": "runs/{task}/{arch}/{target}/round{round}.seed{seeds}.done",
    "logs.round_runs": "logs/runs/{task}/{arch}/{target}/round{round}.seed{seeds}.log",
    "matrices": "matrices/{task}/{arch}",
    "matrices.summary": "matrices/{task}/{arch}/summary.json",
    "matrices.cells": "matrices/{task}/{arch}/cells.tsv",
    "matrices.cltm": "matrices/{task}/{arch}/cltm.tsv",
    "matrices.analysis": "matrices/{task}/{arch}/analysis.json",
    "matrices.overlap": "matrices/{task}/{arch}/overlap.tsv",
    "learning_curve.curve": "learning_curve/{task}/{arch}/curve.tsv",
    "learning_curve.recommendation": "learning_curve/{task}/{arch}/recommendation.json",
    "embeddings": "embeddings/{task}/{arch}/{locale}.json",
    "ready.ingested": "ready/{task}/ingested.json",
    "ready.seed_tables": "ready/{task}/seed_tables.json",
    "ready.embeddings": "ready/{task}/{arch}/embeddings.json",
    "typology": "typology/uriel.json",
    "completion.cells": "completion/{task}/{arch}/cells.tsv",
    # the cells round r (1..k) trains (cltm plan), planned from the matrix after round r - 1 (round0: initial)
    "design.round": "design/{task}/{arch}/round{round}.tsv",
    "design.matrix": "design/{task}/{arch}/round{round}",
    "design.cltm": "design/{task}/{arch}/round{round}/cltm.tsv",
    "design.cells": "design/{task}/{arch}/round{round}/cells.tsv",
    "design.summary": "design/{task}/{arch}/round{round}/summary.json",
    "report": "report/index.html",
    "report.figure": "report/figures/{task}_{arch}_{kind}.html",
    # a job's log and its benchmark (wall and CPU seconds), named after the rule and its wildcards
    "logs": "logs/{name}.log",
    "benchmarks": "benchmarks/{name}.tsv",
}


def path(results: str | Path, which: str, /, **fields: object) -> str:
    """The pattern ``which`` under ``results``, with the given fields filled in and the others left as
    wildcards (``{task}``)."""
    pattern = PATTERNS[which]
    for key, value in fields.items():
        pattern = re.sub(r"\{" + re.escape(key) + r"\}", str(value).replace("\\", "\\\\"), pattern)
    return f"{results}/{pattern}"


def cell_files(runs_dir: Path, target: str, donor: str | None, seed: int) -> tuple[Path, Path]:
    """(metrics.json, failed.json) of one cell under a ``runs/<task>/<arch>`` directory."""
    d = Path(runs_dir) / CELL_DIR.format(target=target, donor=donor or SINGLE, seed=seed)
    return d / "metrics.json", d / "failed.json"


def footprint_files(metrics_path: Path) -> tuple[Path, Path]:
    """(footprint.json, footprint.bits) of the cell whose metrics.json is ``metrics_path``."""
    d = Path(metrics_path).parent
    return (d / Path(PATTERNS["runs.footprint"]).name, d / Path(PATTERNS["runs.footprint_bits"]).name)


def run_metrics(runs_dir: Path, languages: list[str] | None = None, seeds: list[int] | None = None) -> list[Path]:
    """Every cell's metrics.json under a ``runs/<task>/<arch>`` directory, restricted to languages and seeds if
    given."""
    langs, keep = set(languages or []), set(seeds or [])
    return [
        p for p in sorted(Path(runs_dir).glob("*/*/seed*/metrics.json"))
        if (not langs or (p.parts[-4] in langs and p.parts[-3] in langs | {SINGLE}))
        and (not keep or int(p.parts[-2].removeprefix("seed")) in keep)
    ]


def ladder_dir(work: Path, part: str, n: float) -> Path:
    """``work/<part>/n<N>``: where the learning curve's subsets (part "subsets") and runs (part "runs") at N
    live; under ``runs`` each cell has the matrix's own ``CELL_DIR``."""
    return Path(work) / part / f"n{n:g}"


def ladder_tables(work: Path, n: float, target: str, seed: int) -> tuple[Path, Path, Path]:
    """(seed table, test set, dev set) of one target and seed of the learning curve's subsets at N."""
    d = ladder_dir(work, "subsets", n) / target
    return d / f"seed{seed}.tsv", d / "test.tsv", d / "dev.tsv"
