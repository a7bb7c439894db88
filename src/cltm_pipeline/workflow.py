"""Helpers the Snakefile calls at parse time: checks that must fail before any job is submitted."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .commonvoice import read_locale
from .config import Config
from .subsets import SINGLE, cell_kind, check_capacity

__all__ = ["check_release_capacity", "seed_groups"]


def check_release_capacity(cfg: Config) -> str:
    """Check every task's regime against the release's metadata (no audio decoding); skip absent locales.

    Returns a short description of what could be checked. A generated demo release that does not exist
    yet is checked again by each subsets job once it does.
    """
    tables: dict[str, pl.DataFrame] = {}
    for locale in cfg.locales:
        d = Path(cfg.release) / locale
        if (d / "validated.tsv").is_file():
            tables[locale] = read_locale(d, locale)
    for task in cfg.tasks:
        check_capacity(cfg.subset_spec(task), tables)
    if not tables:
        return f"no locale (release {cfg.release} not present yet)"
    return f"{len(tables)}/{len(cfg.locales)} locale(s)"


#: Where one run's metrics and log live; the Snakefile and `cltm status`/`report` share these patterns.
CELL_DIR = "{target}/{donor}/seed{seed}"  # under results/runs/<task>/<arch>/
RUN_PATTERN = "{results}/runs/{task}/{arch}/" + CELL_DIR + "/metrics.json"
FAILED_PATTERN = "{results}/runs/{task}/{arch}/" + CELL_DIR + "/failed.json"
#: One worker job (and log) per (task, arch, target, seed group) trains all of that target's cells; a group
#: is "3" or "0+1+2+3" (:func:`seed_groups`).
RUN_LOG_PATTERN = "{results}/logs/runs/{task}/{arch}/{target}/seed{seeds}.log"


def seed_groups(cfg: Config, task: str, arch: str) -> list[str]:
    """The task's seeds in groups of the architecture's ``resources.seeds_per_job``, named as the worker's
    flag and log name them ("3", or "0+1+2+3"): one worker process trains a target's cells for one group."""
    seeds = cfg.seeds(task)
    k = cfg.raw["tasks"][task]["architectures"][arch].get("resources", {}).get("seeds_per_job", 1)
    return ["+".join(map(str, seeds[i : i + k])) for i in range(0, len(seeds), k)]


def grid(cfg: Config) -> pl.DataFrame:
    """Every training run the config asks for: task, arch, target, donor ("-" single), seed, cell kind."""
    rows = []
    for task, t in cfg.raw["tasks"].items():
        langs = t["languages"]
        for arch in t["architectures"]:
            for seed in cfg.seeds(task):
                for target in langs:
                    for donor in [SINGLE, *langs]:
                        rows.append((task, arch, target, donor, seed, cell_kind(target, donor)))
    return pl.DataFrame(rows, schema=["task", "arch", "target", "donor", "seed", "cell"], orient="row")


def inventory(cfg: Config) -> pl.DataFrame:
    """The grid with each run's status from the files on disk: done, failed (the worker recorded an error) or missing."""
    g = grid(cfg)
    results = cfg.raw["results"]
    paths, status, logs = [], [], []
    group_of = {(task, arch, int(s)): group for task, t in cfg.raw["tasks"].items() for arch in t["architectures"]
                for group in seed_groups(cfg, task, arch) for s in group.split("+")}
    for task, arch, target, donor, seed in g.select("task", "arch", "target", "donor", "seed").iter_rows():
        kw = dict(results=results, task=task, arch=arch, target=target, donor=donor, seed=seed,
                  seeds=group_of[task, arch, seed])
        p, failed = Path(RUN_PATTERN.format(**kw)), Path(FAILED_PATTERN.format(**kw))
        paths.append(str(p))
        logs.append(RUN_LOG_PATTERN.format(**kw))
        status.append("done" if p.is_file() else "failed" if failed.is_file() else "missing")
    return g.with_columns(pl.Series("status", status), pl.Series("path", paths), pl.Series("log", logs))
