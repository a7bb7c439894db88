"""The torch side of the HuBERT-family encoders (:mod:`cltm_pipeline.models.hubert` registers them): the
classification and CTC models, loading a prepared directory, and preparing one (tiny or from a checkpoint).

Imported only where a model is built or prepared, so that validating a config (``snakemake -n``) loads
neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from cltm_pipeline.errors import ModelError
from cltm_pipeline.models.hubert import PREPROCESSOR, TINY_CONFIG, missing_model, offline, read_preprocessor, source_files

__all__ = ["HubertClassifier", "HubertCTC", "load_encoder", "load_ctc", "prepare_tiny", "prepare_pretrained",
           "feature_extractor", "quiet_transformers", "last_hidden", "standardise_waves"]


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def quiet_transformers() -> None:
    # transformers (~2 s to import): only when a HuBERT is built or prepared
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def prepare_tiny(out_dir: Path, tiny: dict[str, Any] | None) -> dict[str, Any]:
    """Write a seeded random HuBERT of :data:`TINY_CONFIG` (``tiny`` overriding keys) into ``out_dir``."""
    quiet_transformers()
    # transformers (~2 s to import): only when a HuBERT is built or prepared
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    spec = {**TINY_CONFIG, **(tiny or {})}
    seed = int(spec.pop("seed"))
    do_normalize = bool(spec.pop("do_normalize"))
    try:
        config = HubertConfig(**spec)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"tiny model config: {str(exc).splitlines()[0]}") from None
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = HubertModel(config)
    finally:
        torch.random.set_rng_state(gen_state)
    model.save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(do_normalize=do_normalize, return_attention_mask=False).save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    return {"tiny": {**spec, "seed": seed, "do_normalize": do_normalize}, "parameters": n_params}


def feature_extractor(fetch: Callable[[str], Path], attention_mask: bool = False) -> Any:
    """The source's feature extractor, its preprocessor_config.json checked (:func:`read_preprocessor`, the
    error naming the file) before any weights are read; without one, normalised input and
    ``attention_mask`` (HuBERT base's convention: no mask)."""
    # transformers (~2 s to import): only when a HuBERT is built or prepared
    from transformers import Wav2Vec2FeatureExtractor

    try:
        path = fetch(PREPROCESSOR)
    except ModelError:
        return Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=attention_mask)
    read_preprocessor(path.parent)
    return Wav2Vec2FeatureExtractor.from_pretrained(str(path.parent), local_files_only=True)


def prepare_pretrained(source: str, out_dir: Path) -> dict[str, Any]:
    local = Path(source).expanduser()
    is_dir = local.is_dir()
    if not is_dir and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise ModelError(f"model {source!r}: no such local directory")  # a hub id is "name" or "org/name"
    if is_dir and not (local / "config.json").is_file():
        raise ModelError(f"model {source!r}: the directory has no config.json (expected a save_pretrained layout)")
    if not is_dir and offline():
        # Fail before importing transformers (seconds) and before any hub retry.
        from huggingface_hub import try_to_load_from_cache

        try:
            hit = try_to_load_from_cache(source, "config.json")
        except Exception:  # invalid repo id and the like
            raise ModelError(f"model {source!r}: neither a local directory nor a valid Hugging Face id") from None
        if not isinstance(hit, str):
            raise missing_model(source, "not found in the Hugging Face cache")

    quiet_transformers()
    # transformers (~2 s to import): only when a HuBERT is built or prepared
    from transformers import HubertModel

    target = str(local) if is_dir else source
    fe = feature_extractor(source_files(source))  # a setting the pipeline cannot honour fails before the weights load
    try:
        model = HubertModel.from_pretrained(target, local_files_only=offline() or is_dir)
    except Exception as exc:  # OSError, a corrupt config (ValueError) or truncated weights (SafetensorError)
        if is_dir:  # the user's own directory: the hub has nothing to do with it
            raise ModelError(f"model {source!r}: cannot load the local directory: {_first_line(exc)}") from None
        raise missing_model(source, f"weights not loadable: {_first_line(exc)}") from None
    model.save_pretrained(out_dir)
    fe.save_pretrained(out_dir)
    return {
        "revision": getattr(model.config, "_commit_hash", None),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def load_encoder(model_dir: Path, freeze_feature_encoder: bool = True) -> tuple[nn.Module, bool]:
    """The prepared HuBERT encoder (CNN feature encoder frozen if asked) and whether its input is normalised."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: not a prepared model directory (run `cltm prepare-model` first)")
    quiet_transformers()
    # transformers (~2 s to import): only when a HuBERT is built or prepared
    from transformers import HubertModel

    try:
        encoder = HubertModel.from_pretrained(model_dir, local_files_only=True)
    except Exception as exc:  # truncated model.safetensors, corrupt config.json
        raise ModelError(f"{model_dir}: cannot load the prepared model ({_first_line(exc)}); delete the directory "
                         "and rerun to prepare it again") from None
    do_normalize = read_preprocessor(model_dir)
    if freeze_feature_encoder:
        encoder.feature_extractor._freeze_parameters()
    return encoder, do_normalize


class HubertClassifier(nn.Module):
    """Encoder + mean pooling over valid frames of the last hidden state + linear layer."""

    def __init__(self, encoder: nn.Module, num_labels: int, do_normalize: bool, pool_layers: int | None = None):
        super().__init__()
        self.encoder = encoder
        self.do_normalize = do_normalize
        # None: the last hidden state (gender); k: the mean of the last k hidden states (speaker verification)
        self.pool_layers = pool_layers
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)
        # Group-norm feature encoders (HuBERT base, mHuBERT-147) are trained without attention masks on
        # zero-padded input; layer-norm ones (large models) take the mask.
        self.pass_mask = encoder.config.feat_extract_norm == "layer"

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(waves, lengths))

    def embed(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Utterance embeddings ``[B, H]``: the last hidden state mean-pooled over valid frames."""
        batch, total = waves.shape
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.long, device=waves.device)
        valid = torch.arange(total, device=waves.device)[None, :] < lengths[:, None]
        if self.do_normalize:  # Wav2Vec2FeatureExtractor's zero-mean unit-variance over the valid samples
            n = lengths.clamp(min=1)[:, None].to(waves.dtype)
            mean = (waves * valid).sum(1, keepdim=True) / n
            var = (((waves - mean) * valid) ** 2).sum(1, keepdim=True) / n
            waves = (waves - mean) / torch.sqrt(var + 1e-7) * valid
        mask = valid.long() if self.pass_mask else None
        if self.pool_layers is None:
            hidden = self.encoder(waves, attention_mask=mask).last_hidden_state  # [B, F, H]
        else:  # hidden_states: the CNN projection then every transformer layer; at most all of them
            states = self.encoder(waves, attention_mask=mask, output_hidden_states=True).hidden_states
            hidden = torch.stack(states[-self.pool_layers :]).mean(0)
        frames = self.encoder._get_feat_extract_output_lengths(lengths).clamp(min=1, max=hidden.shape[1])
        fmask = (torch.arange(hidden.shape[1], device=waves.device)[None, :] < frames[:, None]).to(hidden.dtype)
        return (hidden * fmask[..., None]).sum(1) / fmask.sum(1, keepdim=True)


