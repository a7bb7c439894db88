"""Cross-Lingual Transfer Matrix: run records, per-cell aggregation, matrices, uncertainty, outputs.

Conventions (DESIGN.md, "The matrices"): rows are targets i (the language whose test set is scored),
columns are donors j. A run record is one (target, donor, seed, value) with value = performance P,
higher is better. Cell kinds: *single* (donor is null), *self* (donor == target), *dual* (other donor).
With a = mu(i+j), b = mu(i), c = mu(i+i): M = (a - b) / b and C = (a - b) / (c - b).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from cltm_pipeline.analysis.inference import ALPHA, TESTS, bh, delta_se, fieller, p_floor, paired_test, t_crit
from cltm_pipeline.io import stable_hash, write_json, write_text
from cltm_pipeline.protocol import SINGLE, cell_kind, performance

__all__ = [
    "POLICIES",
    "RUNS_SCHEMA",
    "CLTMResult",
    "aggregate",
    "build_matrices",
    "read_result",
    "read_run_metrics",
    "read_study_csv",
]

#: Aggregation policies over seeds. Only the plain mean exists; the name is written into every output.
POLICIES: tuple[str, ...] = ("mean",)

# The metric columns the reference study's per-seed CSVs carry.
_STUDY_METRICS = ("f1", "auc", "eer", "wer")
_STUDY_KEYS = ("model_id", "type", "lang_src", "lang_tgt", "seed")

RUNS_SCHEMA: dict[str, Any] = {
    "target": pl.String,
    "donor": pl.String,
    "seed": pl.Int64,
    "value": pl.Float64,
}

Cell = tuple[str, str | None]


# --------------------------------------------------------------------------------------------------
# Run records
# --------------------------------------------------------------------------------------------------


def _runs_frame(rows: list[tuple[str, str | None, int, float]]) -> pl.DataFrame:
    """Build the canonical long table from (target, donor, seed, value) tuples."""
    return pl.DataFrame(rows, schema=RUNS_SCHEMA, orient="row")


def read_run_metrics(paths: Iterable[Path], metric: str) -> pl.DataFrame:
    """Read this pipeline's per-run metrics.json files into the canonical long table."""
    rows: list[tuple[str, str | None, int, float]] = []
    first_seen: dict[tuple[str, str | None, int], Path] = {}
    for path in paths:
        path = Path(path)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read run metrics: {err}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}: expected a JSON object")
        target = record.get("target")
        if not isinstance(target, str) or not target:
            raise ValueError(f"{path}: 'target' must be a non-empty string, got {target!r}")
        donor = record.get("donor")
        # SINGLE ("-") is the donor wildcard of single runs in the results/ paths; accept it as null.
        if donor == SINGLE:
            donor = None
        if donor is not None and (not isinstance(donor, str) or not donor):
            raise ValueError(f"{path}: 'donor' must be null or a non-empty string, got {donor!r}")
        seed = record.get("seed")
        # bool is an int subclass; a true/false seed is a bug upstream, not seed 1/0.
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"{path}: 'seed' must be an integer, got {seed!r}")
        metrics = record.get("metrics")
        if not isinstance(metrics, dict) or metric not in metrics:
            raise ValueError(f"{path}: no metric {metric!r} in 'metrics'")
        raw = metrics[metric]
        if not isinstance(raw, (int, float)) or isinstance(raw, bool) or not math.isfinite(raw):
            raise ValueError(f"{path}: metric {metric!r} must be a finite number, got {raw!r}")
        key = (target, donor, seed)
        if key in first_seen:
            raise ValueError(f"{path}: duplicate (target, donor, seed) = {key}, also in {first_seen[key]}")
        first_seen[key] = path
        rows.append((target, donor, seed, performance(metric, float(raw))))
    return _runs_frame(rows).sort(["target", "donor", "seed"], nulls_last=False)


