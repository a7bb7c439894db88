"""The task registry and the hooks a task implements for one cell.

A task is registered under its config name (``tasks.<name>`` in the config) with :func:`register`. Its
``cell`` (a :class:`TaskCell`) is what the one training loop (:func:`cltm_pipeline.training.loop.fit`)
drives, as SpeechBrain's ``Brain`` subclasses override only ``compute_forward`` and ``compute_objectives``:
the task builds its model and head, its batches, its loss and its evaluation; the loop owns the optimiser,
the schedule, dev evaluation and best-state selection, and checkpoints.
The registering module imports no torch (the Snakefile imports the registry to validate a config): ``cell``
names the task's :class:`TaskCell` subclass in a sibling module (``<task>_cell``), which imports the
registering module and is imported only when a cell runs.

- ``target_artifacts``: files built once per (task, target) from the target's test and dev sets, e.g. the
  SV trial list; ``task_artifacts``: files built once per task (matrix) from the ingested tables of its
  languages, e.g. the ASR vocabulary. Each is ``name -> builder`` returning the file's bytes; the workflow
  writes them to ``subsets/<task>/<target>/<name>`` and ``subsets/<task>/<name>``, and every cell of the
  task receives their paths (their content is part of the cell's data hash).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl

from cltm_pipeline.errors import ConfigError
from cltm_pipeline.protocol import CellSpec

__all__ = ["Task", "TaskCell", "CellData", "TASKS", "register", "get_task", "artifact_names"]


@dataclass(frozen=True)
class CellData:
    """A cell's manifests: its training rows (single, self or dual) and the target's test and dev sets."""

    train: pl.DataFrame
    test: pl.DataFrame
    dev: pl.DataFrame


class TaskCell:
    """One cell of a task: the hooks :func:`cltm_pipeline.training.loop.fit` calls.

    Constructed before the seed is set, from the cell's data (nothing random); :meth:`build` runs after
    seeding and creates the model. A batch is whatever :meth:`epoch_batches` returns and :meth:`loss`
    takes: numpy index arrays or tuples of them (they are stored in checkpoints as tensors)."""

    #: mixed precision (honoured on CUDA only; the loop scales the loss)
    fp16: bool = False

    def __init__(self, spec: CellSpec, hp: Mapping[str, Any], data: CellData, device: Any):
        self.spec, self.hp, self.data, self.device = spec, hp, data, device
        self.model: Any = None
        self.train_rows = data.train  # the rows it trains on (a task may leave some out, counted)
        self.units = 0  # training units per epoch: the epoch's mean loss divides by it
        self.total_steps = 0  # optimiser steps of the whole run (the schedule needs them)

    def build(self, rng: np.random.Generator) -> None:
        """Create ``model`` (the torch RNG is seeded), ``units`` and ``total_steps``."""
        raise NotImplementedError

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list[Any]:
        """The batches of ``epoch``, in order (drawn when the epoch starts)."""
        raise NotImplementedError

    def loss(self, batch: Any, rng: np.random.Generator) -> tuple[Any, int]:
        """The training loss of one batch and the units it holds."""
        raise NotImplementedError

    def dev_score(self) -> tuple[float, Any]:
        """P on the dev set (higher is better; it selects the best state), and what to keep beside it."""
        raise NotImplementedError

    def test(self, best_extra: Any) -> dict[str, Any]:
        """Score the test set with the selected state; the task's fields of metrics.json (metrics first)."""
        raise NotImplementedError

    def probe_input(self) -> tuple[Callable[..., Any] | None, int]:
        """What the language probe embeds with (None: nothing to probe) and its clip length in samples."""
        return None, 0

    def device_note(self) -> str:
        """Appended to the device metrics.json records (ASR: " fp16")."""
        return ""

    def timing(self) -> dict[str, Any]:
        """Timings the task adds to metrics.json's ``timing``."""
        return {}

    def training_info(self) -> dict[str, Any]:
        """Fields the task adds at the front of metrics.json's ``training``."""
        return {}

    def write_predictions(self, path: Any) -> None:
        """The test set's per-item predictions as a TSV, for error analysis."""
        raise NotImplementedError


@dataclass(frozen=True)
class Task:
    """A task: one label per clip read from ``label_column`` of the manifests, trained by ``cell``."""

    name: str
    labels: tuple[str, ...]  # class names; the model's output index i is labels[i] (empty: set per cell)
    label_column: str
    primary: str  # the key of the metrics that is the protocol's performance P
    # the hooks of one cell: the TaskCell subclass as "module:Class", imported by :meth:`make_cell` when a cell
    # runs, never when a config is validated (``snakemake -n`` loads no torch); the cell module imports the
    # task's module, not the other way round
    cell: str
    target_artifacts: Mapping[str, Callable[..., bytes]] = field(default_factory=dict)  # name -> f(spec, test, dev)
    task_artifacts: Mapping[str, Callable[..., bytes]] = field(default_factory=dict)  # name -> f(spec, {locale: table})
    hparams: Mapping[str, Any] = field(default_factory=dict)  # hyper-parameters the task adds, with defaults
    metrics: tuple[str, ...] = ()  # metric keys a config may choose as P (besides ``primary``)
    check_hparams: Callable[[Mapping[str, Any]], None] | None = None  # checks of ``hparams`` values (ConfigError)
    evaluate: Callable[[Sequence, Sequence], Mapping[str, float]] | None = None  # (y_true, y_pred) -> metrics

    def make_cell(self, spec: CellSpec, hp: Mapping[str, Any], data: CellData, device: Any) -> TaskCell:
        """The hooks of one cell: an instance of :attr:`cell`, its module imported on first use."""
        module, _, name = self.cell.partition(":")
        return getattr(importlib.import_module(module), name)(spec, hp, data, device)


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task to :data:`TASKS` (a name registered twice is a programming error)."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} registered twice")
    if task.evaluate is not None and task.primary not in task.evaluate(task.labels, task.labels):
        raise ValueError(f"task {task.name!r}: evaluate() does not return its primary metric {task.primary!r}")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task ``name``, or a one-line ConfigError listing those that exist."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r} (registered: {', '.join(sorted(TASKS)) or 'none'})") from None


def artifact_names(kind: str) -> list[str]:
    """Every registered task's artifact file names of ``kind`` ("target" or "task"), for wildcard constraints."""
    return sorted({n for t in TASKS.values() for n in (t.target_artifacts if kind == "target" else t.task_artifacts)})
