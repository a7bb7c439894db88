"""Helpers the Snakefile calls at parse time: checks that must fail before any job is submitted."""

from __future__ import annotations

from math import ceil
from pathlib import Path

import polars as pl

from cltm_pipeline.analysis.design import plan_by_target
from cltm_pipeline.config import Config
from cltm_pipeline.data.commonvoice import read_locale
from cltm_pipeline.data.subsets import PROBE_MAX_CLIPS, SubsetSpec, check_capacity
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.layout import CELL_DIR, path
from cltm_pipeline.training.worker import metrics_ok, read_flag
from cltm_pipeline.protocol import cell_kind

__all__ = ["check_release_capacity", "pool_sizes", "seed_groups", "stale_flags", "design_rounds",
           "inventory"]


def pool_sizes(cfg: Config) -> dict[str, int]:
    """Per locale, the clips per binary gender its ingested training pool holds (``cltm ingest --pool-clips``).

    The largest draw any task (or the learning curve) makes from the locale in one seed is its self cell as a
    target, 2 x N units (its draw as a donor is the first N of the same order); times the seeds, so seeds
    draw as independently as from the whole locale; times ``ingest.pool_safety`` for quarantined clips and
    clips a target drops (its test/dev speakers and sentences); plus the probe set. Hours are converted at
    ``ingest.pool_seconds_per_clip``. ``ingest.pool_clips`` overrides the result for every locale.
    """
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
    """Check every task's regime against the release's metadata (no audio decoding), or against the ingested
    table where ingestion has run (quarantined clips excluded); a locale absent from a real release is an error.

    Returns a short description of what could be checked. A generated demo release that does not exist
    yet is checked again by each subsets job once it does.
    """
    if "demo" not in cfg.raw and Path(cfg.release).is_dir():  # a real release: every locale must be in it
        for task, t in cfg.raw["tasks"].items():
            for k, locale in enumerate(t["languages"]):
                if not (Path(cfg.release) / locale / "validated.tsv").is_file():
                    raise ConfigError(f"tasks.{task}.languages.{k}: locale {locale!r} is not in the release "
                                      f"{cfg.release} (no {Path(cfg.release) / locale / 'validated.tsv'})")
    specs = [cfg.subset_spec(task) for task in cfg.tasks]
    checked = 0
    for locale in cfg.locales:  # one locale's table in memory at a time (CV's largest have 1.8 M rows)
        d = Path(cfg.release) / locale
        ingested = Path(cfg.raw["results"]) / "ingest" / locale / "utterances.parquet"
        if not (d / "validated.tsv").is_file():
            continue
        if ingested.is_file() and ingested.stat().st_mtime >= (d / "validated.tsv").stat().st_mtime:
            table = pl.read_parquet(ingested)  # after quarantine: what subsets will draw from
        else:
            table = read_locale(d, locale)
        for spec in specs:
            check_capacity(spec, {locale: table})
        checked += 1
    if not checked:
        return f"no locale (release {cfg.release} not present yet)"
    return f"{checked}/{len(cfg.locales)} locale(s)"


def seed_groups(cfg: Config, task: str, arch: str) -> list[str]:
    """The task's seeds in groups of the architecture's ``resources.seeds_per_job``, named as the worker's
    flag and log name them ("3", or "0+1+2+3"): one worker process trains a target's cells for one group."""
    seeds = cfg.seeds(task)
    k = cfg.raw["tasks"][task]["architectures"][arch].get("resources", {}).get("seeds_per_job", 1)
    return ["+".join(map(str, seeds[i : i + k])) for i in range(0, len(seeds), k)]


def stale_flags(cfg: Config) -> list[tuple[str, str, Path, str]]:
    """(task, arch, flag, reason) of every worker flag that vouches for a cell whose metrics.json is missing,
    changed or corrupt, or that is missing itself while its matrix exists. Costs one stat per cell.

    Snakemake tracks only the flags, and does not rebuild a missing intermediate file while the files made
    from it exist: removing such a flag and its matrix before the DAG is built makes a plain rerun retrain
    exactly those cells (the worker skips every cell still current) and rebuild the matrix. The flags of an
    adaptive design's rounds (``design.rounds``) are checked too, for the rounds already planned."""
    results, stale = cfg.raw["results"], []
    for task, t in cfg.raw["tasks"].items():
        langs = t["languages"]
        for arch in t["architectures"]:
            matrix = Path(path(results, "matrices.summary", task=task, arch=arch))
            jobs = [("runs.flag", {}, target, cfg.donors(task, target)) for target in langs]
            for r, cells in design_rounds(cfg, task, arch):
                jobs += [("runs.round_flag", {"round": r}, target, donors) for target, donors in cells.items()]
            for seeds in seed_groups(cfg, task, arch):
                for which, extra, target, donors in jobs:
                    kw = dict(task=task, arch=arch, target=target, seeds=seeds)
                    why = _flag_problem(results, Path(path(results, which, **kw, **extra)), kw, donors, matrix)
                    if why:
                        stale.append((task, arch, Path(path(results, which, **kw, **extra)), why))
    return stale


