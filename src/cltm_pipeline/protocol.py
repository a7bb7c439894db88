"""Protocol facts every layer shares: the cell kinds, and each metric's direction (P is higher-is-better)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SINGLE", "CELL_KINDS", "cell_kind", "Metric", "METRICS", "lower_is_better", "performance"]

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
