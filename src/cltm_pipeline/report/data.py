"""What the report reads, as typed records: one matrix (its CLTM and analysis.json) and the learning curves.

A key that ``cltm analyse`` (or ``cltm learning-curve``) always writes and that is missing raises
:class:`ResultsError`, one line naming the file and the key: a renamed key must fail here, not turn into a
silent "–" in the report. What is legitimately absent (no typology given, no probe of a cell kind, no
recommended N) is ``Optional``. A number the writer leaves undefined (NaN, or null) reads as NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cltm_pipeline.analysis.matrix import CLTMResult, read_result
from cltm_pipeline.errors import ResultsError
from cltm_pipeline.protocol import lower_is_better
from cltm_pipeline.report.display import slugify

__all__ = [
    "ResultsError", "MatrixEntry", "read_entry", "Analysis", "MeanC", "Counted", "Shares", "FamilyShare",
    "Properties", "Significance", "TransferMap", "Mantel", "Typology", "ProbeKind", "Projection", "Probes",
    "KindTiming", "DonorTiming", "TrainingTime", "Fit", "StepTarget", "Step", "Recommendation", "LearningCurve",
    "read_learning_curves",
]


class _Reader:
    """Typed look-ups into one JSON object that name the file and the key path when a key is missing."""

    def __init__(self, obj: Any, source: str, path: tuple[str, ...] = ()) -> None:
        self.obj, self.source, self.path = obj, source, path
        if not isinstance(obj, Mapping):
            raise ResultsError(f"{source}: {self._where()} is {type(obj).__name__}, expected an object")

    def _where(self, key: str | None = None) -> str:
        return repr(".".join((*self.path, key) if key is not None else self.path) or "(top level)")

    def raw(self, key: str) -> Any:
        """The value of a key the writer always writes (null allowed: the caller decides what it means)."""
        if key not in self.obj:
            raise ResultsError(f"{self.source}: missing key {self._where(key)}, which its writer always writes "
                               "(a stale or edited file: rerun the step that writes it)")
        return self.obj[key]

    def _bad(self, key: str, value: Any, expected: str) -> ResultsError:
        return ResultsError(f"{self.source}: key {self._where(key)} is {value!r}, expected {expected}")

    def sub(self, key: str) -> _Reader:
        """A nested object the writer always writes."""
        return _Reader(self.raw(key), self.source, (*self.path, key))

    def entries(self, key: str) -> Iterator[tuple[str, _Reader]]:
        """(name, nested object) for each entry of a mapping the writer always writes, in file order."""
        sub = self.sub(key)
        for name, value in sub.obj.items():
            yield str(name), _Reader(value, self.source, (*sub.path, str(name)))

    def num(self, key: str) -> float:
        """A number; null (undefined) reads as NaN."""
        value = self.raw(key)
        if value is None:
            return math.nan
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise self._bad(key, value, "a number")
        return float(value)

    def opt_num(self, key: str) -> float | None:
        """A number that may be null (kept as None)."""
        return None if self.raw(key) is None else self.num(key)

    def integer(self, key: str) -> int:
        value = self.raw(key)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise self._bad(key, value, "an integer")
        return int(value)

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, (bool, np.bool_)):
            raise self._bad(key, value, "true or false")
        return bool(value)

    def text(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            raise self._bad(key, value, "a string")
        return value

    def opt_text(self, key: str) -> str | None:
        return None if self.raw(key) is None else self.text(key)

    def seq(self, key: str) -> list[Any]:
        value = self.raw(key)
        if not isinstance(value, (list, tuple, np.ndarray)):
            raise self._bad(key, value, "a list")
        return list(value)


# --------------------------------------------------------------------------------------------------
# analysis.json (cltm analyse)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanC:
    """Mean off-diagonal C over the well-conditioned rows, with its paired-seed t interval."""

    mean: float
    ci_low: float
    ci_high: float
    median: float
    ci: float
    n: int
    n_seeds: int
    rows_used: int
    rows_ill: int
    cells_left_out: int

    @classmethod
    def read(cls, r: _Reader) -> MeanC:
        return cls(r.num("mean"), r.num("ci_low"), r.num("ci_high"), r.num("median"), r.num("ci"), r.integer("n"),
                   r.integer("n_seeds"), r.integer("rows_used"), r.integer("rows_ill"), r.integer("cells_left_out"))


@dataclass(frozen=True)
class Counted:
    """A value and the number of finite cells behind it (strengths, asymmetry)."""

    value: float
    n: int

    @classmethod
    def read(cls, r: _Reader) -> Counted:
        return cls(r.num("value"), r.integer("n"))


@dataclass(frozen=True)
class Shares:
    """Shares of the finite off-diagonal cells with C > 0, C < 0 and C > 1."""

    positive: float
    negative: float
    above_one: float
    n: int

    @classmethod
    def read(cls, r: _Reader) -> Shares:
        return cls(r.num("positive"), r.num("negative"), r.num("above_one"), r.integer("n"))


@dataclass(frozen=True)
class FamilyShare:
    """Intra-family share of the positive mass, and what it would be if the mass were uniform."""

    value: float
    uniform: float

    @classmethod
    def read(cls, r: _Reader) -> FamilyShare:
        return cls(r.num("value"), r.num("uniform"))


@dataclass(frozen=True)
class Properties:
    """Whole-matrix properties of C."""

    mean_offdiag_C: MeanC
    donor_strength: dict[str, Counted]
    receiver_strength: dict[str, Counted]
    asymmetry: Counted
    shares: Shares
    intra_family_share: FamilyShare
    intra_top_family_share: FamilyShare

    @classmethod
    def read(cls, r: _Reader) -> Properties:
        return cls(
            MeanC.read(r.sub("mean_offdiag_C")),
            {t: Counted.read(v) for t, v in r.entries("donor_strength")},
            {t: Counted.read(v) for t, v in r.entries("receiver_strength")},
            Counted.read(r.sub("asymmetry")), Shares.read(r.sub("shares")),
            FamilyShare.read(r.sub("intra_family_share")), FamilyShare.read(r.sub("intra_top_family_share")),
        )


@dataclass(frozen=True)
class Significance:
    """Off-diagonal cells different from 0 and from 1 at the BH level."""

    tested: int
    above_zero: int
    below_zero: int
    above_one: int
    below_one: int

    @classmethod
    def read(cls, r: _Reader) -> Significance:
        return cls(r.integer("tested"), r.integer("above_zero"), r.integer("below_zero"), r.integer("above_one"), r.integer("below_one"))


@dataclass(frozen=True)
class TransferMap:
    """The MDS map of transfer profiles and the clusters on the same distances."""

    languages: list[str]
    x: list[float]
    y: list[float]
    stress: float
    clusters: list[int]
    cluster_languages: list[str]
    k: int
    silhouette: float

    @classmethod
    def read(cls, r: _Reader) -> TransferMap:
        return cls(r.seq("languages"), r.seq("x"), r.seq("y"), r.num("stress"), r.seq("clusters"),
                   r.seq("cluster_languages"), r.integer("k"), r.num("silhouette"))


@dataclass(frozen=True)
class Mantel:
    """One Mantel test of the symmetrised C against a URIEL+ distance."""

    r: float
    p: float
    p_holm: float
    n_languages: int
    n_pairs: int
    exact: bool
    permutations: int
    used: list[str]

    @classmethod
    def read(cls, r: _Reader) -> Mantel:
        return cls(r.num("r"), r.num("p"), r.num("p_holm"), r.integer("n_languages"), r.integer("n_pairs"),
                   r.flag("exact"), r.integer("permutations"), r.seq("used"))


@dataclass(frozen=True)
class Typology:
    """Where the typological distances came from, and the codes they could not cover."""

    source: str | None
    unknown_iso: list[str]
    locales_without_iso: list[str]

    @classmethod
    def read(cls, r: _Reader) -> Typology:
        return cls(r.opt_text("source"), r.seq("unknown_iso"), r.seq("locales_without_iso"))


@dataclass(frozen=True)
class ProbeKind:
    """Language-ID probe accuracy of one cell kind, over the runs that carry a probe."""

    accuracy: float
    sd: float
    chance: float
    n_runs: int

    @classmethod
    def read(cls, r: _Reader) -> ProbeKind:
        return cls(r.num("accuracy"), r.num("sd"), r.num("chance"), r.integer("n_runs"))


@dataclass(frozen=True)
class Projection:
    """The 2-D probe projection of one target's self (else single) model."""

    cell: str
    seed: int
    accuracy: float | None
    x: list[float]
    y: list[float]
    locale: list[str]

    @classmethod
    def read(cls, r: _Reader) -> Projection:
        return cls(r.text("cell"), r.integer("seed"), r.opt_num("accuracy"), r.seq("x"), r.seq("y"), r.seq("locale"))


