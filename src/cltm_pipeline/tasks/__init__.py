"""Task registry: what a task predicts, from which manifest column, and how it is scored.

A task is registered under its config name (``tasks.<name>`` in the config) with :func:`register`;
adding a task is one module here that registers itself, plus its import below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

__all__ = ["Task", "TASKS", "register", "get_task"]


@dataclass(frozen=True)
class Task:
    """An utterance-level task: one label per clip, read from ``label_column`` of the manifests."""

    name: str
    labels: tuple[str, ...]  # class names; the model's output index i is labels[i]
    label_column: str
    primary: str  # the key of ``evaluate``'s result that is the protocol's performance P
    evaluate: Callable[[Sequence, Sequence], Mapping[str, float]]  # (y_true, y_pred) -> metrics


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task to :data:`TASKS` (a name registered twice is a programming error)."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} registered twice")
    if task.primary not in task.evaluate(task.labels, task.labels):
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


from . import gender  # noqa: E402,F401  (registers itself)