def _utf8_rows(reader, path: Path):
    """The rows of a csv.reader over a UTF-8 file; a byte that is not UTF-8 is a one-line error naming the line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            with open(path, "rb") as fh:  # the decoder reads ahead: find the line ourselves
                line = next((k for k, raw in enumerate(fh, start=1) if not _is_utf8(raw)), "?")
            raise ValueError(f"{path}: line {line}: not UTF-8 (save the file as UTF-8)") from None


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _study_metric(path: Path, header: list[str], metric: str | None) -> str:
    """The metric column of a study CSV's header: ``metric`` if given (checked), else the only one present."""
    for name in _STUDY_KEYS:
        if name not in header:
            raise ValueError(f"{path}: header (line 1): missing column {name!r}")
    if metric is None:
        found = [name for name in header if name in _STUDY_METRICS]
        if not found:
            known = ", ".join(_STUDY_METRICS)
            raise ValueError(f"{path}: header (line 1): no metric column (one of {known})")
        if len(found) > 1:
            several = ", ".join(found)
            raise ValueError(f"{path}: header (line 1): several metric columns ({several}); choose one with --metric")
        return found[0]
    if metric not in _STUDY_METRICS:
        raise ValueError(f"{path}: unknown metric {metric!r} (known: {', '.join(_STUDY_METRICS)})")
    if metric not in header:
        raise ValueError(f"{path}: header (line 1): missing column {metric!r}")
    return metric


def _study_cell(get: dict[str, str], target_column: str, where: str) -> Cell:
    """(target, donor) of one study row: a single names one language, a dual both."""
    donor_column = "lang_tgt" if target_column == "lang_src" else "lang_src"
    kind = get["type"]
    tgt, don = get[target_column], get[donor_column]
    if kind == "single":
        langs = {x for x in (tgt, don) if x}
        if len(langs) != 1:
            raise ValueError(
                f"{where}: single row must name one language, got lang_src={get['lang_src']!r} "
                f"lang_tgt={get['lang_tgt']!r}"
            )
        return langs.pop(), None
    if kind == "dual":
        if not tgt or not don:
            raise ValueError(
                f"{where}: dual row needs lang_src and lang_tgt, got lang_src={get['lang_src']!r} "
                f"lang_tgt={get['lang_tgt']!r}"
            )
        return tgt, don
    raise ValueError(f"{where}: unknown type {kind!r} (expected single or dual)")


def _study_row(
    fields: list[str], width: int, col: dict[str, int], target_column: str, metric: str, where: str
) -> tuple[str, str | None, int, float]:
    """One data row of a study CSV as (target, donor, seed, raw metric value); errors name ``where``."""
    if len(fields) > width:
        raise ValueError(f"{where}: {len(fields)} fields, header has {width}")
    for name, idx in col.items():
        if idx >= len(fields):
            raise ValueError(f"{where}: missing column {name!r}")
    get = {name: fields[idx].strip() for name, idx in col.items()}
    target, donor = _study_cell(get, target_column, where)
    try:
        seed = int(get["seed"])
    except ValueError:
        raise ValueError(f"{where}: non-numeric seed {get['seed']!r}") from None
    try:
        raw = float(get[metric])
    except ValueError:
        raise ValueError(f"{where}: non-numeric {metric} value {get[metric]!r}") from None
    if not math.isfinite(raw):
        raise ValueError(f"{where}: non-finite {metric} value {get[metric]!r}")
    return target, donor, seed, raw


class _StudyKeys:
    """The (target, donor, seed) keys and language spellings seen so far in one study CSV."""

    def __init__(self) -> None:
        self.first_seen: dict[tuple[str, str | None, int], int] = {}
        self.spelling: dict[str, tuple[str, int]] = {}

    def add(self, key: tuple[str, str | None, int], row_no: int, where: str) -> None:
        """Record ``key`` of row ``row_no``; a repeated key, or a language spelt two ways, is an error."""
        if key in self.first_seen:
            raise ValueError(f"{where}: duplicate (target, donor, seed) = {key}, first at row {self.first_seen[key]}")
        self.first_seen[key] = row_no
        for lang in key[:2]:  # CV locales are case-sensitive (zh-CN): ES next to es is a typo
            if lang is not None and self.spelling.setdefault(lang.casefold(), (lang, row_no))[0] != lang:
                other, at = self.spelling[lang.casefold()]
                raise ValueError(f"{where}: language {lang!r} differs only in case from {other!r} (row {at})")