# ------------------------------------------------------------------------------------------ ASR


def last_hidden(encoder: nn.Module, waves: torch.Tensor, lengths: torch.Tensor, do_normalize: bool,
                pass_mask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A Hugging Face audio encoder's last hidden states ``[B, F, H]`` of zero-padded clips and their frame
    counts ``[B]`` (not clamped): standardised if the checkpoint's preprocessor asks, masked if its feature
    encoder is layer-normed."""
    if do_normalize:
        waves = standardise_waves(waves, lengths)
    mask = None
    if pass_mask:
        mask = (torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths[:, None]).long()
    hidden = encoder(waves, attention_mask=mask).last_hidden_state
    return hidden, encoder._get_feat_extract_output_lengths(lengths)


def standardise_waves(waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Wav2Vec2FeatureExtractor's zero-mean unit-variance per clip over its valid samples; padding stays 0."""
    valid = torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths[:, None]
    n = lengths.clamp(min=1)[:, None].to(waves.dtype)
    mean = (waves * valid).sum(1, keepdim=True) / n
    var = (((waves - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return (waves - mean) / torch.sqrt(var + 1e-7) * valid


class HubertCTC(nn.Module):
    """Encoder + dropout + linear layer per frame over a character vocabulary, for CTC (the study's ASR model,
    as Hugging Face's HubertForCTC: ``final_dropout`` then ``lm_head``)."""

    def __init__(self, encoder: nn.Module, vocab_size: int, do_normalize: bool):
        super().__init__()
        self.encoder = encoder
        self.do_normalize = do_normalize
        self.dropout = nn.Dropout(getattr(encoder.config, "final_dropout", 0.0))
        self.lm_head = nn.Linear(encoder.config.hidden_size, vocab_size)
        self.pass_mask = encoder.config.feat_extract_norm == "layer"  # as HubertClassifier

    def hidden(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states ``[B, F, H]`` and the valid frame counts ``[B]``."""
        hidden, frames = last_hidden(self.encoder, waves, lengths, self.do_normalize, self.pass_mask)
        return hidden, frames.clamp(min=1, max=hidden.shape[1])

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame logits ``[B, F, V]`` and the valid frame counts ``[B]``."""
        hidden, frames = self.hidden(waves, lengths)
        return self.lm_head(self.dropout(hidden)), frames

    def embed(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Utterance embeddings ``[B, H]`` (mean over valid frames), for the latent language probe."""
        if lengths is None:
            lengths = torch.full((waves.shape[0],), waves.shape[1], dtype=torch.long, device=waves.device)
        hidden, frames = self.hidden(waves, lengths)
        fmask = (torch.arange(hidden.shape[1], device=waves.device)[None, :] < frames[:, None]).to(hidden.dtype)
        return (hidden * fmask[..., None]).sum(1) / fmask.sum(1, keepdim=True)


def load_ctc(model_dir: Path, vocab_size: int, *, freeze_feature_encoder: bool = True) -> HubertCTC:
    """The prepared encoder plus a freshly initialised CTC head of ``vocab_size`` outputs (uses the torch
    RNG: seed before calling); the CNN feature encoder frozen unless told otherwise."""
    encoder, do_normalize = load_encoder(model_dir, freeze_feature_encoder)
    return HubertCTC(encoder, vocab_size, do_normalize)

