"""Helpers the Snakefile calls at parse time: checks that must fail before any job is submitted."""

from __future__ import annotations

import json
from math import ceil
from pathlib import Path

import polars as pl

from .commonvoice import read_locale
from .config import Config, ConfigError
from .subsets import SINGLE, SubsetSpec, cell_kind, check_capacity

__all__ = ["check_release_capacity", "pool_sizes", "seed_groups", "stale_flags", "metrics_ok", "file_stamp", "read_flag",
           "inventory"]


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


#: The worker flag of one (task, arch, target, seed group): written once every cell of it is done.
FLAG_PATTERN = "{results}/runs/{task}/{arch}/{target}/seed{seeds}.done"


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


def stale_flags(cfg: Config) -> list[tuple[str, str, Path, str]]:
    """(task, arch, flag, reason) of every worker flag that vouches for a cell whose metrics.json is missing,
    changed or corrupt, or that is missing itself while its matrix exists. Costs one stat per cell.

    Snakemake tracks only the flags, and does not rebuild a missing intermediate file while the files made
    from it exist: removing such a flag and its matrix before the DAG is built makes a plain rerun retrain
    exactly those cells (the worker skips every cell still current) and rebuild the matrix."""
    results, stale = cfg.raw["results"], []
    for task, t in cfg.raw["tasks"].items():
        langs = t["languages"]
        for arch in t["architectures"]:
            matrix = Path(results) / "matrices" / task / arch / "summary.json"
            for seeds in seed_groups(cfg, task, arch):
                for target in langs:
                    kw = dict(results=results, task=task, arch=arch, target=target, seeds=seeds)
                    flag = Path(FLAG_PATTERN.format(**kw))
                    if not flag.exists():
                        if matrix.exists():
                            stale.append((task, arch, flag, f"missing while {matrix} exists"))
                        continue
                    stamps = read_flag(flag)
                    if stamps is None:
                        stale.append((task, arch, flag, "unreadable flag"))
                        continue
                    for seed, donor in ((int(s), d) for s in seeds.split("+") for d in [SINGLE, *langs]):
                        name = CELL_DIR.format(target=target, donor=donor, seed=seed)
                        path = Path(RUN_PATTERN.format(**kw, donor=donor, seed=seed))
                        if not metrics_ok(path, stamps.get(name)):
                            why = "missing" if not path.exists() else "changed or corrupt"
                            stale.append((task, arch, flag, f"{path} {why}"))
                            break
    return stale


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
    """The grid with each run's status from the files on disk: done (metrics.json as its worker flag recorded
    it, or parseable), failed (the worker recorded an error) or missing (absent, truncated, corrupt)."""
    g = grid(cfg)
    results = cfg.raw["results"]
    paths, status, logs = [], [], []
    flags: dict[tuple, dict[str, list[int]]] = {}
    group_of = {(task, arch, int(s)): group for task, t in cfg.raw["tasks"].items() for arch in t["architectures"]
                for group in seed_groups(cfg, task, arch) for s in group.split("+")}
    for task, arch, target, donor, seed in g.select("task", "arch", "target", "donor", "seed").iter_rows():
        kw = dict(results=results, task=task, arch=arch, target=target, donor=donor, seed=seed,
                  seeds=group_of[task, arch, seed])
        p, failed = Path(RUN_PATTERN.format(**kw)), Path(FAILED_PATTERN.format(**kw))
        paths.append(str(p))
        logs.append(RUN_LOG_PATTERN.format(**kw))
        flag = (task, arch, target, kw["seeds"])
        if flag not in flags:
            flags[flag] = read_flag(Path(FLAG_PATTERN.format(**kw))) or {}
        stamp = flags[flag].get(CELL_DIR.format(target=target, donor=donor, seed=seed))
        status.append("done" if metrics_ok(p, stamp) or (stamp is not None and metrics_ok(p))
                      else "failed" if failed.is_file() else "missing")
    return g.with_columns(pl.Series("status", status), pl.Series("path", paths), pl.Series("log", logs))