def read_study_csv(
    path: Path,
    *,
    metric: str | None = None,
    target_column: Literal["lang_src", "lang_tgt"] = "lang_src",
) -> tuple[pl.DataFrame, str]:
    """Read the reference study's per-seed CSV into the long table; return it and the metric name.

    Which column is the target: in the reference code (cltm-framework) the target is ``lang_src``.
    Its SV evaluation scores a model ``X_Y`` on ``X``'s test pairs and writes lang_src=X,
    lang_tgt=Y; single rows carry lang_src=X and an empty lang_tgt; ``utils_matrix.compute_matrices``
    takes row i's baseline from the single keyed by lang_src and the cell from key ``f"{i}_{j}"``.
    So lang_src is the target and lang_tgt the donor. ``target_column="lang_tgt"`` flips this for a
    file written the other way round. A single row names one language: the non-empty one of the two
    columns, or both equal. A self cell is a ``dual`` row with lang_src == lang_tgt.

    The metric is ``metric`` if given, else the one column among f1, auc, eer, wer after the key
    columns (several present, as in the study's SV files with eer and auc, is an error: name one).
    eer and wer are lower-is-better and become 1 - x.
    """
    path = Path(path)
    if target_column not in ("lang_src", "lang_tgt"):
        raise ValueError(f"target_column must be 'lang_src' or 'lang_tgt', got {target_column!r}")
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as err:
        raise ValueError(f"{path}: cannot open: {err}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(_utf8_rows(reader, path), None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a header line")
        header = [name.strip() for name in header]
        metric = _study_metric(path, header, metric)
        col = {name: header.index(name) for name in (*_STUDY_KEYS, metric)}
        rows: list[tuple[str, str | None, int, float]] = []
        seen = _StudyKeys()
        row_no = 0
        for fields in _utf8_rows(reader, path):
            if not fields or all(not f.strip() for f in fields):
                continue  # blank line
            row_no += 1
            where = f"{path}: row {row_no} (line {reader.line_num})"
            target, donor, seed, raw = _study_row(fields, len(header), col, target_column, metric, where)
            seen.add((target, donor, seed), row_no, where)
            rows.append((target, donor, seed, performance(metric, raw)))
    return _runs_frame(rows).sort(["target", "donor", "seed"], nulls_last=False), metric


def _check_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """Validate a long table and return it with canonical dtypes, sorted by (target, donor, seed)."""
    missing = [name for name in RUNS_SCHEMA if name not in runs.columns]
    if missing:
        raise ValueError(f"runs table lacks column(s) {', '.join(missing)}")
    runs = runs.select([pl.col(name).cast(dtype) for name, dtype in RUNS_SCHEMA.items()])
    for name in ("target", "seed", "value"):
        if runs[name].null_count():
            raise ValueError(f"runs table has null {name!r}")
    if not runs["value"].is_finite().all():
        raise ValueError("runs table has non-finite values")
    dup = runs.filter(runs.select(["target", "donor", "seed"]).is_duplicated())
    if dup.height:
        first = dup.row(0, named=True)
        key = (first["target"], first["donor"], first["seed"])
        raise ValueError(f"runs table has duplicate (target, donor, seed) = {key}")
    # A fixed row order fixes the summation order, so the means are bit-identical across input orders.
    return runs.sort(["target", "donor", "seed"], nulls_last=False)


# --------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------


def aggregate(runs: pl.DataFrame, policy: str = "mean") -> pl.DataFrame:
    """Aggregate runs per cell (target, donor): mu, sample variance var (ddof=1), n, v = var/n."""
    if policy not in POLICIES:
        raise ValueError(f"unknown aggregation policy {policy!r} (known: {', '.join(POLICIES)})")
    runs = _check_runs(runs)
    return (
        runs.group_by(["target", "donor"], maintain_order=True)
        .agg(
            mu=pl.col("value").mean(),
            # polars gives null for n < 2; the protocol wants NaN there.
            var=pl.col("value").var(ddof=1).fill_null(float("nan")),
            n=pl.len().cast(pl.Int64),
        )
        .with_columns(v=pl.col("var") / pl.col("n"), policy=pl.lit(policy))
        .sort(["target", "donor"], nulls_last=False)
        .select(["target", "donor", "policy", "mu", "var", "n", "v"])
    )


