"""Many cells per process: every cell of one (task, arch, target) for one or more seeds, each with its own metrics.json.

A gender cell trains for seconds, while starting a process (torch, transformers) and loading data costs
about as much again: one job per cell wastes most of an allocation and floods the scheduler. A worker runs
the single, self and every dual cell of one target and seed in one process. Each cell still writes its
own ``metrics.json`` (atomically), and a cell whose file exists with the same config and data hash is
skipped, so a rerun after a failure, kill or preemption only trains what is missing or stale.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import ConfigError
from .io import read_manifest, write_json
from .subsets import SINGLE, cell_manifest
from .train import data_hash, run_cell
from .workflow import CELL_DIR, file_stamp

__all__ = ["cell_paths", "cell_is_current", "run_cells", "add_train_cells_parser"]

def parse_artifacts(items: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` arguments as a mapping; a malformed one is a one-line ConfigError."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--artifact: expected NAME=PATH, got {item!r}")
        out[name] = Path(path)
    return out


def cell_paths(runs_dir: Path, target: str, donor: str | None, seed: int) -> tuple[Path, Path]:
    """(metrics.json, failed.json) of one cell under ``runs_dir`` (donor "-" is the single cell)."""
    d = Path(runs_dir) / CELL_DIR.format(target=target, donor=donor or SINGLE, seed=seed)
    return d / "metrics.json", d / "failed.json"


def cell_is_current(metrics_path: Path, config_hash: str, expected_data_hash: str) -> bool:
    """Whether a written cell was produced from the same config and the same data (else it is stale)."""
    try:
        done = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return done.get("config_hash") == config_hash and done.get("data_hash") == expected_data_hash


def run_cells(
    *,
    task: str,
    arch: str,
    model_dir: Path,
    seed_table_path: Path,
    test_path: Path,
    dev_path: Path,
    ingest_root: Path,
    target: str,
    donors: Sequence[str | None],
    seed: int,
    hparams: Mapping[str, Any],
    runs_dir: Path,
    config_hash: str = "",
    device: str = "auto",
    threads: int | None = None,
    artifacts: Mapping[str, Path] | None = None,
    probe_path: Path | None = None,
    log=sys.stderr,
) -> dict[str, list[str]]:
    """Run every listed cell that is not already current; return the cells done, skipped and failed.

    A failing cell is recorded in its ``failed.json`` (error and traceback) and the worker goes on with
    the next one; the caller decides what a failure means for the job.
    """
    seed_table = read_manifest(Path(seed_table_path))
    outcome: dict[str, list[str]] = {"trained": [], "skipped": [], "failed": []}
    for donor in donors:
        name = f"{target}/{donor or SINGLE}/seed{seed}"
        metrics_path, failed_path = cell_paths(runs_dir, target, donor, seed)
        expected = data_hash(cell_manifest(seed_table, target, donor), Path(test_path), Path(dev_path), artifacts)
        if cell_is_current(metrics_path, config_hash, expected):
            outcome["skipped"].append(name)
            continue
        t0 = time.perf_counter()
        try:
            res = run_cell(
                task=task, arch=arch, model_dir=Path(model_dir), seed_table_path=Path(seed_table_path),
                test_path=Path(test_path), dev_path=Path(dev_path), ingest_root=Path(ingest_root),
                target=target, donor=donor, seed=seed, hparams=hparams, out_path=metrics_path,
                device=device, config_hash=config_hash, threads=threads, artifacts=artifacts, probe_path=probe_path,
            )
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


def cmd_train_cells(args: argparse.Namespace) -> None:
    """Train every cell of one (task, arch, target) for each listed seed in one process; skip cells already current."""
    try:
        hparams = json.loads(args.hparams)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--hparams: not valid JSON ({exc})") from None
    if len(args.seed_tables) != len(args.seeds):
        raise ConfigError(f"--seed-tables: {len(args.seed_tables)} table(s) for {len(args.seeds)} seed(s) in --seeds; "
                          "give one per seed, in the same order")
    donors = [None if d == SINGLE else d for d in args.donors]
    artifacts = parse_artifacts(args.artifact)
    t0 = time.perf_counter()
    outcome: dict[str, list[str]] = {"trained": [], "skipped": [], "failed": []}
    for seed, seed_table in zip(args.seeds, args.seed_tables):
        done = run_cells(
            task=args.task, arch=args.arch, model_dir=Path(args.model_dir), seed_table_path=Path(seed_table),
            test_path=Path(args.test), dev_path=Path(args.dev), ingest_root=Path(args.ingest_root),
            target=args.target, donors=donors, seed=seed, hparams=hparams, runs_dir=Path(args.runs_dir),
            config_hash=args.config_hash, device=args.device, threads=args.threads, artifacts=artifacts,
            probe_path=Path(args.probe) if args.probe else None, log=sys.stdout,
        )
        for k, v in done.items():
            outcome[k] += v
    summary = {k: len(v) for k, v in outcome.items()}
    seeds = "+".join(map(str, args.seeds))
    print(f"train-cells {args.task}/{args.arch}/{args.target}/seed{seeds}: {summary} in {time.perf_counter() - t0:.1f} s")
    if outcome["failed"]:
        # the finished cells are on disk; failing the job makes Snakemake retry (only) the failed ones
        print(f"cltm train-cells: error: {len(outcome['failed'])} cell(s) failed: {', '.join(outcome['failed'])} "
              f"(tracebacks in their failed.json)", file=sys.stderr)
        raise SystemExit(1)
    # the flag vouches for each cell's metrics.json as written (size, mtime): the workflow's start-up check
    # (workflow.stale_flags) drops a flag whose files were lost or damaged since, so a rerun retrains them
    cells = sorted(outcome["trained"] + outcome["skipped"])
    stamps = {f"{args.target}/{donor}/seed{seed}": file_stamp(cell_paths(Path(args.runs_dir), args.target, donor, seed)[0])
              for seed in args.seeds for donor in args.donors}
    write_json(Path(args.flag), {"cells": cells, "config_hash": args.config_hash, "metrics": stamps})


def add_train_cells_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``cltm train-cells`` to the ``cltm`` subparsers."""
    s = subparsers.add_parser("train-cells", help=cmd_train_cells.__doc__)
    s.add_argument("--task", required=True)
    s.add_argument("--arch", required=True)
    s.add_argument("--model-dir", required=True)
    s.add_argument("--seed-tables", "--seed-table", nargs="+", required=True, help="the target's seed table of each seed")
    s.add_argument("--test", required=True)
    s.add_argument("--dev", required=True)
    s.add_argument("--ingest-root", required=True)
    s.add_argument("--target", required=True)
    s.add_argument("--donors", nargs="+", required=True, help='"-" (single), the target (self), other locales (dual)')
    s.add_argument("--seeds", "--seed", type=int, nargs="+", required=True, help="seeds, one worker for all of them")
    s.add_argument("--hparams", required=True, help="hyper-parameters as a JSON object")
    s.add_argument("--config-hash", default="")
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int)
    s.add_argument("--runs-dir", required=True, help="results/runs/<task>/<arch>")
    s.add_argument("--artifact", action="append", default=[], metavar="NAME=PATH", help="a task artifact (repeatable)")
    s.add_argument("--probe", help="the task's probe set (used when hparams.probe_clips > 0)")
    s.add_argument("--flag", required=True, help="file written when every cell is done")
    s.set_defaults(func=cmd_train_cells)
    return s
