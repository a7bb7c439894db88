"""Task registry: what a task predicts, from which manifest column, how it is trained and scored.

A task is registered under its config name (``tasks.<name>`` in the config) with :func:`register`;
adding a task is one module here that registers itself, plus its import below. No rule changes: the
workflow builds whatever artifacts a task declares and hands them to its cells.

- An utterance-classification task (gender) only names its labels, label column and ``evaluate``; the
  shared loop in :mod:`cltm_pipeline.train` trains it.
- A task with its own training (speaker verification, ASR) sets ``run``: a callable with the keyword
  signature of :func:`cltm_pipeline.train.run_cell` (it receives the cell's ``artifacts`` too).
- ``target_artifacts``: files built once per (task, target) from the target's test and dev sets, e.g. the
  SV trial list; ``task_artifacts``: files built once per task (matrix) from the ingested tables of its
  languages, e.g. the ASR vocabulary. Each is ``name -> builder`` returning the file's bytes; the workflow
  writes them to ``subsets/<task>/<target>/<name>`` and ``subsets/<task>/<name>``, and every cell of the
  task receives their paths (their content is part of the cell's data hash).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

__all__ = ["Task", "TASKS", "register", "get_task", "artifact_names"]


@dataclass(frozen=True)
class Task:
    """A task: one label per clip read from ``label_column`` of the manifests, scored by ``evaluate``."""

    name: str
    labels: tuple[str, ...]  # class names; the model's output index i is labels[i] (empty: set per cell)
    label_column: str
    primary: str  # the key of the metrics that is the protocol's performance P
    evaluate: Callable[[Sequence, Sequence], Mapping[str, float]] | None = None  # (y_true, y_pred) -> metrics
    run: Callable[..., dict[str, Any]] | None = None  # own cell runner (run_cell's keywords); None: classification
    target_artifacts: Mapping[str, Callable[..., bytes]] = field(default_factory=dict)  # name -> f(spec, test, dev)
    task_artifacts: Mapping[str, Callable[..., bytes]] = field(default_factory=dict)  # name -> f(spec, {locale: table})
    hparams: Mapping[str, Any] = field(default_factory=dict)  # hyper-parameters the task adds, with defaults
    metrics: tuple[str, ...] = ()  # metric keys a config may choose as P (besides ``primary``)
    check_hparams: Callable[[Mapping[str, Any]], None] | None = None  # checks of ``hparams`` values (ConfigError)


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task to :data:`TASKS` (a name registered twice is a programming error)."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} registered twice")
    if task.run is None:
        if task.evaluate is None or task.primary not in task.evaluate(task.labels, task.labels):
            raise ValueError(f"task {task.name!r}: evaluate() does not return its primary metric {task.primary!r}")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task ``name``, or a one-line ConfigError listing those that exist."""
    from ..config import ConfigError

    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r} (registered: {', '.join(sorted(TASKS)) or 'none'})") from None


def artifact_names(kind: str) -> list[str]:
    """Every registered task's artifact file names of ``kind`` ("target" or "task"), for wildcard constraints."""
    return sorted({n for t in TASKS.values() for n in (t.target_artifacts if kind == "target" else t.task_artifacts)})


from . import gender  # noqa: E402,F401  (registers itself)
from . import asr  # noqa: E402,F401  (registers itself)
from . import sv  # noqa: E402,F401  (registers itself)
