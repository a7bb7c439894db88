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

from cltm_pipeline.analysis.learning_curve import CURVE_SCHEMA
from cltm_pipeline.io import stable_hash
from cltm_pipeline.layout import cell_files, ladder_dir, ladder_tables
from cltm_pipeline.protocol import CellSpec, cell_kind, performance
from cltm_pipeline.training.cell import run_cell
from cltm_pipeline.training.worker import is_current

__all__ = ["run_ladder"]


def _job(spec: CellSpec) -> dict[str, Any]:
    """One cell in a worker process (spawned: torch's thread pools do not survive fork)."""
    return run_cell(spec)


def _config_hash(task: str, arch: str, n: float, hparams: Mapping[str, Any], model_dir: Path) -> str:
    """What a ladder cell's metrics.json must carry to be reused: N, hparams and model."""
    return f"{stable_hash(task, arch, n, json.dumps(dict(hparams), sort_keys=True), model_dir):016x}"


def _done(spec: CellSpec) -> dict[str, Any] | None:
    """The cell's record if it is current (the worker's rule: same config hash and same data hash), else None."""
    if not is_current(spec):
        return None
    return json.loads(spec.out_path.read_text(encoding="utf-8"))


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

    A cell the worker would skip (metrics.json with the same config hash — N, hparams, model — and the same
    data hash) is read, not retrained, so a rerun after a kill costs only the missing cells. Lower-is-better metrics become 1 - x.
    """
    todo, rows = [], []
    for n in ladder:
        chash = _config_hash(task, arch, n, hparams, model_dir)
        for t in targets:
            pick = {"single": [None], "self": [t], "dual": [d for d in donors if d != t]}
            for d in (d for cell in cells for d in pick[cell]):
                for s in seeds:
                    seed_table, test, dev = ladder_tables(work, n, t, s)
                    spec = CellSpec(
                        task=task, arch=arch, model_dir=model_dir, seed_table_path=seed_table, test_path=test,
                        dev_path=dev, ingest_root=ingest_root, target=t,
                        # the ladder needs P only: no fine-tuning footprints (those are the matrix's)
                        donor=d, seed=s, hparams={**hparams, "footprint_top": 0}, out_path=cell_files(ladder_dir(work, "runs", n), t, d, s)[0],
                        device=device, config_hash=chash, threads=1)
                    rec = _done(spec)
                    if rec is not None:
                        rows.append((n, rec))
                    else:
                        todo.append((n, spec))
    if todo:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
            rows += list(zip((n for n, _ in todo), pool.map(_job, [kw for _, kw in todo])))
    out_rows = [_curve_row(n, rec, metric) for n, rec in rows]
    return pl.DataFrame(out_rows, schema=CURVE_SCHEMA, orient="row").sort(["target", "n", "cell", "seed"])
