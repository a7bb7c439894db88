"""Hyper-parameters: the defaults every task shares and their checks; tasks and architectures add their own keys."""

from __future__ import annotations

from typing import Any, Mapping

from cltm_pipeline.errors import ConfigError
from cltm_pipeline.models import ARCHITECTURES, get_architecture
from cltm_pipeline.tasks import TASKS, get_task

__all__ = ["HPARAM_DEFAULTS", "RESULT_NEUTRAL", "ABSENT_AT_DEFAULT", "result_hparams", "check_hparams", "hparam_extras", "schema_fragment"]

#: Hyper-parameters a config may set, and their defaults (the study's where it had one: 1 epoch, lr 1e-5,
#: best checkpoint by dev macro-F1). ``eval_every``: evaluate dev every so many optimiser steps (None:
#: after each epoch; the last step is always evaluated). ``threads``: torch intra-op threads (1 lets two
#: cells share two cores). ``lr_schedule``: "linear" decay to 0 after ``warmup_ratio`` of the steps
#: (Hugging Face Trainer's default), or "constant". ``checkpoint_every``: write ``checkpoint.pt`` beside
#: metrics.json every so many optimiser steps (atomically), so a cell killed mid-training (time limit,
#: preemption, node failure) resumes there with the same final metrics as an uninterrupted run; None: no
#: checkpoints. It does not change the results; the checkpoint is deleted once metrics.json is written.
#: ``probe_clips``: clips per language of the held-out probe set (``cltm_pipeline.training.probe``) on which the
#: trained model's pooled embeddings are probed for language identity; 0: no probe. ``footprint_top``: the
#: fraction of encoder parameters a single cell's fine-tuning footprint marks (top |update|, packed bits
#: beside metrics.json; ``cltm_pipeline.training.footprint``); 0: no footprint. ``patience``: stop once
#: this many dev evaluations in a row have not beaten the best (early stopping; None: train every epoch).
HPARAM_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "lr": 1e-5,
    "batch_size": 8,
    "max_seconds": 5.0,
    "weight_decay": 0.0,
    "freeze_feature_encoder": True,
    "eval_every": None,
    "threads": 1,
    "max_grad_norm": 1.0,
    "lr_schedule": "linear",
    "warmup_ratio": 0.0,
    "eval_batch_size": 32,
    "checkpoint_every": None,
    "probe_clips": 0,
    "footprint_top": 0.05,
    "patience": None,
}

#: Hyper-parameters that change how a cell runs or what it stores beside its result, not the result: they are
#: left out of a cell's identity and config hash, so changing them (or upgrading to a version that adds one)
#: retrains nothing.
RESULT_NEUTRAL = ("checkpoint_every", "footprint_top")

#: Hyper-parameters added after results existed, whose default leaves training as it was: left out of a
#: cell's identity at that default, so upgrading retrains nothing; set, they are part of it.
ABSENT_AT_DEFAULT = {"patience": None}


def result_hparams(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The hyper-parameters a cell's result depends on (all but :data:`RESULT_NEUTRAL`, and keys of
    :data:`ABSENT_AT_DEFAULT` at their default)."""
    return {k: v for k, v in hp.items()
            if k not in RESULT_NEUTRAL and not (k in ABSENT_AT_DEFAULT and v == ABSENT_AT_DEFAULT[k])}


def check_hparams(hparams: Mapping[str, Any] | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults filled in; a misspelt or out-of-range key is a one-line ConfigError, not a silent default.

    ``extra``: the keys (with defaults) a task or architecture adds to :data:`HPARAM_DEFAULTS`."""
    hp = dict(hparams or {})
    defaults = {**HPARAM_DEFAULTS, **(extra or {})}
    unknown = sorted(set(hp) - set(defaults))
    if unknown:
        raise ConfigError(f"hparams: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(defaults))})")
    hp = {**defaults, **hp}
    positive = ("epochs", "lr", "batch_size", "max_seconds", "threads", "eval_batch_size")
    for key in positive:
        if not isinstance(hp[key], (int, float)) or isinstance(hp[key], bool) or hp[key] <= 0:
            raise ConfigError(f"hparams.{key}: must be a positive number, got {hp[key]!r}")
    for key in ("epochs", "batch_size", "threads", "eval_batch_size"):
        if int(hp[key]) != hp[key]:
            raise ConfigError(f"hparams.{key}: must be an integer, got {hp[key]!r}")
        hp[key] = int(hp[key])
    if hp["eval_every"] is not None and (not isinstance(hp["eval_every"], int) or hp["eval_every"] <= 0):
        raise ConfigError(f"hparams.eval_every: must be a positive integer or null, got {hp['eval_every']!r}")
    for key in ("checkpoint_every", "patience"):
        v = hp[key]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise ConfigError(f"hparams.{key}: must be a positive integer or null, got {v!r}")
    if hp["lr_schedule"] not in ("linear", "constant"):
        raise ConfigError(f"hparams.lr_schedule: must be 'linear' or 'constant', got {hp['lr_schedule']!r}")
    if not isinstance(hp["probe_clips"], int) or isinstance(hp["probe_clips"], bool) or hp["probe_clips"] < 0:
        raise ConfigError(f"hparams.probe_clips: must be a whole number >= 0, got {hp['probe_clips']!r}")
    ft = hp["footprint_top"]
    if not isinstance(ft, (int, float)) or isinstance(ft, bool) or not 0 <= ft <= 1:
        raise ConfigError(f"hparams.footprint_top: must be a fraction in [0, 1] (0: no footprint), got {ft!r}")
    if not 0 <= hp["warmup_ratio"] < 1:
        raise ConfigError(f"hparams.warmup_ratio: must be in [0, 1), got {hp['warmup_ratio']!r}")
    return hp


def hparam_extras(task: str, arch: str) -> dict[str, Any]:
    """The hyper-parameters (with defaults) a task and an architecture add to :data:`HPARAM_DEFAULTS`."""
    return {**get_task(task).hparams, **get_architecture(arch).hparams}


def _json_type(default: Any) -> dict[str, Any]:
    """The JSON-schema type of a key, from its default (None: any; the checks above say more)."""
    if isinstance(default, bool):
        return {"type": "boolean"}
    if isinstance(default, int):
        return {"type": "integer"}
    if isinstance(default, float):
        return {"type": "number"}
    if isinstance(default, str):
        return {"type": "string"}
    return {}


def schema_fragment() -> dict[str, Any]:
    """The ``hparams`` block of the config schema, assembled from the defaults and every registered task's
    and architecture's keys (which keys a given task and architecture accept is checked by
    :func:`check_hparams`, with a one-line error listing them)."""
    keys: dict[str, Any] = dict(HPARAM_DEFAULTS)
    for task in TASKS.values():
        keys.update(task.hparams)
    for arch in ARCHITECTURES.values():
        keys.update(arch.hparams)
    return {"type": "object", "description": "training hyper-parameters: the shared defaults plus the task's and "
            "architecture's own keys", "properties": {k: {**_json_type(v), "description": f"default {v!r}"} for k, v in sorted(keys.items())}}
