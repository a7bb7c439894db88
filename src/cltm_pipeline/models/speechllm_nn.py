"""SpeechLLM's torch side (:mod:`cltm_pipeline.models.speechllm` registers the architecture and holds its
constants): the fbank front end, the pair MLP, the connector, the frozen embedder, and preparing a model
directory from a checkpoint. Imported only where a model is built or prepared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from cltm_pipeline.io import write_json
from cltm_pipeline.errors import ModelError
from cltm_pipeline.models.checkpoint import read_tensors, tensor_names
from cltm_pipeline.models.hubert import missing_model, offline, read_preprocessor, source_files
from cltm_pipeline.models.hubert_nn import HubertClassifier, feature_extractor, last_hidden, prepare_pretrained, quiet_transformers
from cltm_pipeline.models.registry import CONFIG_NAME
from cltm_pipeline.models.speaker import SVModel, load_scratch
from cltm_pipeline.models.speechllm import (CONNECTOR_CONFIG, CONNECTOR_PREFIXES, CONNECTOR_STRIDE, CONNECTOR_WEIGHTS,
                                            ENCODER_CONFIGS, ENCODER_PREFIX, FORWARDS)

__all__ = ["FbankStats", "PairMLP", "Connector", "ConnectorPooled", "load_connector", "prepare_remote", "frozen_embedder"]


class FbankStats(nn.Module):
    """The ``fbank`` frozen front end: log-mel mean and standard deviation over the valid frames."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        # speechbrain (~1 s): only when this model is built
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



