"""Configuration: JSON-schema validation with one-line errors, the languages sheet, per-task subset specs.

Snakemake's ``common.smk`` and the ``cltm`` CLI both go through :func:`load_config`, so a bad config is
refused the same way, before any job is submitted.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import polars as pl
import yaml

from cltm_pipeline.analysis.design import initial_design
from cltm_pipeline.data.demo import DEMO_VOICES
from cltm_pipeline.data.languages import read_languages
from cltm_pipeline.data.subsets import SubsetSpec
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.models import ARCHITECTURES
from cltm_pipeline.protocol import SINGLE
from cltm_pipeline.tasks import TASKS
from cltm_pipeline.training.hparams import check_hparams, hparam_extras, schema_fragment

__all__ = ["Config", "config_schema", "load_config", "read_yaml", "resolve_path", "SCHEMA_DIR", "config_hash"]

#: The config schema ships with the package (an installed wheel has no workflow/ directory).
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def config_schema() -> dict[str, Any]:
    """The config's JSON schema: the package's YAML file, with the ``hparams`` block assembled from the
    task and architecture registries (their keys, types and defaults)."""
    schema = yaml.safe_load((SCHEMA_DIR / "config.schema.yaml").read_text(encoding="utf-8"))
    arch = schema["properties"]["tasks"]["additionalProperties"]["properties"]["architectures"]["additionalProperties"]
    arch["properties"]["hparams"] = schema_fragment()
    return schema


def _fill_defaults(instance: Any, schema: Mapping[str, Any]) -> None:
    """Apply the schema's ``default`` values in place (jsonschema validates but does not fill)."""
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra)


def _error_text(err: jsonschema.ValidationError) -> str:
    """A schema error in words: for a oneOf/anyOf, what each alternative wanted, not "is not valid under any"."""
    if err.validator in ("oneOf", "anyOf") and err.context:
        wants = []
        for sub in sorted(err.context, key=lambda e: e.relative_schema_path[0] if e.relative_schema_path else 0):
            text = sub.message.removeprefix(f"{sub.instance!r} ")
            if text not in wants:
                wants.append(text)
        return f"{err.instance!r} is not valid: {' or '.join(wants)}"
    return err.message


