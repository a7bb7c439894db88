"""``cltm validate-config``, ``status``, ``ready`` and ``report``: the workflow's state and the report."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import polars as pl

from cltm_pipeline.data.languages import read_languages
from cltm_pipeline.io import write_json

__all__ = ["register"]


def cmd_validate_config(args: argparse.Namespace) -> None:
    """Validate the config and, where the release exists, that every locale holds what the regimes ask."""
    # jsonschema and the registries (no torch): only the commands that read the config
    from cltm_pipeline.config import load_config
    from cltm_pipeline.workflow import check_release_capacity

    cfg = load_config(Path(args.config))
    checked = check_release_capacity(cfg)
    print(f"{cfg.source}: valid ({len(cfg.tasks)} task(s), {len(cfg.locales)} locale(s); capacity checked for {checked})")


def cmd_status(args: argparse.Namespace) -> None:
    """Cells done / missing / failed per task and architecture, from the files on disk."""
    # jsonschema and the registries (no torch): only the commands that read the config
    from cltm_pipeline.config import load_config
    from cltm_pipeline.workflow import inventory

    cfg = load_config(Path(args.config))
    t0 = time.perf_counter()
    inv = inventory(cfg)
    table = (
        inv.group_by("task", "arch", "status").len()
        .pivot(on="status", index=["task", "arch"], values="len")
        .fill_null(0)
    )
    for col in ("done", "missing", "failed"):
        if col not in table.columns:
            table = table.with_columns(pl.lit(0, dtype=pl.UInt32).alias(col))
    print(f"{'task':<10} {'arch':<12} {'done':>8} {'missing':>8} {'failed':>8} {'total':>8}")
    for r in table.sort("task", "arch").iter_rows(named=True):
        total = r["done"] + r["missing"] + r["failed"]
        print(f"{r['task']:<10} {r['arch']:<12} {r['done']:>8} {r['missing']:>8} {r['failed']:>8} {total:>8}")
    failed = inv.filter(pl.col("status") == "failed")
    for r in failed.head(args.show).iter_rows(named=True):
        print(f"failed {r['task']}/{r['arch']}/{r['target']}/{r['donor']}/seed{r['seed']}: "
              f"{Path(r['path']).with_name('failed.json')} (job log {r['log']})")
    if failed.height > args.show:
        print(f"... and {failed.height - args.show} more failed cells")
    print(f"({inv.height:,} cells checked in {time.perf_counter() - t0:.2f} s)")


def cmd_ready(args: argparse.Namespace) -> None:
    """Record that every input of a stage aggregate exists (the workflow's per-task "inputs ready" flag)."""
    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} input(s) of {args.out} missing, e.g. {missing[0]}")
    write_json(Path(args.out), {"inputs": sorted(args.inputs)})
    print(f"ready: {len(args.inputs)} input(s) -> {args.out}")


def cmd_report(args: argparse.Namespace) -> None:
    """Render the HTML report (and one page per heatmap for `snakemake --report`) from written matrices."""
    # plotly and the config's registries: only the report command pays for them
    from cltm_pipeline.config import load_config
    from cltm_pipeline.report import figures, read_entry, render_report, write_figure_html
    from cltm_pipeline.workflow import inventory

    cfg = load_config(json.loads(args.config_json), source="config", root=Path.cwd())
    entries = [read_entry(Path(mdir)) for mdir in args.matrices]  # a stale analysis.json: one line, nothing written
    curves = [
        {"curve": pl.read_csv(Path(d) / "curve.tsv", separator="\t"),
         "rec": json.loads((Path(d) / "recommendation.json").read_text(encoding="utf-8"))}
        for d in args.learning_curves or []
    ]
    languages = read_languages(Path(args.languages_sheet))
    inv = inventory(cfg)
    out = Path(args.out)
    from cltm_pipeline.report.completion import read_completion  # plotly: only the report command loads it

    completed = [read_completion(Path(d)) for d in args.completions or []]
    render_report(entries, languages, inv, cfg.raw, out, learning_curves=curves, completions=completed)
    if args.figures:
        for e in entries:
            for kind, fig in figures(e, languages).items():
                write_figure_html(fig, Path(args.figures) / f"{e.task}_{e.arch}_{kind}.html")
    done = int((inv["status"] == "done").sum())
    print(f"report {out}: {len(entries)} matrix(es), {done}/{inv.height} runs done")


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``cltm`` subparsers."""
    s = sub.add_parser("validate-config", help=cmd_validate_config.__doc__)
    s.add_argument("config", nargs="?", default="config/config.yaml", help="workflow config (default: %(default)s)")
    s.set_defaults(func=cmd_validate_config)

    s = sub.add_parser("status", help=cmd_status.__doc__)
    s.add_argument("config", nargs="?", default="config/config.yaml", help="workflow config (default: %(default)s)")
    s.add_argument("--show", type=int, default=20, help="failed cells to list (default: %(default)s)")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("ready", help=cmd_ready.__doc__)
    s.add_argument("--inputs", nargs="+", required=True, help="files the aggregate stands for")
    s.add_argument("--out", required=True, help="the flag (JSON listing the inputs)")
    s.set_defaults(func=cmd_ready)

    s = sub.add_parser("report", help=cmd_report.__doc__)
    s.add_argument("--config-json", required=True, help="the effective workflow config as JSON")
    s.add_argument("--languages-sheet", required=True)
    s.add_argument("--matrices", nargs="+", required=True, help="matrix directories <...>/<task>/<arch>")
    s.add_argument("--out", required=True, help="index.html to write")
    s.add_argument("--figures", help="also write one self-contained page per heatmap into this directory")
    s.add_argument("--learning-curves", nargs="*", help="cltm learning-curve output directories to show")
    s.add_argument("--completions", nargs="*", help="cltm complete output directories to show")
    s.set_defaults(func=cmd_report)