class Connector(nn.Module):
    """skit-ai/SpeechLLM's CNN connector: ReLU, Conv1d(k 5), ReLU, Conv1d(k 5, stride 2), ReLU, Conv1d(k 5)
    over time, projecting the encoder's states ``[B, F, H]`` to the LLM's width ``[B, F', D]``."""

    def __init__(self, channels: list[int], kernel: int = 5, stride: int = CONNECTOR_STRIDE):
        super().__init__()
        c0, c1, c2, c3 = channels
        self.kernel, self.stride = kernel, stride
        self.layer = nn.Sequential(nn.ReLU(), nn.Conv1d(c0, c1, kernel), nn.ReLU(), nn.Conv1d(c1, c2, kernel, stride=stride),
                                   nn.ReLU(), nn.Conv1d(c2, c3, kernel))

    def min_frames(self) -> int:
        """The fewest input frames that give one output frame."""
        k, s = self.kernel, self.stride
        return (k - 1) + k + s * (k - 1)

    def output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """Output frames of inputs of ``frames`` valid frames (no padding in the convolutions)."""
        k, s = self.kernel, self.stride
        return torch.div(frames - (k - 1) - k, s, rounding_mode="floor") + 1 - (k - 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.layer(hidden.transpose(1, 2)).transpose(1, 2)


class ConnectorPooled(nn.Module):
    """The study's SpeechLLM embedding, audio part: the encoder's last hidden state through the connector,
    averaged over the valid output frames and L2-normalised (README: deviations)."""

    def __init__(self, encoder: nn.Module, connector: Connector, do_normalize: bool):
        super().__init__()
        self.encoder, self.connector, self.do_normalize = encoder, connector, do_normalize
        self.pass_mask = encoder.config.feat_extract_norm == "layer"

    def embed(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden, frames = last_hidden(self.encoder, waves, lengths, self.do_normalize, self.pass_mask)
        frames = frames.clamp(max=hidden.shape[1])
        need = self.connector.min_frames()
        if hidden.shape[1] < need:  # a batch of clips under ~0.35 s: zero frames after the end, as padding is
            hidden = F.pad(hidden, (0, 0, 0, need - hidden.shape[1]))
        out = self.connector(hidden)
        n = self.connector.output_lengths(frames).clamp(min=1, max=out.shape[1])
        fmask = (torch.arange(out.shape[1], device=waves.device)[None, :] < n[:, None]).to(out.dtype)
        return F.normalize((out * fmask[..., None]).sum(1) / fmask.sum(1, keepdim=True), dim=-1)


def load_connector(model_dir: Path) -> Connector:
    """The connector a prepared model directory holds (:data:`CONNECTOR_CONFIG`, :data:`CONNECTOR_WEIGHTS`)."""
    # only when a connector is read or written
    from safetensors.torch import load_file

    spec = json.loads((Path(model_dir) / CONNECTOR_CONFIG).read_text(encoding="utf-8"))
    connector = Connector(spec["channels"], spec["kernel"], spec["stride"])
    connector.load_state_dict(load_file(str(Path(model_dir) / CONNECTOR_WEIGHTS)), strict=True)
    return connector


def _rename_weight_norm(name: str) -> str:
    """Checkpoints saved before torch's weight-norm parametrisation name the positional convolution's
    weight ``weight_g`` / ``weight_v``; a current HubertModel names them ``parametrizations.weight.original0/1``."""
    return name.replace(".weight_g", ".parametrizations.weight.original0").replace(".weight_v", ".parametrizations.weight.original1")


def _prepare_multimodal(source: str, config: dict[str, Any], fetch: Callable[[str], Path], names: dict[str, str],
                        out_dir: Path) -> dict[str, Any]:
    """The audio encoder (a HubertModel) and CNN connector of a multimodal checkpoint (skit-ai/speechllm-2B),
    read tensor by tensor from its safetensors without the language model and without its remote code."""
    encoder_name = config.get("audio_encoder_name")
    spec = ENCODER_CONFIGS.get(str(encoder_name))
    if spec is None:
        raise ModelError(f"model {source!r}: config.json audio_encoder_name is {encoder_name!r}; built-in encoder "
                         f"configs: {', '.join(ENCODER_CONFIGS)} (or point the source at the encoder's own checkpoint)")
    connector_prefix = next((p for p in CONNECTOR_PREFIXES if any(n.startswith(p) for n in names)), None)
    if connector_prefix is None:
        raise ModelError(f"model {source!r}: no connector tensors (looked for {', '.join(p + '*' for p in CONNECTOR_PREFIXES)})")
    # without a preprocessor_config.json: normalised, masked input (HuBERT large/x-large, SpeechLLM's processor)
    fe = feature_extractor(fetch, attention_mask=True)
    wanted = {n: s for n, s in names.items() if n.startswith((ENCODER_PREFIX, connector_prefix))}
    got = read_tensors(fetch, wanted)
    encoder_sd = {_rename_weight_norm(k[len(ENCODER_PREFIX):]): v for k, v in got.tensors.items() if k.startswith(ENCODER_PREFIX)}
    connector_sd = {k[len(connector_prefix):]: v for k, v in got.tensors.items() if k.startswith(connector_prefix)}

    quiet_transformers()
    # transformers (~2 s to import): only when a HuBERT is built or prepared
    from transformers import HubertConfig, HubertModel

    with torch.device("meta"):  # no random initialisation of ~1 B parameters that are overwritten at once
        encoder = HubertModel(HubertConfig(**spec))
    _load_exact(encoder, encoder_sd, f"model {source!r}: audio encoder ({ENCODER_PREFIX}*) vs {encoder_name}")
    try:
        channels = [int(connector_sd[f"{i}.weight"].shape[1]) for i in (1, 3, 5)] + [int(connector_sd["5.weight"].shape[0])]
        kernel = int(connector_sd["1.weight"].shape[2])
    except KeyError as exc:
        raise ModelError(f"model {source!r}: connector tensor {connector_prefix}{exc.args[0]} missing") from None
    with torch.device("meta"):
        connector = Connector(channels, kernel)
    _load_exact(connector, {f"layer.{k}": v for k, v in connector_sd.items()}, f"model {source!r}: connector ({connector_prefix}*)")

    # only when a connector is read or written
    from safetensors.torch import save_file

    encoder.save_pretrained(out_dir)
    save_file({k: v.contiguous() for k, v in connector.state_dict().items()}, str(out_dir / CONNECTOR_WEIGHTS),
              metadata={"format": "pt"})
    write_json(out_dir / CONNECTOR_CONFIG, {"channels": channels, "kernel": kernel, "stride": CONNECTOR_STRIDE,
                                            "source_prefix": connector_prefix})
    fe.save_pretrained(out_dir)
    snapshot = Path(fetch("config.json")).parent
    return {
        "revision": snapshot.name if snapshot.parent.name == "snapshots" else None,
        "audio_encoder": encoder_name,
        "parameters": sum(p.numel() for p in encoder.parameters()) + sum(p.numel() for p in connector.parameters()),
        "read": {"bytes": got.bytes_read, "checkpoint_bytes": got.checkpoint_bytes, "shards": list(got.shards_opened),
                 "tensors": len(got.tensors)},
    }


def _load_exact(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into a meta-device ``module`` (taking the tensors, no copy); names or shapes that
    differ are a one-line ModelError."""
    want = module.state_dict()
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    bad = [k for k in set(want) & set(state) if tuple(want[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or bad:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(bad)} of another shape (e.g. {sorted(bad)[0]}: {tuple(state[sorted(bad)[0]].shape)} vs "
                 f"{tuple(want[sorted(bad)[0]].shape)})" if bad else ""]
        raise ModelError(f"{what}: tensors do not match ({'; '.join(p for p in parts if p)})")
    module.load_state_dict({k: v.to(want[k].dtype) for k, v in state.items()}, strict=True, assign=True)


def prepare_remote(source: str, out_dir: Path) -> dict[str, Any]:
    """A hub id or local directory: a HuBERT checkpoint as it is, the audio encoder and connector of a
    multimodal one (:func:`_prepare_multimodal`), or another transformers audio encoder (wav2vec 2.0, WavLM)."""
    fetch = source_files(source)
    config_path = fetch("config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config_path}: not readable as JSON ({str(exc).splitlines()[0]})") from None
    if config.get("model_type") == "hubert":
        return prepare_pretrained(source, out_dir)
    try:
        names = tensor_names(fetch)
    except ModelError:
        names = {}  # no safetensors (a pytorch_model.bin checkpoint): transformers reads it below
    if any(n.startswith(ENCODER_PREFIX) for n in names):
        return _prepare_multimodal(source, config, fetch, names, out_dir)
    quiet_transformers()
    # transformers (~2 s to import): only when a HuBERT is built or prepared
    from transformers import AutoModel

    local = Path(source).expanduser().is_dir()
    try:
        encoder = AutoModel.from_pretrained(source, local_files_only=offline() or local)
    except (OSError, ValueError) as exc:
        raise missing_model(source, f"weights not loadable: {str(exc).splitlines()[0][:160]}") from None
    if not hasattr(encoder, "feature_extractor"):
        raise ModelError(f"model {source!r}: {type(encoder).__name__} is not an audio encoder, and its safetensors "
                         f"hold no {ENCODER_PREFIX}* tensors")
    fe = feature_extractor(fetch, attention_mask=False)
    encoder.save_pretrained(out_dir)
    fe.save_pretrained(out_dir)
    return {"revision": getattr(encoder.config, "_commit_hash", None),
            "parameters": sum(p.numel() for p in encoder.parameters())}


def frozen_embedder(model_dir: Path, device: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The frozen encoder as ``f(waves, lengths) -> [B, H]`` (mean of the last hidden state over valid
    frames; with a connector, :class:`ConnectorPooled`), in eval mode without gradients; counts
    utterances in :data:`FORWARDS`."""
    model_dir = Path(model_dir)
    if (model_dir / CONFIG_NAME).is_file():
        pooled = load_scratch(model_dir, FbankStats)[0].to(device).eval()
    elif not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: not a prepared model directory (run `cltm prepare-model` first)")
    else:
        quiet_transformers()
        # transformers (~2 s to import): only when a HuBERT is built or prepared
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(model_dir, local_files_only=True)
        do_normalize = read_preprocessor(model_dir)
        if (model_dir / CONNECTOR_CONFIG).is_file():  # a multimodal checkpoint's encoder and connector
            pooled = ConnectorPooled(encoder, load_connector(model_dir), do_normalize).to(device).eval()
        else:
            pooled = HubertClassifier(encoder, 1, do_normalize).to(device).eval()
    for p in pooled.parameters():
        p.requires_grad_(False)

    def embed(waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        FORWARDS["utterances"] += int(waves.shape[0])
        with torch.no_grad():
            return pooled.embed(waves, lengths)

    return embed
