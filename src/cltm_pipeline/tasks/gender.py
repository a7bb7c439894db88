"""Gender identification: binary female/male per clip, scored by macro-F1 (DESIGN.md §1)."""

from __future__ import annotations

from typing import Sequence

from cltm_pipeline.metrics import accuracy, macro_f1
from cltm_pipeline.tasks.registry import Task, register

LABELS = ("female", "male")


def evaluate(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """Macro-F1 over {female, male} (the performance P) and accuracy."""
    return {"macro_f1": macro_f1(y_true, y_pred, labels=LABELS), "accuracy": accuracy(y_true, y_pred)}


GENDER = register(Task(name="gender", labels=LABELS, label_column="gender", primary="macro_f1", cell="cltm_pipeline.tasks.classification:ClassificationCell",
                       evaluate=evaluate, metrics=("accuracy",)))