# --------------------------------------------------------------------------------------------------
# Matrices
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CLTMResult:
    """CLTM, M and their uncertainty for one task/architecture; arrays are indexed [target, donor].

    Every per-cell value (a, b, c, C, M, SE, interval, p) is computed on one seed set: the seeds the cell
    shares with single i and self i (``n_paired``). ``partial`` marks cells where that set is smaller than
    the seeds some of the three cells ran (after failures), so a/b/c there differ from the cell means.
    """

    languages: tuple[str, ...]
    policy: str
    metric: str | None
    mu: np.ndarray  # a on the cell's paired seeds; the diagonal is c = mu(i+i)
    baseline: np.ndarray  # b = mu(i) on the seeds single i shares with self i, per target
    M: np.ndarray
    C: np.ndarray
    se: np.ndarray
    ci_low: np.ndarray  # hull of the Fieller set: -inf/inf when it is not bounded
    ci_high: np.ndarray
    n_seeds: np.ndarray  # n of the dual/self cell
    n_paired: np.ndarray  # seeds present in single i, self i and the cell: the inference's sample
    self_gain: np.ndarray
    self_gain_se: np.ndarray
    ill_conditioned: np.ndarray
    n_single: np.ndarray
    missing: list[Cell] = field(default_factory=list)
    ci: float = 0.95
    test: str = "t"
    seed: int = 0
    # Two-sided paired tests of C = 0 (a = b) and C = 1 (a = c) per cell, BH q-values across the matrix's
    # off-diagonal cells, and the smallest p the test can give with the cell's seeds.
    p_zero: np.ndarray | None = None
    p_one: np.ndarray | None = None
    q_zero: np.ndarray | None = None
    q_one: np.ndarray | None = None
    p_floor: np.ndarray | None = None
    # Fieller set: "bounded", "rays" ((-inf, gap_low] U [gap_high, inf)), "unbounded" or "none".
    ci_kind: np.ndarray | None = None
    ci_gap_low: np.ndarray | None = None
    ci_gap_high: np.ndarray | None = None
    partial: np.ndarray | None = None
    m_undefined: list[str] = field(default_factory=list)  # targets whose b <= 0 leaves M undefined

    def __post_init__(self) -> None:
        shape = np.shape(self.C)
        for name in ("p_zero", "p_one", "q_zero", "q_one", "p_floor", "ci_gap_low", "ci_gap_high"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(shape, np.nan))
        if self.ci_kind is None:
            object.__setattr__(self, "ci_kind", np.full(shape, "none", dtype=object))
        if self.partial is None:
            object.__setattr__(self, "partial", np.zeros(shape, dtype=bool))

    def to_long(self) -> pl.DataFrame:
        """One row per (target, donor) with every per-cell and per-target value."""
        records: dict[str, list[Any]] = {name: [] for name in _LONG_SCHEMA}
        for i, target in enumerate(self.languages):
            for j, donor in enumerate(self.languages):
                values = {
                    "target": target,
                    "donor": donor,
                    "kind": "self" if i == j else "dual",
                    "policy": self.policy,
                    "a": float(self.mu[i, j]),
                    "b": float(self.baseline[i]),
                    "c": float(self.mu[i, i]),
                    "n_seeds": int(self.n_seeds[i, j]),
                    "n_paired": int(self.n_paired[i, j]),
                    "M": float(self.M[i, j]),
                    "C": float(self.C[i, j]),
                    "se": float(self.se[i, j]),
                    "ci_low": float(self.ci_low[i, j]),
                    "ci_high": float(self.ci_high[i, j]),
                    "self_gain": float(self.self_gain[i]),
                    "self_gain_se": float(self.self_gain_se[i]),
                    "ill_conditioned": bool(self.ill_conditioned[i]),
                    "p_zero": float(self.p_zero[i, j]),
                    "p_one": float(self.p_one[i, j]),
                    "q_zero": float(self.q_zero[i, j]),
                    "q_one": float(self.q_one[i, j]),
                    "p_floor": float(self.p_floor[i, j]),
                    "ci_kind": str(self.ci_kind[i, j]),
                    "ci_gap_low": float(self.ci_gap_low[i, j]),
                    "ci_gap_high": float(self.ci_gap_high[i, j]),
                    "partial": bool(self.partial[i, j]),
                }
                for name, value in values.items():
                    records[name].append(value)
        return pl.DataFrame(records, schema=_LONG_SCHEMA)

    def testable(self, alpha: float = ALPHA) -> np.ndarray:
        """Off-diagonal cells whose test can reach p < ``alpha`` at all with their seeds."""
        with np.errstate(invalid="ignore"):
            return np.isfinite(self.p_floor) & (self.p_floor < alpha)

    def summary(self) -> dict[str, Any]:
        """The run-level facts written to summary.json."""
        n_lang = len(self.languages)
        off = ~np.eye(n_lang, dtype=bool)
        tested = off & np.isfinite(self.p_zero)
        return {
            "policy": self.policy,
            "metric": self.metric,
            "languages": list(self.languages),
            "inference": {
                "test": self.test,
                "interval": "fieller",
                "ci": self.ci,
                "seed_set": "paired: seeds shared by single i, self i and the cell",
                "multiplicity": "Benjamini-Hochberg across the off-diagonal cells, per hypothesis (C=0, C=1)",
                "ill_conditioned": f"self gain not significantly > 0 (paired t, {self.ci:g} two-sided)",
                "signflip_seed": self.seed,
            },
            "cells_all": n_lang * n_lang,
            "cells_finite": int(np.isfinite(self.C).sum()),
            "cells_missing": len(self.missing),
            "cells_partial": int(self.partial.sum()),
            "cells_tested": int(tested.sum()),
            # Cells whose seeds are too few for the test to ever reach p < 0.05: not a finding of "no effect".
            "cells_untestable": int((tested & ~self.testable()).sum()),
            "ill_conditioned_targets": [t for t, bad in zip(self.languages, self.ill_conditioned) if bad],
            "m_undefined_targets": list(self.m_undefined),
        }

    def write(self, out_dir: Path) -> None:
        """Write cells, wide matrices, self gain, missing cells and summary; atomic and deterministic."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        langs = list(self.languages)
        long = self.to_long()
        write_text(out_dir / "cells.tsv", _tsv(long.columns, long.iter_rows()))
        for name, matrix in (("cltm.tsv", self.C), ("m.tsv", self.M), ("se.tsv", self.se)):
            rows = ([t, *(float(x) for x in matrix[i])] for i, t in enumerate(langs))
            write_text(out_dir / name, _tsv(["target", *langs], rows))
        gain_rows = (
            [
                t,
                self.policy,
                float(self.baseline[i]),
                float(self.mu[i, i]),
                int(self.n_single[i]),
                int(self.n_seeds[i, i]),
                float(self.self_gain[i]),
                float(self.self_gain_se[i]),
                bool(self.ill_conditioned[i]),
            ]
            for i, t in enumerate(langs)
        )
        gain_header = [
            "target", "policy", "b", "c", "n_single", "n_self", "self_gain", "self_gain_se", "ill_conditioned"
        ]
        write_text(out_dir / "self_gain.tsv", _tsv(gain_header, gain_rows))
        missing_rows = ([t, SINGLE if d is None else d, cell_kind(t, d), self.policy] for t, d in self.missing)
        write_text(out_dir / "missing.tsv", _tsv(["target", "donor", "kind", "policy"], missing_rows))
        write_json(out_dir / "summary.json", self.summary())


_LONG_SCHEMA: dict[str, Any] = {
    "target": pl.String,
    "donor": pl.String,
    "kind": pl.String,
    "policy": pl.String,
    "a": pl.Float64,
    "b": pl.Float64,
    "c": pl.Float64,
    "n_seeds": pl.Int64,
    "n_paired": pl.Int64,
    "M": pl.Float64,
    "C": pl.Float64,
    "se": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "self_gain": pl.Float64,
    "self_gain_se": pl.Float64,
    "ill_conditioned": pl.Boolean,
    "p_zero": pl.Float64,
    "p_one": pl.Float64,
    "q_zero": pl.Float64,
    "q_one": pl.Float64,
    "p_floor": pl.Float64,
    "ci_kind": pl.String,
    "ci_gap_low": pl.Float64,
    "ci_gap_high": pl.Float64,
    "partial": pl.Boolean,
}


def _cell_rng(seed: int, target: str, donor: str) -> np.random.Generator:
    """A generator per cell (Monte Carlo sign flips above 16 seeds), keyed by names, not by cell order."""
    return np.random.default_rng([seed, stable_hash(target), stable_hash(donor)])


@dataclass
class _Grid:
    """The arrays :func:`build_matrices` fills, named as :class:`CLTMResult`'s fields; NaN/0 where unset."""

    mu: np.ndarray
    M: np.ndarray
    C: np.ndarray
    se: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    ci_gap_low: np.ndarray
    ci_gap_high: np.ndarray
    p_zero: np.ndarray
    p_one: np.ndarray
    p_floor: np.ndarray
    ci_kind: np.ndarray
    partial: np.ndarray
    n_seeds: np.ndarray
    n_paired: np.ndarray
    baseline: np.ndarray
    self_gain: np.ndarray
    self_gain_se: np.ndarray
    n_single: np.ndarray
    clearly_positive: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _Grid:
        """Every per-cell array n x n and per-target array n long, before any cell is computed."""
        shape = (n, n)
        cells = {name: np.full(shape, math.nan) for name in (
            "mu", "M", "C", "se", "ci_low", "ci_high", "ci_gap_low", "ci_gap_high", "p_zero", "p_one", "p_floor")}
        rows = {name: np.full(n, math.nan) for name in ("baseline", "self_gain", "self_gain_se")}
        return cls(
            **cells, **rows, ci_kind=np.full(shape, "none", dtype=object), partial=np.zeros(shape, dtype=bool),
            n_seeds=np.zeros(shape, dtype=np.int64), n_paired=np.zeros(shape, dtype=np.int64),
            n_single=np.zeros(n, dtype=np.int64), clearly_positive=np.zeros(n, dtype=bool),
        )

    def fill_target(self, i: int, single: dict[int, float] | None, self_: dict[int, float] | None, ci: float) -> None:
        """Row i's baseline b, self gain c - b and its SE on the seeds single i shares with self i."""
        if single is not None:
            self.n_single[i] = len(single)
        if single is None or self_ is None:
            return
        shared = sorted(set(single) & set(self_))
        b_v = np.array([single[s] for s in shared])
        y = np.array([self_[s] for s in shared]) - b_v
        if shared:
            self.baseline[i], self.self_gain[i] = float(b_v.mean()), float(y.mean())
        if len(shared) >= 2:
            gain, gain_se = self.self_gain[i], float(y.std(ddof=1) / math.sqrt(len(shared)))
            self.self_gain_se[i] = gain_se
            self.clearly_positive[i] = gain > 0 and (gain_se == 0 or gain / gain_se > t_crit(ci, len(shared)))

    def fill_cell(
        self, i: int, j: int, runs: tuple[dict[int, float], dict[int, float] | None, dict[int, float] | None],
        test: str, ci: float, rng: np.random.Generator | None,
    ) -> None:
        """Cell (i, j) from its runs (cell, single i, self i): a, M, C, SE, Fieller set and paired tests."""
        cell, single, self_ = runs
        self.n_seeds[i, j] = len(cell)
        if single is None:
            self.mu[i, j] = float(np.mean(list(cell.values())))
            return
        # One seed set per cell: the seeds it shares with single i (and self i when there is one).
        seeds = sorted(set(single) & set(cell) & (set(self_) if self_ is not None else set(cell)))
        self.n_paired[i, j] = len(seeds)
        self.partial[i, j] = len(seeds) < max(len(single), len(self_ or cell), len(cell))
        if not seeds:
            return
        a_v = np.array([cell[s] for s in seeds])
        b_v = np.array([single[s] for s in seeds])
        self.mu[i, j] = float(a_v.mean())
        b_m = float(b_v.mean())
        self.M[i, j] = (self.mu[i, j] - b_m) / b_m if b_m > 0 else math.nan
        if self_ is None:
            return
        c_v = np.array([self_[s] for s in seeds])
        num, den = a_v - b_v, c_v - b_v
        num_m, den_m = float(num.mean()), float(den.mean())
        if den_m == 0:
            return  # a zero self gain leaves C undefined, not infinite
        self.C[i, j] = 1.0 if i == j else num_m / den_m
        if len(seeds) < 2:
            return
        if i == j:  # C = 1 by construction: no uncertainty, no test
            self.se[i, j], self.ci_low[i, j], self.ci_high[i, j], self.ci_kind[i, j] = 0.0, 1.0, 1.0, "bounded"
            return
        self.se[i, j] = delta_se(num, den)
        fs = fieller(num, den, ci)
        self.ci_kind[i, j], self.ci_low[i, j], self.ci_high[i, j] = fs.kind, fs.low, fs.high
        self.ci_gap_low[i, j], self.ci_gap_high[i, j] = fs.gap_low, fs.gap_high
        self.p_zero[i, j] = float(paired_test(num, test, rng))
        self.p_one[i, j] = float(paired_test(a_v - c_v, test, rng))
        self.p_floor[i, j] = p_floor(len(seeds), test)

    def arrays(self) -> dict[str, np.ndarray]:
        """The filled arrays as keyword arguments of :class:`CLTMResult` (the q-values and flags included)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "clearly_positive"}
        return {**out, "ill_conditioned": ~self.clearly_positive, "q_zero": bh(self.p_zero), "q_one": bh(self.p_one)}


def _matrix_languages(runs: pl.DataFrame, languages: Sequence[str] | None) -> tuple[str, ...]:
    """The matrix's rows and columns: ``languages`` (checked for duplicates), else the sorted targets."""
    if languages is None:
        return tuple(sorted(set(runs["target"].to_list())))
    langs = tuple(languages)
    if len(set(langs)) != len(langs):
        raise ValueError(f"languages has duplicates: {list(langs)}")
    return langs