def _flag_problem(results: str, flag: Path, kw: dict, donors: list[str], matrix: Path) -> str | None:
    """Why one worker flag is stale (see :func:`stale_flags`), or None."""
    if not flag.exists():
        return f"missing while {matrix} exists" if matrix.exists() else None
    stamps = read_flag(flag)
    if stamps is None:
        return "unreadable flag"
    for seed, donor in ((int(s), d) for s in kw["seeds"].split("+") for d in donors):
        name = CELL_DIR.format(target=kw["target"], donor=donor, seed=seed)
        metrics = Path(path(results, "runs.metrics", **kw, donor=donor, seed=seed))
        if not metrics_ok(metrics, stamps.get(name)):
            return f"{metrics} {'missing' if not metrics.exists() else 'changed or corrupt'}"
    return None


def design_rounds(cfg: Config, task: str, arch: str) -> list[tuple[int, dict[str, list[str]]]]:
    """(round, target -> donors in config order) of every adaptive round of one matrix planned so far (its
    round file exists), up to the first that planned nothing; none under mode full or without rounds."""
    d = cfg.design
    rounds = d["rounds"] if d["mode"] == "adaptive" else 0
    langs = cfg.raw["tasks"][task]["languages"]
    out = []
    for r in range(1, rounds + 1):
        plan = Path(path(cfg.raw["results"], "design.round", task=task, arch=arch, round=r))
        if not plan.is_file():
            break
        cells = plan_by_target(plan, langs)
        if not cells:
            break
        out.append((r, cells))
    return out


def grid(cfg: Config) -> pl.DataFrame:
    """Every training run the config asks for: task, arch, target, donor ("-" single), seed, cell kind (and
    the cells an adaptive design's rounds planned so far)."""
    rows = []
    for task, t in cfg.raw["tasks"].items():
        langs = t["languages"]
        for arch in t["architectures"]:
            planned = [(target, donor) for _, cells in design_rounds(cfg, task, arch)
                       for target, donors in cells.items() for donor in donors]
            for seed in cfg.seeds(task):
                for target in langs:
                    for donor in cfg.donors(task, target):
                        rows.append((task, arch, target, donor, seed, cell_kind(target, donor)))
                rows += [(task, arch, target, donor, seed, cell_kind(target, donor)) for target, donor in planned]
    return pl.DataFrame(rows, schema=["task", "arch", "target", "donor", "seed", "cell"], orient="row")


def inventory(cfg: Config) -> pl.DataFrame:
    """The grid with each run's status from the files on disk: done (metrics.json as its worker flag recorded
    it, or parseable), failed (the worker recorded an error) or missing (absent, truncated, corrupt)."""
    g = grid(cfg)
    results = cfg.raw["results"]
    paths, status, logs = [], [], []
    flags: dict[tuple, dict[str, list[int]]] = {}
    group_of = {(task, arch, int(s)): group for task, t in cfg.raw["tasks"].items() for arch in t["architectures"]
                for group in seed_groups(cfg, task, arch) for s in group.split("+")}
    round_of = {(task, arch, target, donor): r for task, t in cfg.raw["tasks"].items() for arch in t["architectures"]
                for r, cells in design_rounds(cfg, task, arch) for target, donors in cells.items() for donor in donors}
    for task, arch, target, donor, seed in g.select("task", "arch", "target", "donor", "seed").iter_rows():
        kw = dict(task=task, arch=arch, target=target, donor=donor, seed=seed, seeds=group_of[task, arch, seed])
        r = round_of.get((task, arch, target, donor))  # a cell an adaptive round trained: that round's job
        p, failed = Path(path(results, "runs.metrics", **kw)), Path(path(results, "runs.failed", **kw))
        paths.append(str(p))
        logs.append(path(results, "logs.runs", **kw) if r is None else path(results, "logs.round_runs", **kw, round=r))
        flag = (task, arch, target, kw["seeds"], r)
        if flag not in flags:
            which = "runs.flag" if r is None else "runs.round_flag"
            flags[flag] = read_flag(Path(path(results, which, **kw, round=r))) or {}
        stamp = flags[flag].get(CELL_DIR.format(target=target, donor=donor, seed=seed))
        status.append("done" if metrics_ok(p, stamp) or (stamp is not None and metrics_ok(p))
                      else "failed" if failed.is_file() else "missing")
    return g.with_columns(pl.Series("status", status), pl.Series("path", paths), pl.Series("log", logs))
