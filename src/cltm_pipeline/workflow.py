"""Helpers the Snakefile calls at parse time: checks that must fail before any job is submitted."""

from __future__ import annotations

from math import ceil
from pathlib import Path

import polars as pl

from .commonvoice import read_locale
from .config import Config
from .subsets import SINGLE, SubsetSpec, cell_kind, check_capacity

__all__ = ["check_release_capacity", "pool_sizes"]


def pool_sizes(cfg: Config) -> dict[str, int]:
    """Per locale, the clips per binary gender its ingested training pool holds (``cltm ingest --pool-clips``).

    The largest draw any task (or the learning curve) makes from the locale in one seed is its self cell as a
    target, 2 x N units (its draw as a donor is the first N of the same order); times the seeds, so seeds
    draw as independently as from the whole locale; times ``ingest.pool_safety`` for quarantined clips and
    clips a target drops (its test/dev speakers and sentences); plus the probe set. Hours are converted at
    ``ingest.pool_seconds_per_clip``. ``ingest.pool_clips`` overrides the result for every locale.
    """
    from .probe import PROBE_MAX_CLIPS

    ing = cfg.raw["ingest"]
    if ing.get("pool_clips") is not None:
        return {loc: int(ing["pool_clips"]) for loc in cfg.locales}

    def per_gender(spec: SubsetSpec, n: float) -> float:
        clips = n if spec.unit == "utterances" else n * 3600.0 / ing["pool_seconds_per_clip"]
        return clips / 2 if spec.balance == "gender" else clips

    need: dict[str, float] = dict.fromkeys(cfg.locales, 0.0)
    for task in cfg.tasks:
        spec = cfg.subset_spec(task)
        for loc in spec.languages:
            need[loc] = max(need[loc], 2 * per_gender(spec, spec.n) * len(spec.seeds))
    lc = cfg.raw.get("learning_curve")
    if lc is not None:
        spec = cfg.subset_spec(lc["task"])
        for loc in lc["languages"]:
            need[loc] = max(need[loc], 2 * per_gender(spec, max(lc["ladder"])) * len(cfg.learning_curve_seeds()))
    return {loc: int(ceil(v * ing["pool_safety"])) + PROBE_MAX_CLIPS for loc, v in need.items()}


def check_release_capacity(cfg: Config) -> str:
    """Check every task's regime against the release's metadata (no audio decoding); skip absent locales.

    Returns a short description of what could be checked. A generated demo release that does not exist
    yet is checked again by each subsets job once it does.
    """
    specs = [cfg.subset_spec(task) for task in cfg.tasks]
    checked = 0
    for locale in cfg.locales:  # one locale's table in memory at a time (CV's largest have 1.8 M rows)
        d = Path(cfg.release) / locale
        if (d / "validated.tsv").is_file():
            table = read_locale(d, locale)
            for spec in specs:
                check_capacity(spec, {locale: table})
            checked += 1
    if not checked:
        return f"no locale (release {cfg.release} not present yet)"
    return f"{checked}/{len(cfg.locales)} locale(s)"


#: Where one run's metrics and log live; the Snakefile and `cltm status`/`report` share these patterns.
CELL_DIR = "{target}/{donor}/seed{seed}"  # under results/runs/<task>/<arch>/
RUN_PATTERN = "{results}/runs/{task}/{arch}/" + CELL_DIR + "/metrics.json"
FAILED_PATTERN = "{results}/runs/{task}/{arch}/" + CELL_DIR + "/failed.json"
#: One worker job (and log) per (task, arch, target, seed) trains all of that target's cells.
RUN_LOG_PATTERN = "{results}/logs/runs/{task}/{arch}/{target}/seed{seed}.log"


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
    for task, arch, target, donor, seed in g.select("task", "arch", "target", "donor", "seed").iter_rows():
        kw = dict(results=results, task=task, arch=arch, target=target, donor=donor, seed=seed)
        p, failed = Path(RUN_PATTERN.format(**kw)), Path(FAILED_PATTERN.format(**kw))
        paths.append(str(p))
        logs.append(RUN_LOG_PATTERN.format(**kw))
        status.append("done" if p.is_file() else "failed" if failed.is_file() else "missing")
    return g.with_columns(pl.Series("status", status), pl.Series("path", paths), pl.Series("log", logs))