def build_matrices(
    runs: pl.DataFrame,
    languages: Sequence[str] | None = None,
    policy: str = "mean",
    *,
    test: str = "t",
    ci: float = 0.95,
    seed: int = 0,
    metric: str | None = None,
    seeds: Sequence[int] | None = None,
) -> CLTMResult:
    """Compute M, C, SE, Fieller intervals, paired tests and self gain from the long run table.

    Rows and columns follow ``languages`` (default: sorted targets); runs naming other languages are
    ignored. Missing cells give NaN, never an exception: a missing dual gives a NaN cell, a missing
    single or self a NaN row. Every per-cell quantity uses the cell's paired seeds (shared with single i
    and self i): num_s = a_s − b_s, den_s = c_s − b_s, C = mean(num) / mean(den), SE by the delta
    method on the paired (co)variances, the Fieller set at level ``ci``, and ``test`` ("t" or
    "signflip") of C = 0 and C = 1 on a_s − b_s and a_s − c_s. A row is ill-conditioned unless its self
    gain is significantly positive (paired t at level ``ci``): exactly when its Fieller sets are bounded.
    M = (a − b) / b is NaN where b ≤ 0 (a relative gain over a non-positive P has no meaning).
    With ``seeds`` (the seeds the grid asked for), a cell lacking any of them is listed as missing too.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r} (known: {', '.join(TESTS)})")
    aggregate(runs, policy)  # validates policy and runs
    runs = _check_runs(runs)
    langs = _matrix_languages(runs, languages)
    per_seed: dict[Cell, dict[int, float]] = {}
    for target, donor, s, value in runs.iter_rows():
        per_seed.setdefault((target, donor), {})[s] = value
    grid = _Grid.empty(len(langs))
    missing: list[Cell] = []
    expected = set(seeds or ())
    for i, t in enumerate(langs):
        single, self_ = per_seed.get((t, None)), per_seed.get((t, t))
        if single is None or not expected <= set(single):
            missing.append((t, None))
        grid.fill_target(i, single, self_, ci)
        # Self first, then duals in language order: the order the matrix is read in.
        for j in [i, *(k for k in range(len(langs)) if k != i)]:
            d = langs[j]
            cell = per_seed.get((t, d))
            if cell is None or not expected <= set(cell):
                missing.append((t, d))
            if cell is not None:
                rng = _cell_rng(seed, t, d) if test == "signflip" else None
                grid.fill_cell(i, j, (cell, single, self_), test, ci, rng)
    m_undefined = [t for i, t in enumerate(langs) if math.isfinite(grid.baseline[i]) and grid.baseline[i] <= 0]
    return CLTMResult(languages=langs, policy=policy, metric=metric, missing=missing, ci=ci, test=test, seed=seed,
                      m_undefined=m_undefined, **grid.arrays())


# --------------------------------------------------------------------------------------------------
# Deterministic, atomic output
# --------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    """Format one TSV field: repr for floats (shortest round-trip), NaN/Inf spelled out, true/false."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Inf" if x > 0 else "-Inf"
        return repr(x)
    return str(value)


