"""Training the learning curve's ladder: every (N, target, cell, seed) on the subsets ``draw_ladder`` wrote.

The pure parts (drawing the ladder's subsets, the fit, the recommendation, the outputs) live in
:mod:`cltm_pipeline.analysis.learning_curve`; this module is the part that trains, with torch.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from .analysis.learning_curve import CURVE_SCHEMA, ladder_dir
from .io import stable_hash
from .protocol import SINGLE, cell_kind, performance
from .train import run_cell

__all__ = ["run_ladder"]


def _job(kw: dict[str, Any]) -> dict[str, Any]:
    """One cell in a worker process (spawned: torch's thread pools do not survive fork)."""
    return run_cell(**kw)


def _config_hash(task: str, arch: str, n: float, hparams: Mapping[str, Any], model_dir: Path) -> str:
    """What a ladder cell's metrics.json must carry to be reused: N, hparams and model."""
    return f"{stable_hash(task, arch, n, json.dumps(dict(hparams), sort_keys=True), model_dir):016x}"


def _done(out: Path, config_hash: str) -> dict[str, Any] | None:
    """The record at ``out`` if a run with this config hash wrote it, else None (the cell is to train)."""
    if not out.is_file():
        return None
    rec = json.loads(out.read_text(encoding="utf-8"))
    return rec if rec.get("config_hash") == config_hash else None


def _curve_row(n: float, rec: Mapping[str, Any], metric: str) -> tuple[str, float, str, float, int, float]:
    """One row of the curve table from a cell's metrics.json record (P: higher is better)."""
    cell = cell_kind(rec["target"], rec.get("donor"))
    units = 2 * float(n) if cell != "single" else float(n)
    return rec["target"], float(n), cell, units, int(rec["seed"]), performance(metric, float(rec["metrics"][metric]))


def run_ladder(
    task: str, arch: str, model_dir: Path, ingest_root: Path, targets: Sequence[str], ladder: Sequence[float],
    seeds: Sequence[int], hparams: Mapping[str, Any], work: Path, metric: str, *, jobs: int = 1,
    cells: Sequence[str] = ("single", "self"), donors: Sequence[str] = (), device: str = "cpu",
) -> pl.DataFrame:
    """Train every (N, target, cell, seed) from the tables ``draw_ladder`` wrote; the curve as a table.

    A cell whose metrics.json already exists with the same config hash (N, hparams, model) is read, not
    retrained, so a rerun after a kill costs only the missing cells. Lower-is-better metrics become 1 - x.
    """
    todo, rows = [], []
    for n in ladder:
        chash = _config_hash(task, arch, n, hparams, model_dir)
        for t in targets:
            sub = ladder_dir(work, "subsets", n) / t
            pick = {"single": [None], "self": [t], "dual": [d for d in donors if d != t]}
            for d in (d for cell in cells for d in pick[cell]):
                for s in seeds:
                    out = ladder_dir(work, "runs", n) / t / (d or SINGLE) / f"seed{s}" / "metrics.json"
                    rec = _done(out, chash)
                    if rec is not None:
                        rows.append((n, rec))
                        continue
                    todo.append((n, dict(
                        task=task, arch=arch, model_dir=Path(model_dir), seed_table_path=sub / f"seed{s}.tsv",
                        test_path=sub / "test.tsv", dev_path=sub / "dev.tsv", ingest_root=Path(ingest_root),
                        target=t, donor=d, seed=s, hparams=dict(hparams), out_path=out, device=device,
                        config_hash=chash, threads=1)))
    if todo:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
            rows += list(zip((n for n, _ in todo), pool.map(_job, [kw for _, kw in todo])))
    out_rows = [_curve_row(n, rec, metric) for n, rec in rows]
    return pl.DataFrame(out_rows, schema=CURVE_SCHEMA, orient="row").sort(["target", "n", "cell", "seed"])