def validate(instance: Mapping[str, Any], schema: Mapping[str, Any], source: str) -> None:
    """Validate against a JSON schema; raise ConfigError naming the first offending key path."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        err = errors[0]
        key = ".".join(map(str, err.absolute_path)) or "(top level)"
        raise ConfigError(f"{source}: {key}: {_error_text(err)}")


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key]})", mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def read_yaml(path: Path) -> Any:
    """A YAML file through the strict loader; any problem is one ConfigError with file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = " ".join(x for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        raise ConfigError(f"{path}: {where}{what or str(exc).splitlines()[0]}") from None


@dataclass(frozen=True)
class Config:
    """A validated configuration with its languages sheet."""

    raw: dict[str, Any]
    languages: pl.DataFrame
    source: str
    #: the languages sheet as resolved (see :func:`resolve_path`); rules read this path
    sheet: Path = Path("config/languages.tsv")

    @property
    def release(self) -> Path:
        return Path(self.raw["release"])

    @property
    def results(self) -> Path:
        return Path(self.raw["results"])

    @property
    def tasks(self) -> list[str]:
        return list(self.raw["tasks"])

    @property
    def locales(self) -> list[str]:
        """Every locale any task uses, in first-mention order."""
        seen: dict[str, None] = {}
        for t in self.raw["tasks"].values():
            seen.update(dict.fromkeys(t["languages"]))
        return list(seen)

    def seeds(self, task: str) -> list[int]:
        return _seed_list(self.raw["tasks"][task]["seeds"])

    def donors(self, task: str, target: str) -> list[str]:
        """Donor components of ``target``'s cells: single ("-"), then the languages in config order (self
        for the target). Under ``design: {mode: adaptive}`` only the duals of the initial design (a share
        ``initial`` of them, spread evenly over rows and columns, seeded by ``seed``) are trained."""
        langs = self.raw["tasks"][task]["languages"]
        design = self.design
        if design["mode"] == "full":
            return [SINGLE, *langs]
        n = len(langs)
        mask = initial_design(n, round(design["initial"] * n * (n - 1)), design["seed"])
        i = langs.index(target)
        return [SINGLE, *(d for j, d in enumerate(langs) if j == i or mask[i, j])]

    @property
    def design(self) -> dict[str, Any]:
        """The ``design`` block with its code defaults filled in (mode full without one)."""
        return {**DESIGN_DEFAULTS, **self.raw.get("design", {})}

    def round_sizes(self, task: str) -> list[int]:
        """Dual cells each adaptive round plans for one matrix of ``task``: the budget less the initial
        design, split as evenly as whole cells allow over the rounds (none under mode full)."""
        d = self.design
        if d["mode"] == "full" or not d["rounds"]:
            return []
        n = len(self.raw["tasks"][task]["languages"])
        extra = max(0, round(d["budget"] * n * (n - 1)) - round(d["initial"] * n * (n - 1)))
        k = d["rounds"]
        return [extra * r // k - extra * (r - 1) // k for r in range(1, k + 1)]

    def learning_curve_seeds(self) -> list[int]:
        """Seeds of the optional ``learning_curve`` block (none without one)."""
        lc = self.raw.get("learning_curve")
        return [] if lc is None else _seed_list(lc["seeds"])

    def splits(self, task: str) -> dict[str, Any]:
        """The task's evaluation split: its own ``splits`` block over the top-level one."""
        return {**self.raw["splits"], **self.raw["tasks"][task].get("splits", {})}

    def subset_spec(self, task: str) -> SubsetSpec:
        """The subset-drawing spec of one task."""
        t = self.raw["tasks"][task]
        splits = self.splits(task)
        return SubsetSpec(
            task=task,
            languages=tuple(t["languages"]),
            n=float(t["regime"]["n"]),
            unit=t["regime"]["unit"],
            balance=t["balance"],
            split_source=splits["source"],
            test_speakers_per_gender=splits["test_speakers_per_gender"],
            dev_speakers_per_gender=splits["dev_speakers_per_gender"],
            test_max_per_gender=t.get("test_max_per_gender"),
            seeds=tuple(self.seeds(task)),
        )

    def family(self, locale: str) -> str:
        return self.languages.filter(pl.col("locale") == locale)["family"][0]


def _seed_list(seeds: int | list[int]) -> list[int]:
    """A seed count (0..n-1) or an explicit list, as a sorted list."""
    return list(range(seeds)) if isinstance(seeds, int) else sorted(seeds)


#: The ``design`` block's code defaults (no block: mode full, every cell).
DESIGN_DEFAULTS: dict[str, Any] = {"mode": "full", "initial": 0.3, "seed": 0, "rounds": 0, "budget": None,
                                   "width": None, "rule": "balance"}


def _check_design(cfg: dict[str, Any], source: str) -> None:
    """Adaptive rounds need a budget above the initial design; a full design takes none of their keys."""
    d = cfg.get("design")
    if d is None:
        return
    adaptive_only = [k for k in ("rounds", "budget", "width", "rule") if k in d]
    if d["mode"] == "full" and adaptive_only:
        raise ConfigError(f"{source}: design.{adaptive_only[0]}: only with mode adaptive (mode full trains every cell)")
    if d.get("rounds") and "budget" not in d:
        raise ConfigError(f"{source}: design.budget: needed with design.rounds ({d['rounds']}): the share of dual "
                          "cells to train in the end")
    initial = d.get("initial", DESIGN_DEFAULTS["initial"])
    if "budget" in d and d["budget"] <= initial:
        raise ConfigError(f"{source}: design.budget: {d['budget']} is not above design.initial "
                          f"({initial}): no cell left for the rounds")
    if not d.get("rounds") and any(k in d for k in ("budget", "width", "rule")):
        key = next(k for k in ("budget", "width", "rule") if k in d)
        raise ConfigError(f"{source}: design.{key}: only with design.rounds >= 1 (no round plans a cell)")


def _check_learning_curve(cfg: dict[str, Any], source: str) -> None:
    """The learning curve names a trained task/arch, languages of that task, and a task without artifacts."""
    lc = cfg.get("learning_curve")
    if lc is None:
        return
    if lc["task"] not in cfg["tasks"] or lc["arch"] not in cfg["tasks"][lc["task"]]["architectures"]:
        raise ConfigError(f"{source}: learning_curve: no task/arch {lc['task']}/{lc['arch']} in tasks")
    extra = sorted(set(lc["languages"]) - set(cfg["tasks"][lc["task"]]["languages"]))
    if extra:
        raise ConfigError(f"{source}: learning_curve.languages: {extra} not in task {lc['task']}")
    task = TASKS[lc["task"]]
    # cltm learning-curve draws its own subsets and builds no artifacts (SV trials, ASR vocabulary) yet
    if task.target_artifacts or task.task_artifacts:
        raise ConfigError(f"{source}: learning_curve.task: {lc['task']} needs artifacts, which the learning curve "
                          "does not build yet; use a classification task such as gender")


def config_hash(raw: Mapping[str, Any]) -> str:
    """Short hash of a configuration's content, written into every result it produces."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_models_and_tasks(cfg: dict[str, Any], source: str) -> None:
    """Cross-references the schema cannot express: registered tasks and architectures, model keys, hparams."""
    for name, m in cfg["models"].items():
        if m["arch"] not in ARCHITECTURES:
            raise ConfigError(f"{source}: models.{name}.arch: {m['arch']!r} is not a registered architecture "
                              f"(registered: {', '.join(sorted(ARCHITECTURES))})")
        if "tiny" in m and m["source"] != "tiny":
            raise ConfigError(f"{source}: models.{name}.tiny: only meaningful with source: tiny")
        local = Path(m["source"]).expanduser()
        # a hub id is "name" or "org/name"; anything path-like must be a local save_pretrained directory
        if m["source"].startswith((".", "/", "~")) or m["source"].count("/") > 1 or local.is_dir():
            if not local.is_dir():
                raise ConfigError(f"{source}: models.{name}.source: {m['source']!r}: no such local directory")
            if not (local / "config.json").is_file():
                raise ConfigError(f"{source}: models.{name}.source: {m['source']!r}: the directory has no config.json "
                                  "(expected a save_pretrained layout)")
    for task, t in cfg["tasks"].items():
        if task not in TASKS:
            raise ConfigError(f"{source}: tasks.{task}: not a registered task (registered: {', '.join(sorted(TASKS))})")
        t.setdefault("metric", TASKS[task].primary)
        allowed = (TASKS[task].primary, *TASKS[task].metrics)
        if t["metric"] not in allowed:
            raise ConfigError(f"{source}: tasks.{task}.metric: {t['metric']!r} is not a metric of {task} ({', '.join(allowed)})")
        for arch, a in t["architectures"].items():
            where = f"{source}: tasks.{task}.architectures.{arch}"
            if a["model"] not in cfg["models"]:
                raise ConfigError(f"{where}.model: {a['model']!r} is not a key of models ({', '.join(cfg['models'])})")
            if cfg["models"][a["model"]]["arch"] != arch:
                raise ConfigError(f"{where}.model: model {a['model']!r} is a {cfg['models'][a['model']]['arch']!r}, not {arch!r}")
            try:
                a["hparams"] = check_hparams(a.get("hparams"), hparam_extras(task, arch))
                if TASKS[task].check_hparams is not None:
                    TASKS[task].check_hparams(a["hparams"])
            except ConfigError as exc:
                raise ConfigError(f"{where}.{exc}") from None
            a.setdefault("resources", {})
            for key, default in (("gpu", 0), ("threads", 1), ("mem_mb", 4000), ("runtime", 30), ("priority", 0)):
                a["resources"].setdefault(key, default)


def resolve_path(path: str | Path, root: Path | None) -> Path:
    """A config path as every reader sees it: absolute as given; relative against the working directory
    (Snakemake's ``-d``), or, absent there, against ``root`` (the workflow's directory, which ships
    config/languages.tsv), so `snakemake -s path/to/Snakefile` run elsewhere finds the same file."""
    path = Path(path)
    if path.is_absolute() or path.exists() or root is None or not (root / path).exists():
        return path
    return Path(root).resolve() / path


def load_config(raw: Mapping[str, Any] | Path, source: str | None = None, root: Path | None = None) -> Config:
    """Validate a config (a mapping or a YAML path), fill defaults, read and cross-check the languages sheet."""
    if isinstance(raw, (str, Path)):
        source = source or str(raw)
        raw = read_yaml(Path(raw)) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of config keys, got {type(raw).__name__}")
    source = source or "config"
    cfg = copy.deepcopy(dict(raw))
    if "bootstrap" in cfg:  # renamed with the move from a percentile bootstrap to paired tests (issue 12)
        raise ConfigError(f"{source}: bootstrap: replaced by `inference: {{test: t, ci: 0.95, seed: 0}}` (paired "
                          "tests and Fieller intervals; README, Inference)")
    schema = config_schema()
    validate(cfg, schema, source)
    _fill_defaults(cfg, schema)
    for task, t in cfg["tasks"].items():
        n, unit = t["regime"]["n"], t["regime"]["unit"]
        if unit == "utterances" and (n != int(n) or (t["balance"] == "gender" and int(n) % 2)):
            raise ConfigError(
                f"{source}: tasks.{task}.regime.n: {n} must be a whole{' even' if t['balance'] == 'gender' else ''} "
                f"number of utterances{' (split equally over female and male)' if t['balance'] == 'gender' else ''}"
            )
    sheet = resolve_path(cfg["languages_sheet"], root)
    languages = read_languages(sheet)
    known = set(languages["locale"].to_list())
    for task, t in cfg["tasks"].items():
        for k, loc in enumerate(t["languages"]):
            if loc not in known:
                raise ConfigError(f"{source}: tasks.{task}.languages.{k}: locale {loc!r} is not in the languages sheet {sheet}")
    _check_models_and_tasks(cfg, source)
    _check_learning_curve(cfg, source)
    _check_design(cfg, source)
    if "demo" in cfg:
        _check_demo(cfg, source, known, sheet)
    return Config(cfg, languages, source, sheet)


def _check_demo(cfg: dict[str, Any], source: str, known: set[str], sheet: Path) -> None:
    """Demo locales: in the sheet, with a demo voice, in one group only, and covering every task's languages."""
    demo = cfg["demo"]
    groups = {key: demo.get(key, []) for key in ("languages", "clean_languages")}
    for key, locales in groups.items():
        for k, loc in enumerate(locales):
            if loc not in known:
                raise ConfigError(f"{source}: demo.{key}.{k}: locale {loc!r} is not in the languages sheet {sheet}")
            if loc not in DEMO_VOICES:
                raise ConfigError(f"{source}: demo.{key}.{k}: no demo voice for {loc!r} (have {sorted(DEMO_VOICES)})")
    both = sorted(set(groups["languages"]) & set(groups["clean_languages"]))
    if both:
        raise ConfigError(f"{source}: demo.clean_languages: {both} also in demo.languages (a locale is noisy or clean)")
    generated = set(groups["languages"]) | set(groups["clean_languages"])
    for task, t in cfg["tasks"].items():
        for k, loc in enumerate(t["languages"]):
            if loc not in generated:
                raise ConfigError(f"{source}: tasks.{task}.languages.{k}: locale {loc!r} is not generated by the demo"
                                  " (add it to demo.languages or demo.clean_languages)")
