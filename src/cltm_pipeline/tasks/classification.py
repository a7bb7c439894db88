"""Utterance classification (one label per clip, e.g. gender): the hooks of one cell.

The architecture's classifier (``load``) maps a batch of cropped clips to logits; cross-entropy on the
training rows in a seeded order with random crops; dev and test clips are centre-cropped, in fixed batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import polars as pl
import torch

from cltm_pipeline.data.audio import SAMPLE_RATE, Clips
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.io import write_tsv
from cltm_pipeline.models import get_architecture
from cltm_pipeline.protocol import CellSpec, performance
from cltm_pipeline.tasks.registry import CellData, TaskCell, get_task

__all__ = ["ClassificationCell", "label_indices"]


def label_indices(rows: pl.DataFrame, column: str, labels: tuple[str, ...], what: str) -> np.ndarray:
    """Each row's label as its index in ``labels``; a value outside them is a one-line ConfigError."""
    index = {lab: k for k, lab in enumerate(labels)}
    values = rows[column].to_list()
    bad = sorted({v for v in values if v not in index})
    if bad:
        raise ConfigError(f"{what}: {column} value(s) {bad[:3]} are not among the task's labels {list(labels)}")
    return np.array([index[v] for v in values], dtype=np.int64)


class ClassificationCell(TaskCell):
    """One cell of an utterance-classification task."""

    def __init__(self, spec: CellSpec, hp: Mapping[str, Any], data: CellData, device: Any):
        super().__init__(spec, hp, data, device)
        self.task = get_task(spec.task)
        label = lambda rows, what: label_indices(rows, self.task.label_column, self.task.labels,  # noqa: E731
                                                 f"{spec.where} {what}")
        self.y_train, self.y_test, self.y_dev = label(data.train, "training rows"), label(data.test, "test set"), \
            label(data.dev, "dev set")
        self.train_clips = Clips(data.train, spec.ingest_root)
        self.max_len = int(round(hp["max_seconds"] * SAMPLE_RATE))
        self.dev_batches, self.test_batches = self._eval_batches(data.dev), self._eval_batches(data.test)
        self.test_pred: np.ndarray | None = None

    def _eval_batches(self, rows: pl.DataFrame) -> list[tuple[Any, Any]]:
        clips, size = Clips(rows, self.spec.ingest_root), self.hp["eval_batch_size"]
        out = []
        for lo in range(0, rows.height, size):
            x, n = clips.batch(np.arange(lo, min(lo + size, rows.height)), self.max_len, None)
            out.append((torch.from_numpy(x), torch.from_numpy(n)))  # moved to the device batch by batch
        return out

    def build(self, rng: np.random.Generator) -> None:
        arch = get_architecture(self.spec.arch)
        self.model = arch.load(self.spec.model_dir, len(self.task.labels),
                               freeze_feature_encoder=self.hp["freeze_feature_encoder"]).to(self.device)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.units = len(self.y_train)
        self.total_steps = -(-self.units // self.hp["batch_size"]) * self.hp["epochs"]

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list[Any]:
        order, size = rng.permutation(self.units), self.hp["batch_size"]
        return [order[lo:lo + size] for lo in range(0, len(order), size)]

    def loss(self, idx: Any, rng: np.random.Generator) -> tuple[Any, int]:
        x, n = self.train_clips.batch(idx, self.max_len, rng)
        logits = self.model(torch.from_numpy(x).to(self.device), torch.from_numpy(n).to(self.device))
        return self.loss_fn(logits, torch.from_numpy(self.y_train[idx]).to(self.device)), len(idx)

    def _predict(self, batches: list[tuple[Any, Any]]) -> np.ndarray:
        self.model.eval()
        preds = []
        with torch.no_grad():
            for x, n in batches:
                preds.append(self.model(x.to(self.device), n.to(self.device)).argmax(-1).cpu().numpy())
        self.model.train()
        return np.concatenate(preds)

    def _score(self, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        names = np.array(self.task.labels, dtype=object)
        return dict(self.task.evaluate(names[y], names[pred]))

    def dev_score(self) -> tuple[float, Any]:
        raw = self._score(self.y_dev, self._predict(self.dev_batches))[self.task.primary]
        return performance(self.task.primary, raw), raw

    def test(self, best_extra: Any) -> dict[str, Any]:
        self.test_pred = self._predict(self.test_batches)
        primary = self.task.primary
        return {"metrics": {**self._score(self.y_test, self.test_pred), f"dev_{primary}": float(best_extra)},
                "primary_metric": primary, "n_test": len(self.y_test), "n_dev": len(self.y_dev)}

    def probe_input(self) -> tuple[Callable[..., Any] | None, int]:
        return self.model.embed, self.max_len

    def write_predictions(self, path: Path) -> None:
        names = np.array(self.task.labels, dtype=object)
        write_tsv(Path(path), self.data.test.select("utt_id", "client_id").with_columns(
            pl.Series("label", names[self.y_test].tolist()), pl.Series("prediction", names[self.test_pred].tolist())))