@dataclass(frozen=True)
class Probes:
    """Latent language-ID probes: by cell kind, and the projections per target."""

    by_kind: dict[str, ProbeKind]
    runs: int
    runs_without_probe: int
    projections: dict[str, Projection]

    @classmethod
    def read(cls, r: _Reader) -> Probes:
        return cls({k: ProbeKind.read(v) for k, v in r.entries("by_kind")}, r.integer("runs"),
                   r.integer("runs_without_probe"), {t: Projection.read(v) for t, v in r.entries("projections")})


@dataclass(frozen=True)
class KindTiming:
    """Steps-to-reach ratios of one cell kind."""

    mean_ratio: float
    reached: int
    cells: int

    @classmethod
    def read(cls, r: _Reader) -> KindTiming:
        return cls(r.num("mean_ratio"), r.integer("reached"), r.integer("cells"))


@dataclass(frozen=True)
class DonorTiming:
    """Steps-to-reach ratios of one donor."""

    mean_ratio: float
    n: int
    never: int

    @classmethod
    def read(cls, r: _Reader) -> DonorTiming:
        return cls(r.num("mean_ratio"), r.integer("n"), r.integer("never"))


@dataclass(frozen=True)
class TrainingTime:
    """Training-time transfer: how much sooner added data reaches the single run's best dev score."""

    runs: int
    by_kind: dict[str, KindTiming]
    by_donor: dict[str, DonorTiming]

    @classmethod
    def read(cls, r: _Reader) -> TrainingTime:
        return cls(r.integer("runs"), {k: KindTiming.read(v) for k, v in r.entries("by_kind")},
                   {d: DonorTiming.read(v) for d, v in r.entries("by_donor")})


