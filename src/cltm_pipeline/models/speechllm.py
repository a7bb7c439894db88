"""SpeechLLM: a frozen large pre-trained speech encoder gives utterance embeddings (time-pooled last hidden
states); a small MLP on ``[|e1 - e2|, e1 * e2]`` is trained per cell with BCE on same/different pairs.

The encoder never trains, so its embeddings are a function of the clip alone: the workflow computes them
once per utterance into a cache (:mod:`cltm_pipeline.embeddings`, rule ``embed``) that every cell and seed
reuses; only the MLP trains per cell.

Sources: ``fbank`` (a parameter-free log-mel statistics front end: the offline demo's stand-in, see
:data:`FBANK_SIZES`), ``tiny`` (a random tiny HuBERT built offline, :data:`cltm_pipeline.models.hubert.TINY_CONFIG`:
tests and the cache benchmark, where only its cost matters), a local directory in ``save_pretrained`` layout, or a Hugging Face id. A HuBERT / wav2vec 2.0 / WavLM
checkpoint loads as it is. A multimodal checkpoint (the study's ``skit-ai/speechllm-2B``, custom code)
is loaded with ``trust_remote_code`` and its audio encoder is taken from the first of the attributes
:data:`ENCODER_ATTRIBUTES` it has. That path could not be checked offline here: on the cluster, check
``cltm prepare-model --arch speechllm --source skit-ai/speechllm-2B`` once, or point the source at the
encoder's own checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from . import Architecture, ModelError, register
from .hubert import MHubert, _missing, _offline, _quiet_transformers
from .speaker import SVModel

__all__ = ["ENCODER_ATTRIBUTES", "FBANK_SIZES", "FORWARDS", "FbankStats", "PairMLP", "SpeechLLM"]

ENCODER_ATTRIBUTES = ("audio_encoder", "speech_encoder", "encoder")

#: Source ``fbank``: a parameter-free frozen front end (log-mel filterbank, mean and standard deviation over
#: valid frames) for the offline demo. A randomly initialised network is no stand-in for a pre-trained
#: encoder here: on the demo's noisy eSpeak speech, pair MLPs on a random tiny HuBERT's or Whisper
#: encoder's pooled states stayed at 1 - EER ~ 0.5 (chance) whatever the pooling, so the matrix would be
#: all noise; log-mel statistics carry the speaker cues a pre-trained encoder would (1 - EER 0.6-0.85).
FBANK_SIZES: dict[str, dict[str, Any]] = {"fbank": {"seed": 0, "n_mels": 40}}


class FbankStats(nn.Module):
    """The ``fbank`` frozen front end: log-mel mean and standard deviation over the valid frames."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        from speechbrain.lobes.features import Fbank

        self.fbank = Fbank(n_mels=config["n_mels"])
        self.dim = 2 * config["n_mels"]

    def embed(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats = self.fbank(waves)  # [B, T, M]
        frames = (lengths.to(feats.dtype) / waves.shape[1] * feats.shape[1]).round().long().clamp(min=1)
        mask = (torch.arange(feats.shape[1], device=waves.device)[None, :] < frames[:, None]).to(feats.dtype)[..., None]
        mean = (feats * mask).sum(1) / mask.sum(1)
        std = (((feats - mean[:, None]) ** 2 * mask).sum(1) / mask.sum(1)).clamp(min=1e-8).sqrt()
        return torch.cat([mean, std], -1)

#: Utterances passed through a frozen encoder in this process (for the cache benchmark and metrics.json).
FORWARDS = {"utterances": 0}


class PairMLP(SVModel):
    """MLP on ``[|e1 - e2|, e1 * e2]`` of standardised embeddings -> logit of "same speaker"."""

    inputs = "embeddings"
    objective = "pairs"

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def fit(self, train: torch.Tensor) -> None:
        """Standardise embeddings with the cell's training statistics (the frozen encoder's scale is arbitrary)."""
        self.mean.copy_(train.mean(0))
        self.std.copy_(train.std(0, unbiased=False).clamp(min=1e-6))

    def embed(self, x: torch.Tensor, n: torch.Tensor | None) -> torch.Tensor:
        return F.normalize((x - self.mean) / self.std, dim=-1)

    def score(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([(e1 - e2).abs(), e1 * e2], -1)).squeeze(-1)

    def pair_loss(self, e1: torch.Tensor, e2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.score(e1, e2), same)


def _prepare_remote(source: str, out_dir: Path) -> dict[str, Any]:
    """A hub id or local directory: an encoder checkpoint as it is, or the audio encoder of a multimodal one."""
    from .hubert import _prepare_pretrained

    local = Path(source).expanduser()
    config = local / "config.json"
    if local.is_dir() and config.is_file():
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    else:
        model_type = None
    if model_type == "hubert":
        return _prepare_pretrained(source, out_dir)
    _quiet_transformers()
    from transformers import AutoFeatureExtractor, AutoModel, Wav2Vec2FeatureExtractor

    try:
        model = AutoModel.from_pretrained(source, trust_remote_code=True, local_files_only=_offline() or local.is_dir())
    except OSError as exc:
        raise _missing(source, f"weights not loadable: {str(exc).splitlines()[0][:160]}") from None
    encoder = model
    if not hasattr(model, "feature_extractor"):  # a multimodal model: find its audio encoder
        encoder = next((getattr(model, a) for a in ENCODER_ATTRIBUTES if hasattr(model, a)), None)
        if encoder is None or not hasattr(encoder, "save_pretrained"):
            raise ModelError(f"model {source!r}: no audio encoder found (looked for {', '.join(ENCODER_ATTRIBUTES)})")
    encoder.save_pretrained(out_dir)
    try:
        fe = AutoFeatureExtractor.from_pretrained(source, local_files_only=_offline() or local.is_dir())
    except (OSError, ValueError):
        fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    fe.save_pretrained(out_dir)
    return {"revision": getattr(encoder.config, "_commit_hash", None),
            "parameters": sum(p.numel() for p in encoder.parameters())}


@register("speechllm")
class SpeechLLM(Architecture):
    """Frozen encoder embeddings (cached) + pair MLP; ``mlp_hidden`` is the MLP's width."""

    hparams = {"mlp_hidden": 64}
    embedding_cache = True
    _pretrained = staticmethod(_prepare_remote)  # any Hugging Face audio encoder, not only HuBERT

    @classmethod
    def prepare(cls, source: str, out_dir: Path, tiny: dict[str, Any] | None = None) -> Path:
        if source in FBANK_SIZES:
            from .speaker import prepare_scratch

            return prepare_scratch(cls.name, source, out_dir, FBANK_SIZES, tiny, FbankStats)
        return MHubert.prepare.__func__(cls, source, out_dir, tiny=tiny)  # its directory handling, our loader

    @classmethod
    def embedder(cls, model_dir: Path, device: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The frozen encoder as ``f(waves, lengths) -> [B, H]`` (mean of the last hidden state over valid
        frames), in eval mode without gradients; counts utterances in :data:`FORWARDS`."""
        model_dir = Path(model_dir)
        from .speaker import CONFIG_NAME, load_scratch

        if (model_dir / CONFIG_NAME).is_file():
            pooled = load_scratch(model_dir, FbankStats)[0].to(device).eval()
        elif not (model_dir / "config.json").is_file():
            raise ModelError(f"{model_dir}: not a prepared model directory (run `cltm prepare-model` first)")
        else:
            _quiet_transformers()
            from transformers import AutoModel

            from .hubert import HubertClassifier

            encoder = AutoModel.from_pretrained(model_dir, local_files_only=True)
            pre = model_dir / "preprocessor_config.json"
            do_normalize = json.loads(pre.read_text())["do_normalize"] if pre.is_file() else True
            pooled = HubertClassifier(encoder, 1, do_normalize).to(device).eval()
        for p in pooled.parameters():
            p.requires_grad_(False)

        def embed(waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            FORWARDS["utterances"] += int(waves.shape[0])
            with torch.no_grad():
                return pooled.embed(waves, lengths)

        return embed

    @classmethod
    def embedding_dim(cls, model_dir: Path) -> int:
        from .speaker import CONFIG_NAME

        fbank = Path(model_dir) / CONFIG_NAME
        if fbank.is_file():
            return 2 * int(json.loads(fbank.read_text(encoding="utf-8"))["n_mels"])
        return int(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["hidden_size"])

    @classmethod
    def load_sv(cls, model_dir: Path, num_speakers: int, hparams: dict[str, Any]) -> PairMLP:
        return PairMLP(cls.embedding_dim(model_dir), hparams["mlp_hidden"])
