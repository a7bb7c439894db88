"""A single cell's fine-tuning footprint: which encoder parameters training moved most.

The encoder is the trainable parameters under the model's encoder module (``encoder.`` of the HuBERT
classifier and CTC models, ``backbone.`` of the speaker-ID model, ``body.`` of the Siamese network); the
task head is not part of it, nor is a head inside the backbone (``backbone.head.``: the HuBERT speaker-ID
model's classifier over the cell's training speakers, whose size differs from cell to cell). A model with no trainable parameter there (the SpeechLLM's pair MLP on
frozen embeddings) has no footprint: the cell's metrics.json says so, nothing is faked. The mask and its
index are computed by :mod:`cltm_pipeline.analysis.footprint` from the initial and the selected (best dev)
state and written beside metrics.json (``layout.footprint_files``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cltm_pipeline.analysis.footprint import footprint_index, pack_masks, top_mask
from cltm_pipeline.io import write_bytes, write_json
from cltm_pipeline.layout import footprint_files

__all__ = ["ENCODER_PREFIXES", "encoder_parameters", "snapshot", "write_footprint"]

#: Parameter-name prefixes of the module that holds a model's encoder.
ENCODER_PREFIXES = ("encoder.", "backbone.", "body.")


def encoder_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The model's trainable encoder parameters, in model order."""
    return [(n, p) for n, p in model.named_parameters()
            if p.requires_grad and n.startswith(ENCODER_PREFIXES) and "head" not in n.split(".")]


def snapshot(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The trainable encoder parameters before training, as float32 CPU copies (empty: no encoder)."""
    return {n: p.detach().to("cpu", torch.float32).numpy().copy() for n, p in encoder_parameters(model)}


def write_footprint(model: torch.nn.Module, initial: dict[str, np.ndarray], top: float, metrics_path: Path,
                    where: str) -> dict[str, Any]:
    """Write the top-``top`` |update| mask and its index beside ``metrics_path``; metrics.json's ``footprint``
    (what was stored, or why nothing was)."""
    params = encoder_parameters(model)
    if not params or not initial:
        trainable = sorted({n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad})
        reason = (f"no fine-tuned encoder (the model trains only {', '.join(trainable) or 'nothing'}, "
                  "on frozen inputs): no footprint")
        print(f"{where}: {reason}", file=sys.stderr, flush=True)
        return {"skipped": reason}
    names = [n for n, _ in params]
    if set(names) != set(initial):
        raise RuntimeError(f"{where}: encoder parameters changed during training ({len(names)} vs {len(initial)})")
    init = [initial[n] for n in names]
    deltas = [p.detach().to("cpu", torch.float32).numpy() - initial[n] for n, p in params]
    masks = top_mask(deltas, top)
    bits = pack_masks(masks)
    index = footprint_index(names, init, deltas, masks, top, bits)
    index_path, bits_path = footprint_files(metrics_path)
    write_bytes(bits_path, bits)
    write_json(index_path, index)
    return {"top": top, "n_params": index["n_params"], "selected": index["selected"], "bytes": len(bits),
            "sha256": index["sha256"], "tensors": len(names)}
