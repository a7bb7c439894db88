"""Many cells per process: every cell of one (task, arch, target) for one or more seeds, each with its own metrics.json.

A gender cell trains for seconds, while starting a process (torch, transformers) and loading data costs
about as much again: one job per cell wastes most of an allocation and floods the scheduler. A worker runs
the single, self and every dual cell of one target and seed in one process. Each cell still writes its
own ``metrics.json`` (atomically), and a cell whose file exists with the same config and data hash is
skipped, so a rerun after a failure, kill or preemption only trains what is missing or stale.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import polars as pl

from cltm_pipeline.data.subsets import cell_manifest
from cltm_pipeline.io import read_manifest, write_json
from cltm_pipeline.layout import CELL_DIR, cell_files
from cltm_pipeline.protocol import SINGLE, CellSpec

__all__ = ["cell_is_current", "is_current", "run_cells", "write_flag", "file_stamp", "read_flag", "metrics_ok"]

def cell_is_current(metrics_path: Path, config_hash: str, expected_data_hash: str) -> bool:
    """Whether a written cell was produced from the same config and the same data (else it is stale)."""
    try:
        done = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return done.get("config_hash") == config_hash and done.get("data_hash") == expected_data_hash


def is_current(spec: CellSpec, seed_table: pl.DataFrame | None = None) -> bool:
    """Whether the cell's metrics.json holds its config hash and the hash of its data (its training rows from
    ``seed_table``, read from the spec when not given; test, dev and artifacts): such a cell is not retrained."""
    # torch and the task registry's cells: not for the Snakefile, which imports this module for read_flag
    from cltm_pipeline.training.cell import data_hash

    table = read_manifest(spec.seed_table_path) if seed_table is None else seed_table
    expected = data_hash(cell_manifest(table, spec.target, spec.donor), spec.test_path, spec.dev_path, spec.artifacts)
    return cell_is_current(spec.out_path, spec.config_hash, expected)


def run_cells(template: CellSpec, donors: Sequence[str | None], runs_dir: Path, log=sys.stderr) -> dict[str, list[str]]:
    """Run the cell of each donor (None: single) of ``template``'s target and seed that is not already current;
    return the cells done, skipped and failed. Each writes its metrics.json under ``runs_dir`` (layout).

    A failing cell is recorded in its ``failed.json`` (error and traceback) and the worker goes on with
    the next one; the caller decides what a failure means for the job.
    """
    # torch and the task registry's cells: not for the Snakefile, which imports this module for read_flag
    from cltm_pipeline.training.cell import run_cell

    t = template
    seed_table = read_manifest(t.seed_table_path)
    outcome: dict[str, list[str]] = {"trained": [], "skipped": [], "failed": []}
    for donor in donors:
        name = CELL_DIR.format(target=t.target, donor=donor or SINGLE, seed=t.seed)
        metrics_path, failed_path = cell_files(runs_dir, t.target, donor, t.seed)
        spec = replace(t, donor=donor, out_path=metrics_path)
        if is_current(spec, seed_table):
            outcome["skipped"].append(name)
            continue
        t0 = time.perf_counter()
        try:
            res = run_cell(spec)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # one broken cell must not take the other cells of the job with it
            try:
                write_json(failed_path, {"cell": name, "error": f"{type(exc).__name__}: {exc}",
                                         "traceback": traceback.format_exc()})
            except OSError as err:  # disk full, read-only: nothing more can be written, stop in one line
                first = (str(exc).splitlines() or [""])[0][:200]
                raise OSError(err.errno, f"{err.strerror}; cell {name} failed ({type(exc).__name__}: {first}) "
                                         "and its failed.json could not be written", str(failed_path)) from None
            print(f"{name}: FAILED {type(exc).__name__}: {exc}", file=log, flush=True)
            outcome["failed"].append(name)
            continue
        failed_path.unlink(missing_ok=True)
        m = res["metrics"]
        print(f"{name} ({res['cell']}, n_train {res['n_train']}): "
              + ", ".join(f"{k} {v:.4f}" for k, v in sorted(m.items()))
              + f"; {time.perf_counter() - t0:.1f} s", file=log, flush=True)
        outcome["trained"].append(name)
    return outcome


def write_flag(flag: Path, runs_dir: Path, target: str, donors: Sequence[str | None], seeds: Sequence[int],
               done: Sequence[str], config_hash: str) -> None:
    """The worker's flag: it vouches for each cell's metrics.json as written (size, mtime). The workflow's
    start-up check (:func:`cltm_pipeline.workflow.stale_flags`) drops a flag whose files were lost or damaged
    since, so a rerun retrains them."""
    stamps = {CELL_DIR.format(target=target, donor=donor or SINGLE, seed=seed):
              file_stamp(cell_files(runs_dir, target, donor, seed)[0]) for seed in seeds for donor in donors}
    write_json(Path(flag), {"cells": sorted(done), "config_hash": config_hash, "metrics": stamps})


def file_stamp(path: Path) -> list[int]:
    """(size, mtime in ns) of a file: what a worker flag records of each metrics.json it vouches for."""
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


def read_flag(flag: Path) -> dict[str, list[int]] | None:
    """The metrics.json stamps a worker flag records (cell name -> stamp); None if absent or unreadable."""
    try:
        record = json.loads(Path(flag).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("metrics", {}), dict):
        return None
    return record.get("metrics", {})  # a flag written before stamps existed has none: its cells are parsed


def metrics_ok(path: Path, stamp: list[int] | None = None) -> bool:
    """Whether a cell's metrics.json is done: it has the stamp its worker flag recorded, or (no stamp) it
    parses as a metrics record. A truncated, emptied or lost file is not done."""
    path = Path(path)
    if stamp is not None:
        try:
            return file_stamp(path) == list(stamp)
        except OSError:
            return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and isinstance(record.get("metrics"), dict)
