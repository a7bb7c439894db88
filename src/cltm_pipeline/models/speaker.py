"""What the speaker-verification architectures share: the model interface the SV runner trains, the
speaker-ID and pair objectives, the log-mel front end, and the model directory of from-scratch models.

An SV model (:class:`SVModel`) turns a batch of inputs into utterance embeddings (``embed``) and scores
pairs of embeddings (``score``, higher = same speaker). It trains with one of two objectives:

- ``"speaker"``: speaker identification over the cell's training speakers (``speaker_loss(x, n, y)``):
  mHuBERT (cross-entropy) and ECAPA-TDNN (AAM-softmax);
- ``"pairs"``: same/different pairs drawn from the cell's training rows (``pair_loss(e1, e2, same)``):
  the Siamese network (contrastive) and the SpeechLLM pair MLP (BCE).

Inputs are 16 kHz waves with their valid lengths (``inputs == "audio"``), or the cached utterance
embeddings of a frozen encoder (``inputs == "embeddings"``, the lengths are then None).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from cltm_pipeline.io import atomic_dir, sha256_file, write_json
from cltm_pipeline.errors import ModelError
from cltm_pipeline.models.registry import CONFIG_NAME

__all__ = ["SVModel", "SpeakerIdModel", "AAMHead", "LogMel", "contrastive_loss", "prepare_scratch", "load_scratch"]


class SVModel(nn.Module):
    """Base of speaker-verification models: cosine scoring of L2-normalised embeddings by default."""

    inputs = "audio"
    objective = "speaker"

    def embed(self, x: torch.Tensor, n: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def score(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each pair (rows of ``e1`` and ``e2``)."""
        return (F.normalize(e1, dim=-1) * F.normalize(e2, dim=-1)).sum(-1)


class SpeakerIdModel(SVModel):
    """A backbone with ``embed(x, n)`` trained as speaker identification; embeddings L2-normalised.

    ``head`` maps embeddings to logits (a linear layer: cross-entropy) or is an :class:`AAMHead`
    (additive angular margin softmax)."""

    objective = "speaker"

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def embed(self, x: torch.Tensor, n: torch.Tensor | None) -> torch.Tensor:
        return F.normalize(self.backbone.embed(x, n), dim=-1)

    def speaker_loss(self, x: torch.Tensor, n: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        e = self.backbone.embed(x, n)
        if isinstance(self.head, AAMHead):
            return self.head.loss(e, y)
        return F.cross_entropy(self.head(e), y)


class AAMHead(nn.Module):
    """Additive angular margin softmax (ArcFace) over speakers, through speechbrain's implementation."""

    def __init__(self, dim: int, num_speakers: int, scale: float, margin: float):
        super().__init__()
        # speechbrain (~1 s): only when this model is built
        from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

        self.weight = nn.Parameter(torch.empty(num_speakers, dim))
        nn.init.xavier_uniform_(self.weight)
        self.criterion = LogSoftmaxWrapper(AdditiveAngularMargin(margin=margin, scale=scale))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(e, dim=-1), F.normalize(self.weight, dim=-1))  # cosines [B, S]

    def loss(self, e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(self(e).unsqueeze(1), y.unsqueeze(1))


def contrastive_loss(e1: torch.Tensor, e2: torch.Tensor, same: torch.Tensor, margin: float) -> torch.Tensor:
    """Hadsell et al.'s contrastive loss on the distance of L2-normalised embeddings: d^2 for same-speaker
    pairs, max(0, margin - d)^2 for different ones."""
    d = (F.normalize(e1, dim=-1) - F.normalize(e2, dim=-1)).norm(dim=-1)
    return (same * d.pow(2) + (1 - same) * F.relu(margin - d).pow(2)).mean()


class LogMel(nn.Module):
    """speechbrain's Fbank (log mel filterbank, 25 ms / 10 ms) with per-utterance mean normalisation over
    the valid frames; returns features ``[B, T, n_mels]`` and relative lengths ``[B]`` (speechbrain's)."""

    def __init__(self, n_mels: int):
        super().__init__()
        # speechbrain (~1 s): only when this model is built
        from speechbrain.lobes.features import Fbank

        self.fbank = Fbank(n_mels=n_mels)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        batch, total = waves.shape
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.long, device=waves.device)
        with torch.no_grad():
            feats = self.fbank(waves)  # [B, T, M]
        rel = (lengths.to(feats.dtype) / total).clamp(max=1.0)
        frames = (rel * feats.shape[1]).round().long().clamp(min=1)
        mask = (torch.arange(feats.shape[1], device=waves.device)[None, :] < frames[:, None]).to(feats.dtype)
        mean = (feats * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None]
        return (feats - mean) * mask[..., None], rel


# ----------------------------------------------------------------------------- from-scratch models
#
# ECAPA-TDNN and the Siamese CNN are trained from scratch: their "prepared model" is a config (a named
# size, overridable key by key) and seeded initial weights, so every cell of a grid starts from the same
# network and the directory records what was built, like a pretrained encoder's.

WEIGHTS_NAME = "init.pt"


def prepare_scratch(arch: str, source: str, out_dir: Path, sizes: dict[str, dict[str, Any]], tiny: dict[str, Any] | None,
                    build: Callable[[dict[str, Any]], nn.Module]) -> Path:
    """Write ``out_dir``: the size ``source`` (a key of ``sizes``) with ``tiny`` overrides, its seeded
    initial weights and ``cltm_model.json`` provenance; swapped in whole (a killed job leaves no half)."""
    if source not in sizes:
        raise ModelError(f"model {source!r}: {arch} is trained from scratch; source must be one of {', '.join(sizes)}")
    config = {**sizes[source], **(tiny or {})}
    unknown = sorted(set(config) - set(sizes[source]))
    if unknown:
        raise ModelError(f"model {source!r}: unknown {arch} config key(s) {', '.join(unknown)} (known: {', '.join(sizes[source])})")
    with atomic_dir(Path(out_dir)) as tmp:
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(int(config["seed"]))
            model = build(config)
        finally:
            torch.random.set_rng_state(state)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, sort_keys=True, indent=1) + "\n", encoding="utf-8")
        torch.save(model.state_dict(), tmp / WEIGHTS_NAME)
        write_json(tmp / "cltm_model.json", {
            "arch": arch, "source": source, "config": config, "parameters": sum(p.numel() for p in model.parameters()),
            "weights": {WEIGHTS_NAME: sha256_file(tmp / WEIGHTS_NAME)},
        })
    return out_dir


def load_scratch(model_dir: Path, build: Callable[[dict[str, Any]], nn.Module]) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a directory written by :func:`prepare_scratch`, with its initial weights, and its config."""
    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_NAME).is_file():
        raise ModelError(f"{model_dir}: not a prepared model directory (run `cltm prepare-model` first)")
    config = json.loads((model_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    model = build(config)
    model.load_state_dict(torch.load(model_dir / WEIGHTS_NAME, map_location="cpu", weights_only=True))
    return model, config