def _footprint(r: _Reader) -> Mapping[str, Any] | None:
    """analysis.json's sub-network overlap (cltm analyse with --runs-dir adds it), the keys the report shows checked."""
    if "footprint" not in r.obj:
        return None
    f = r.sub("footprint")
    shown = ("languages", "overlap", "overlap_sd", "overlap_n", "self_overlap", "top", "chance", "profile")
    for key in shown if f.raw("available") else ("reason", "cells_missing"):
        f.raw(key)
    for k, row in enumerate(f.obj.get("profile", [])):
        p = _Reader(row, r.source, (*f.path, "profile", str(k)))
        for key in ("group", "jaccard", "sd", "pairs", "params"):
            p.raw(key)
    if "mantel" in f.obj:
        m = f.sub("mantel")
        for key in ("r", "p", "exact", "permutations", "n_languages", "n_pairs"):
            m.raw(key)
    return f.obj


@dataclass(frozen=True)
class Analysis:
    """The content of one matrix's analysis.json; ``typology`` is None when cltm analyse had none."""

    languages: list[str]
    properties: Properties
    significance: Significance
    map: TransferMap
    mantel: dict[str, Mantel]
    typology: Typology | None
    probes: Probes
    training_time: TrainingTime
    footprint: Mapping[str, Any] | None = None  # sub-network overlap (analysis.footprint), as written

    @classmethod
    def parse(cls, obj: Mapping[str, Any], source: str) -> Analysis:
        """Read analysis.json as loaded; ``source`` names the file in errors."""
        r = _Reader(obj, source)
        typology = r.obj.get("typology")  # cltm analyse always adds it; a bare analyse() result has none
        return cls(
            r.seq("languages"), Properties.read(r.sub("properties")), Significance.read(r.sub("significance")),
            TransferMap.read(r.sub("map")), {k: Mantel.read(v) for k, v in r.entries("mantel")},
            None if typology is None else Typology.read(r.sub("typology")),
            Probes.read(r.sub("probes")), TrainingTime.read(r.sub("training_time")),
            footprint=_footprint(r),
        )

    @classmethod
    def read(cls, path: Path) -> Analysis:
        """Read and check an analysis.json file."""
        return cls.parse(json.loads(Path(path).read_text(encoding="utf-8")), str(path))

    def best_mantel(self) -> tuple[str, float, float] | None:
        """The URIEL distance with the smallest Holm-adjusted Mantel p-value: (kind, r, adjusted p).

        Picking the smallest of several p-values is itself a test of "any link": unadjusted it is too optimistic."""
        rows = [(k, v.r, v.p_holm) for k, v in self.mantel.items() if math.isfinite(v.p_holm)]
        return min(rows, key=lambda x: (x[2], x[0])) if rows else None


