"""The architecture registry, in the spirit of s3prl's upstreams.

An architecture is a class registered under its config name with :func:`register`. It provides

- ``prepare(source, out_dir, tiny=None) -> Path``: write a self-contained model directory (Hugging Face
  ``save_pretrained`` layout plus ``cltm_model.json`` provenance) from a hub id, a local directory or the
  literal ``"tiny"`` (random initialisation from a small config, offline, for the demo and tests);
- ``load(model_dir, num_labels, freeze_feature_encoder=...) -> torch.nn.Module``: the prepared encoder
  plus a task head. A classifier's ``forward(waves, lengths)`` takes a float32 batch ``[B, T]`` of
  16 kHz audio (zero-padded at the end) and the valid sample counts ``[B]``, and returns logits ``[B, C]``.

The same ``load`` serves the laptop demo and the cluster; only the prepared directory differs.
Adding an architecture is one module in this package that registers itself, an import in
``cltm_pipeline/models/__init__.py``, and a config entry naming it. The registering module imports no torch
(the Snakefile imports the registry to validate a config); its ``nn.Module``s live in a sibling
``<name>_nn`` module that ``prepare``, ``load*`` and ``embedder`` import inside their bodies.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, TypeVar

from cltm_pipeline.errors import ModelError

__all__ = ["Architecture", "ARCHITECTURES", "register", "get_architecture", "model_provenance", "PROVENANCE", "CONFIG_NAME"]

#: The provenance file ``prepare`` writes into every model directory.
PROVENANCE = "cltm_model.json"
#: The config file of a from-scratch model's directory (:func:`cltm_pipeline.models.speaker.prepare_scratch`).
CONFIG_NAME = "sv_model.json"



class Architecture:
    """Base class of registered architectures (classmethods only; nothing is instantiated)."""

    name: str = ""
    #: hyper-parameters this architecture adds to cltm_pipeline.training.hparams.HPARAM_DEFAULTS, with their defaults
    hparams: dict[str, Any] = {}
    #: a frozen encoder whose per-utterance embeddings the workflow computes once and caches
    #: (``cltm embed``, rule ``embed``); such an architecture implements ``embedder``
    embedding_cache: bool = False
    #: the module holding the architecture's torch code (its ``nn.Module``s and preparation), imported by
    #: :meth:`nn` when a model is prepared or built, never when a config is validated: the implementation
    #: imports its registration, not the other way round
    impl: str = ""

    @classmethod
    def nn(cls) -> ModuleType:
        """The architecture's torch module (:attr:`impl`), imported on first use."""
        return importlib.import_module(cls.impl)

    @classmethod
    def prepare(cls, source: str, out_dir: Path, tiny: dict[str, Any] | None = None) -> Path:
        raise NotImplementedError

    @classmethod
    def load(cls, model_dir: Path, num_labels: int, *, freeze_feature_encoder: bool = True) -> Any:
        raise NotImplementedError

    @classmethod
    def load_sv(cls, model_dir: Path, num_speakers: int, hparams: dict[str, Any]) -> Any:
        """A speaker-verification model (see :mod:`cltm_pipeline.tasks.sv`); uses the torch RNG."""
        raise ModelError(f"architecture {cls.name!r} has no speaker-verification model")


ARCHITECTURES: dict[str, type[Architecture]] = {}

A = TypeVar("A", bound=type[Architecture])


def register(name: str) -> Callable[[A], A]:
    """Class decorator: ``@register("mhubert")`` adds the class to :data:`ARCHITECTURES` under ``name``."""

    def deco(cls: A) -> A:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} registered twice")
        cls.name = name
        ARCHITECTURES[name] = cls
        return cls

    return deco


def get_architecture(name: str) -> type[Architecture]:
    """The registered architecture ``name``, or a one-line ModelError listing those that exist."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r} (registered: {', '.join(sorted(ARCHITECTURES)) or 'none'})") from None


def model_provenance(model_dir: Path) -> dict[str, Any]:
    """Source and weight hashes of the prepared model, as ``prepare`` recorded them."""
    path = Path(model_dir) / PROVENANCE
    if not path.is_file():
        return {"dir": str(model_dir)}
    info = json.loads(path.read_text(encoding="utf-8"))
    return {k: info[k] for k in ("arch", "source", "revision", "weights") if k in info}
