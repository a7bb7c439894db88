"""Protocol facts every layer shares: the cell kinds, and each metric's direction (P is higher-is-better)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["SINGLE", "CELL_KINDS", "cell_kind", "Metric", "METRICS", "lower_is_better", "performance", "CellSpec"]

#: The donor of a single cell (target data alone), in paths, seed tables and the CLI.
SINGLE = "-"
#: single: N of the target; self: 2N of the target (nested); dual: the same N of the target plus N of a donor.
CELL_KINDS = ("single", "self", "dual")


def cell_kind(target: str, donor: str | None) -> str:
    """single (no donor, or SINGLE), self (donor is the target) or dual."""
    if donor is None or donor == SINGLE:
        return "single"
    return "self" if donor == target else "dual"


@dataclass(frozen=True)
class Metric:
    """A metric a cell reports, and whether a larger value is better (else P = 1 - value)."""

    name: str
    higher_is_better: bool


#: Every metric a task writes into metrics.json that a config may choose as the performance P.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("macro_f1", True), Metric("accuracy", True), Metric("f1", True), Metric("auc", True),
    Metric("eer", False), Metric("wer", False), Metric("cer", False), Metric("asr_error", False),
    Metric("mean_utt_wer", False),
)}


def lower_is_better(metric: str) -> bool:
    """Whether ``metric`` is an error (EER, WER, CER, ...), which the matrices turn into P = 1 - error."""
    known = METRICS.get(metric)
    return known is not None and not known.higher_is_better


def performance(metric: str, raw: float) -> float:
    """A raw metric value as P (higher is better)."""
    return 1.0 - raw if lower_is_better(metric) else raw


@dataclass(frozen=True)
class CellSpec:
    """What one cell is: its task, architecture, target, donor and seed, and the inputs it trains and scores on.

    ``donor`` None is the single cell, ``donor == target`` the self cell, any other locale a dual cell.
    ``artifacts`` are the task's declared artifacts by name (part of the data hash); ``probe_path`` the task's
    probe set; ``predictions_out`` receives the test set's per-item predictions; ``threads`` overrides
    ``hparams.threads``. ``out_path`` is the cell's metrics.json (one cell per directory)."""

    task: str
    arch: str
    model_dir: Path
    seed_table_path: Path
    test_path: Path
    dev_path: Path
    ingest_root: Path
    target: str
    donor: str | None
    seed: int
    hparams: Mapping[str, Any]
    out_path: Path
    device: str = "auto"
    config_hash: str = ""
    threads: int | None = None
    predictions_out: Path | None = None
    artifacts: Mapping[str, Path] = field(default_factory=dict)
    probe_path: Path | None = None

    def __post_init__(self) -> None:
        for name in ("model_dir", "seed_table_path", "test_path", "dev_path", "ingest_root", "out_path"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        for name in ("predictions_out", "probe_path"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        object.__setattr__(self, "artifacts", {k: Path(v) for k, v in (self.artifacts or {}).items()})
        if self.donor == SINGLE:
            object.__setattr__(self, "donor", None)

    @property
    def kind(self) -> str:
        """single, self or dual."""
        return cell_kind(self.target, self.donor)

    @property
    def where(self) -> str:
        """The cell's name in messages: task/arch/target/donor/seed."""
        return f"{self.task}/{self.arch}/{self.target}/{self.donor or SINGLE}/seed{self.seed}"
