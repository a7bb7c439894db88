"""A cell's checkpoint: everything training needs to continue exactly where a killed job stopped.

A checkpoint holds only tensors and plain Python values (no numpy objects), so it loads with
``torch.load(weights_only=True)``: no pickled code runs when a file left by a killed job is read. It is
resumed only if it was written for exactly the same inputs (its identity); a stale or unreadable one is
deleted with a line on stderr, and training starts from the beginning.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from cltm_pipeline.io import atomic_path

__all__ = ["CHECKPOINT_NAME", "CHECKPOINT_FORMAT", "Checkpoints", "rng_states", "set_rng_states"]

#: Name of a cell's checkpoint, in the directory of its metrics.json (one cell per directory).
CHECKPOINT_NAME = "checkpoint.pt"
#: 2: one layout for every task (the epoch's batch plan, the best state's task extras, the AMP scaler).
CHECKPOINT_FORMAT = 2


def rng_states(cuda: bool) -> dict[str, Any]:
    """Every random state training draws from: torch (CPU, CUDA), numpy's global state, python's ``random``."""
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda else None,
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])}},
        "python": random.getstate(),
    }


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_states` recorded."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None:
        torch.cuda.set_rng_state_all(states["cuda"])
    np_state = dict(states["numpy"])
    np_state["state"] = {"key": np.array(np_state["state"]["key"], dtype=np.uint32), "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    random.setstate(states["python"])


class Checkpoints:
    """The checkpoint file of one cell, written for ``identity`` (what the cell's results depend on)."""

    def __init__(self, path: Path, identity: Mapping[str, Any], where: str):
        self.path, self.identity, self.where = Path(path), dict(identity), where

    def load(self) -> dict[str, Any] | None:
        """The checkpoint if it exists and was written for this identity; else None (a stale or unreadable
        one is deleted, with a line on stderr)."""
        if not self.path.is_file():
            return None
        try:
            checkpoint = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"not a format-{CHECKPOINT_FORMAT} cell checkpoint")
        except Exception as exc:  # truncated by a failing disk, another torch version, not a checkpoint at all
            why = f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        else:
            theirs = checkpoint.get("identity") or {}
            differ = sorted(k for k in set(self.identity) | set(theirs) if self.identity.get(k) != theirs.get(k))
            if not differ:
                return checkpoint
            why = f"written for other inputs ({', '.join(differ)} differ)"
        print(f"{self.where}: {self.path}: {why}; discarded, training from the start", file=sys.stderr, flush=True)
        self.path.unlink(missing_ok=True)
        return None

    def save(self, payload: Mapping[str, Any]) -> None:
        """Write atomically and durably: a kill or node failure leaves the previous checkpoint or this one."""
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                torch.save({"format": CHECKPOINT_FORMAT, "identity": self.identity, **payload}, fh)
                fh.flush()
                os.fsync(fh.fileno())

    def remove(self) -> None:
        """Only unfinished cells keep one."""
        self.path.unlink(missing_ok=True)
