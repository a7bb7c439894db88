"""The one training loop: optimiser, schedule, dev evaluation, best-state selection, checkpoints and resume.

Every task trains through :func:`fit`; a task supplies only its hooks (:class:`cltm_pipeline.tasks.TaskCell`).
AdamW over the trainable parameters, the learning-rate schedule of :func:`lr_factor`, gradient clipping,
dev evaluation every ``eval_every`` steps (or after each epoch; the last step always) and the state with
the best dev P (strictly better: ties keep the earlier, less trained state). With ``patience`` set, training
stops once that many evaluations in a row have not beaten the best: later steps could only be selected by
beating it, and on small data the dev curve has peaked long before the last epoch (the demo's ASR: best
at about step 300 of 700).

Resume: with ``checkpoint_every`` set, the loop writes the cell's checkpoint every so many steps (model,
optimiser, scheduler, AMP scaler, position in the epoch's batch plan, best-so-far state, curves and every
RNG state). A rerun of a killed cell continues from it and ends with the metrics an uninterrupted run
would have had.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from cltm_pipeline.tasks import TaskCell
from cltm_pipeline.training.checkpoint import Checkpoints, rng_states, set_rng_states

__all__ = ["lr_factor", "fit", "FitState", "STEP_HOOK"]

#: Test hook: called with the step number after each optimiser step (and its evaluation and checkpoint).
STEP_HOOK: Callable[[int], None] | None = None


def lr_factor(step: int, total_steps: int, warmup: int, schedule: str) -> float:
    """Multiplier of the learning rate at optimiser step ``step`` (from 0): linear warm-up over ``warmup``
    steps, then constant or linear decay to 0 at ``total_steps`` (Hugging Face Trainer's default)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


@dataclass
class FitState:
    """Where training is: step, epoch, position in the epoch's batch plan, and what has been recorded."""

    step: int = 0
    epoch: int = 0
    pos: int = 0
    plan: list[Any] | None = None
    losses: list[float] = field(default_factory=list)  # of the current epoch
    epoch_loss: list[float] = field(default_factory=list)
    curve: list[list[float]] = field(default_factory=list)
    best_score: float = -np.inf
    best_step: int = 0
    best_state: dict[str, Any] | None = None
    best_extra: Any = None
    stopped_early: bool = False
    resumed_from: int | None = None
    loop_started: float = 0.0  # perf_counter when the first step began (setup ends there)

    def training(self) -> dict[str, Any]:
        """metrics.json's ``training`` fields the loop owns."""
        return {"steps": self.step, "stopped_early": self.stopped_early, "best_step": self.best_step, "dev_curve": self.curve, "train_loss": self.epoch_loss}


def _tensors(obj: Any) -> Any:
    """A batch plan as tensors and lists (a checkpoint holds no numpy objects)."""
    if isinstance(obj, (list, tuple)):
        return [_tensors(x) for x in obj] if isinstance(obj, list) else tuple(_tensors(x) for x in obj)
    return torch.from_numpy(np.asarray(obj))


def _arrays(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_arrays(x) for x in obj] if isinstance(obj, list) else tuple(_arrays(x) for x in obj)
    return obj.numpy()


def _cpu_state(model: Any) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class _Run:
    """One fit: the task's hooks, the optimiser, schedule and scaler, and the state they share."""

    def __init__(self, cell: TaskCell, hp: Mapping[str, Any], rng: np.random.Generator, checkpoints: Checkpoints):
        self.cell, self.hp, self.rng, self.checkpoints = cell, hp, rng, checkpoints
        self.params = [p for p in cell.model.parameters() if p.requires_grad]
        self.optimiser = torch.optim.AdamW(self.params, lr=hp["lr"], weight_decay=hp["weight_decay"])
        total, warmup = cell.total_steps, int(hp["warmup_ratio"] * cell.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimiser, lambda step: lr_factor(step, total, warmup, hp["lr_schedule"]))
        self.scaler = torch.amp.GradScaler("cuda", enabled=cell.fp16)
        self.state = FitState()

    def resume(self, checkpoint: Mapping[str, Any]) -> None:
        """Continue from a checkpoint written for this cell."""
        s, t = self.state, checkpoint["training"]
        self.cell.model.load_state_dict(checkpoint["model"])
        self.optimiser.load_state_dict(checkpoint["optimiser"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        s.step, s.epoch, s.pos = t["step"], t["epoch"], t["pos"]
        s.plan = None if t["plan"] is None else _arrays(t["plan"])
        s.losses, s.epoch_loss, s.curve = list(t["losses"]), list(t["epoch_loss"]), [list(c) for c in t["curve"]]
        s.best_score, s.best_step, s.best_extra = t["best_score"], t["best_step"], t["best_extra"]
        s.best_state = _cpu_state(self.cell.model) if t["best_is_current"] else t["best_state"]
        set_rng_states(checkpoint["rng"])
        self.rng.bit_generator.state = checkpoint["rng"]["generator"]
        s.resumed_from = s.step
        print(f"{self.checkpoints.where}: resuming from {self.checkpoints.path} at step {s.step} of "
              f"{self.cell.total_steps}", file=sys.stderr, flush=True)

    def save(self) -> None:
        s = self.state
        best_is_current = s.best_state is not None and s.best_step == s.step  # stored once, not twice
        self.checkpoints.save({
            "model": self.cell.model.state_dict(), "optimiser": self.optimiser.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "training": {
                "step": s.step, "epoch": s.epoch, "pos": s.pos, "plan": None if s.plan is None else _tensors(s.plan),
                "losses": list(s.losses), "epoch_loss": list(s.epoch_loss), "curve": [[int(a), float(b)] for a, b in s.curve],
                "best_score": float(s.best_score), "best_step": int(s.best_step), "best_extra": s.best_extra,
                "best_state": None if best_is_current else s.best_state, "best_is_current": best_is_current,
            },
            "rng": {**rng_states(self.cell.device.type == "cuda"), "generator": self.rng.bit_generator.state},
        })

    def step_done(self) -> None:
        """Everything of the current step is done (its evaluation, its epoch's end): checkpoint if due."""
        every, step = self.hp["checkpoint_every"], self.state.step
        if step and every and step % every == 0 and step < self.cell.total_steps:
            self.save()
        if STEP_HOOK is not None:
            STEP_HOOK(step)

    def patience_spent(self) -> bool:
        """Whether the last ``patience`` dev evaluations all failed to beat the best (derived from the curve,
        so a resumed run decides as an uninterrupted one)."""
        patience, s = self.hp.get("patience"), self.state
        return bool(patience) and sum(1 for step, _ in s.curve if step > s.best_step) >= patience

    def evaluate_dev(self) -> None:
        s = self.state
        value, extra = self.cell.dev_score()
        s.curve.append([s.step, value])
        if value > s.best_score:  # strict: ties keep the earlier (less trained) state
            s.best_score, s.best_step, s.best_extra, s.best_state = value, s.step, extra, _cpu_state(self.cell.model)

    def train_step(self, batch: Any) -> None:
        loss, size = self.cell.loss(batch, self.rng)
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.hp["max_grad_norm"]:
            self.scaler.unscale_(self.optimiser)
            torch.nn.utils.clip_grad_norm_(self.params, self.hp["max_grad_norm"])
        self.scaler.step(self.optimiser)
        self.scaler.update()
        self.scheduler.step()
        self.state.losses.append(float(loss.detach()) * size)

    def epoch(self) -> None:
        s, every, total = self.state, self.hp["eval_every"], self.cell.total_steps
        if s.plan is None:
            s.plan, s.losses = self.cell.epoch_batches(s.epoch, self.rng), []
        while s.pos < len(s.plan):
            self.train_step(s.plan[s.pos])
            s.step, s.pos = s.step + 1, s.pos + 1
            if every and s.step % every == 0 and s.step != total:
                self.evaluate_dev()
                if self.patience_spent():
                    break
            if s.pos < len(s.plan):
                self.step_done()  # (an epoch's last step is done after the epoch's end below)
        s.epoch_loss.append(sum(s.losses) / max(1, self.cell.units))
        if not every or s.step == total:
            self.evaluate_dev()
        s.epoch, s.pos, s.plan, s.losses = s.epoch + 1, 0, None, []
        self.step_done()


def fit(cell: TaskCell, hp: Mapping[str, Any], rng: np.random.Generator, checkpoints: Checkpoints,
        checkpoint: Mapping[str, Any] | None = None) -> FitState:
    """Train ``cell.model`` (built, seeded) and leave it in its best dev state; resume from ``checkpoint``."""
    run = _Run(cell, hp, rng, checkpoints)
    if checkpoint is not None:
        run.resume(checkpoint)
    run.state.loop_started = time.perf_counter()
    cell.model.train()
    while run.state.epoch < hp["epochs"] and not run.patience_spent():
        run.epoch()
    run.state.stopped_early = run.state.step < cell.total_steps
    cell.model.load_state_dict(run.state.best_state)
    return run.state
