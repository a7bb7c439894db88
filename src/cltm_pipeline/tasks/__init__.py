"""Task registry: what a task predicts, how one of its cells trains (its hooks) and how it is scored.

Adding a task is one module here that registers itself (:func:`register`), its import below, and a config
entry; no rule changes. See :mod:`cltm_pipeline.tasks.registry`.
"""

from cltm_pipeline.tasks.registry import TASKS, CellData, Task, TaskCell, artifact_names, get_task, register

from cltm_pipeline.tasks import gender  # noqa: E402,F401  (registers itself)
from cltm_pipeline.tasks import asr  # noqa: E402,F401  (registers itself)
from cltm_pipeline.tasks import sv  # noqa: E402,F401  (registers itself)

__all__ = ["Task", "TaskCell", "CellData", "TASKS", "register", "get_task", "artifact_names"]