# --------------------------------------------------------------------------------------------------
# One matrix of the report
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MatrixEntry:
    """One matrix of the report: a task, an architecture, the performance metric P and its CLTM.

    ``analysis`` is the matrix's analysis.json (cltm analyse) as loaded, or already an :class:`Analysis`;
    it is checked here, so a missing key fails before anything is rendered. ``source`` names it in errors.
    """

    task: str
    arch: str
    metric: str | None
    result: CLTMResult
    analysis: Mapping[str, Any] | Analysis | None = None
    source: str | None = None
    analysed: Analysis | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        a = self.analysis
        if a is not None and not isinstance(a, Analysis):
            a = Analysis.parse(a, self.source or f"analysis.json of {self.task}/{self.arch}")
        object.__setattr__(self, "analysed", a)

    @property
    def label(self) -> str:
        return f"{self.task} · {self.arch}"

    @property
    def slug(self) -> str:
        return slugify(f"{self.task}-{self.arch}")

    @property
    def metric_name(self) -> str:
        """P as the matrix computes it: an error rate is shown as 1 − error (cltm turns it around)."""
        name = self.metric or self.result.metric or "P"
        return f"1 − {name.upper() if name in ('eer', 'wer', 'cer') else name}" if lower_is_better(name) else name


def read_entry(matrix_dir: Path) -> MatrixEntry:
    """The entry of a written matrix directory ``.../<task>/<arch>``, with its analysis.json if there is one."""
    matrix_dir = Path(matrix_dir)
    task, arch = matrix_dir.parts[-2:]
    result = read_result(matrix_dir)
    path = matrix_dir / "analysis.json"  # cltm analyse writes it next to the matrix
    analysis = Analysis.read(path) if path.is_file() else None
    return MatrixEntry(task=task, arch=arch, metric=result.metric, result=result, analysis=analysis)


# --------------------------------------------------------------------------------------------------
# Learning curves (cltm learning-curve): curve.tsv and recommendation.json
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """The least-squares line P = alpha + beta * log2(units) of one target."""

    alpha: float
    beta: float

    @classmethod
    def read(cls, r: _Reader) -> Fit:
        return cls(r.num("alpha"), r.num("beta"))


@dataclass(frozen=True)
class StepTarget:
    """One target at one N of the ladder: single (b) and self (c) means, the gain c − b, its SE, and the verdict."""

    b: float
    c: float
    gain: float
    se: float
    clear: bool

    @classmethod
    def read(cls, r: _Reader) -> StepTarget:
        return cls(r.num("b"), r.num("c"), r.num("gain"), r.num("se"), r.flag("clear"))


@dataclass(frozen=True)
class Step:
    """One N of the ladder: every target's self gain, and whether all are clearly positive."""

    n: float
    all_clear: bool
    targets: dict[str, StepTarget]

    @classmethod
    def read(cls, r: _Reader) -> Step:
        return cls(r.num("n"), r.flag("all_clear"), {t: StepTarget.read(v) for t, v in r.entries("targets")})


@dataclass(frozen=True)
class Recommendation:
    """recommendation.json: the rule, the per-N self gains and the fit; ``recommended_n`` None if no N passes."""

    task: str
    arch: str
    metric: str
    unit: str
    languages: list[str]
    seeds: list[int]
    rule: str
    recommended_n: float | None  # as written (an int stays an int: it is drawn as a line at that x)
    steps: list[Step]
    fit: dict[str, Fit]

    @classmethod
    def parse(cls, obj: Mapping[str, Any], source: str) -> Recommendation:
        """Read recommendation.json as loaded; ``source`` names the file in errors."""
        r = _Reader(obj, source)
        steps = [Step.read(_Reader(s, source, (f"steps[{k}]",))) for k, s in enumerate(r.seq("steps"))]
        r.opt_num("recommended_n")  # checked; kept as written
        return cls(r.text("task"), r.text("arch"), r.text("metric"), r.text("unit"), r.seq("languages"),
                   r.seq("seeds"), r.text("rule"), r.raw("recommended_n"), steps,
                   {t: Fit.read(v) for t, v in r.entries("fit")})


@dataclass(frozen=True)
class LearningCurve:
    """One learning curve: curve.tsv as a frame and its recommendation."""

    curve: pl.DataFrame
    rec: Recommendation

    @classmethod
    def parse(cls, obj: Mapping[str, Any] | LearningCurve, source: str) -> LearningCurve:
        """From ``{"curve": curve.tsv as a DataFrame, "rec": recommendation.json}`` (as the CLI passes it)."""
        if isinstance(obj, LearningCurve):
            return obj
        return cls(obj["curve"], Recommendation.parse(obj["rec"], source))


def read_learning_curves(curves: Sequence[Mapping[str, Any] | LearningCurve]) -> list[LearningCurve]:
    """Check every learning curve given to the report, naming each in errors by its position."""
    return [LearningCurve.parse(lc, f"recommendation.json of learning curve {k + 1}") for k, lc in enumerate(curves)]