def _tsv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Render a header and rows as TSV text with fixed formatting and a trailing newline."""
    lines = ["\t".join(header)]
    lines.extend("\t".join(_fmt(x) for x in row) for row in rows)
    return "\n".join(lines) + "\n"


def _read_tsv_text(path: Path) -> list[dict[str, str]]:
    """Rows of a TSV written by :func:`_tsv` as dicts of strings."""
    lines = Path(path).read_text(encoding="utf-8").rstrip("\n").split("\n")
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]


def _parse(value: str) -> float:
    """Inverse of :func:`_fmt` for floats (repr round-trips exactly)."""
    special = {"NaN": math.nan, "Inf": math.inf, "-Inf": -math.inf}
    return special[value] if value in special else float(value)


def read_result(out_dir: Path) -> CLTMResult:
    """Load a :class:`CLTMResult` back from the files :meth:`CLTMResult.write` wrote (exact round trip)."""
    out_dir = Path(out_dir)
    summ = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    langs = tuple(summ["languages"])
    idx = {t: i for i, t in enumerate(langs)}
    n = len(langs)
    floats = ("M", "C", "se", "ci_low", "ci_high", "p_zero", "p_one", "q_zero", "q_one", "p_floor",
              "ci_gap_low", "ci_gap_high")
    mats = {k: np.full((n, n), np.nan) for k in ("mu", *floats)}
    ints = {k: np.zeros((n, n), dtype=int) for k in ("n_seeds", "n_paired")}
    kind = np.full((n, n), "none", dtype=object)
    partial = np.zeros((n, n), dtype=bool)
    for r in _read_tsv_text(out_dir / "cells.tsv"):
        i, j = idx[r["target"]], idx[r["donor"]]
        mats["mu"][i, j] = _parse(r["a"])
        for k in floats:  # columns added in later versions are absent from older files: NaN
            if k in r:
                mats[k][i, j] = _parse(r[k])
        for k in ints:
            ints[k][i, j] = int(r[k])
        kind[i, j] = r.get("ci_kind", "none")
        partial[i, j] = r.get("partial") == "true"
    baseline, gain, gain_se = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    ill, n_single = np.zeros(n, dtype=bool), np.zeros(n, dtype=int)
    for r in _read_tsv_text(out_dir / "self_gain.tsv"):
        i = idx[r["target"]]
        baseline[i], gain[i], gain_se[i] = _parse(r["b"]), _parse(r["self_gain"]), _parse(r["self_gain_se"])
        ill[i], n_single[i] = r["ill_conditioned"] == "true", int(r["n_single"])
    missing = [(r["target"], None if r["donor"] == SINGLE else r["donor"]) for r in _read_tsv_text(out_dir / "missing.tsv")]
    inf = summ.get("inference", {})
    return CLTMResult(
        languages=langs, policy=summ["policy"], metric=summ["metric"], mu=mats.pop("mu"), baseline=baseline,
        n_seeds=ints["n_seeds"], n_paired=ints["n_paired"], self_gain=gain, self_gain_se=gain_se,
        ill_conditioned=ill, n_single=n_single, missing=missing, ci=inf.get("ci", summ.get("ci", 0.95)),
        test=inf.get("test", "bootstrap"), seed=inf.get("signflip_seed", 0), ci_kind=kind, partial=partial,
        m_undefined=summ.get("m_undefined_targets", []), **mats,
    )
