"""HuBERT-family encoders (the study's mHuBERT-147) with an utterance classification head.

``prepare`` resolves the weights once, before any training job, into a model directory; every training
job then loads that directory, so a cluster of jobs never touches the hub. Three kinds of source:

- a Hugging Face id (``utter-project/mHuBERT-147``), read from the HF cache; ``HF_HUB_OFFLINE=1`` is
  honoured, and with it a model that is not cached fails at once with a message saying how to get it;
- a local directory holding ``config.json`` and the weights (``save_pretrained`` layout);
- ``"tiny"``: a randomly initialised HuBERT of about 100k parameters built from :data:`TINY_CONFIG`
  (overridable key by key), seeded, so the same config gives the same weights on every machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from cltm_pipeline.data.audio import SAMPLE_RATE
from cltm_pipeline.io import atomic_dir, sha256_file, write_json
from cltm_pipeline.errors import ModelError
from cltm_pipeline.models.registry import PROVENANCE, Architecture, register
from cltm_pipeline.models.speaker import SpeakerIdModel

__all__ = ["TINY_CONFIG", "PREPROCESSOR", "HubertClassifier", "MHubert", "HubertCTC", "load_ctc", "standardise_waves",
           "check_preprocessor", "read_preprocessor", "feature_extractor", "source_files"]

#: The demo's tiny HuBERT: 4 conv layers with HuBERT's 320x downsampling (50 frames/s), 2 transformer
#: layers of width 64. Any HubertConfig key can be overridden; ``seed`` fixes the random init.
TINY_CONFIG: dict[str, Any] = {
    "seed": 0,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "conv_dim": [32, 32, 32, 32],
    "conv_kernel": [10, 8, 4, 4],
    "conv_stride": [5, 4, 4, 4],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "feat_extract_norm": "group",
    "hidden_dropout": 0.0,
    "activation_dropout": 0.0,
    "attention_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "final_dropout": 0.0,
    "layerdrop": 0.0,
    "mask_time_prob": 0.0,
    "apply_spec_augment": False,
    "do_normalize": True,  # goes to preprocessor_config.json, not to the HubertConfig
}

PREPROCESSOR = "preprocessor_config.json"


def check_preprocessor(settings: dict[str, Any], where: str) -> bool:
    """Whether the model wants its input normalised (``do_normalize``), after checking that the rest of its
    feature-extractor settings are what this pipeline feeds it: raw 16 kHz mono waveforms, zero-padded at
    the end. A setting it cannot honour is a one-line ModelError naming ``where`` and the key."""
    kind = settings.get("feature_extractor_type", "Wav2Vec2FeatureExtractor")
    if kind != "Wav2Vec2FeatureExtractor":
        raise ModelError(f"{where}: feature_extractor_type is {kind!r}; this pipeline feeds raw waveforms "
                         "(Wav2Vec2FeatureExtractor), not the features that extractor computes")
    checks = (("sampling_rate", SAMPLE_RATE, f"the pipeline's audio is {SAMPLE_RATE} Hz"),
              ("feature_size", 1, "the pipeline feeds mono waveforms"),
              ("padding_value", 0, "the pipeline zero-pads batches"))
    for key, want, why in checks:
        if key in settings and settings[key] != want:
            raise ModelError(f"{where}: {key} is {settings[key]!r}, expected {want!r} ({why})")
    do_normalize = settings.get("do_normalize", True)  # HuBERT's convention when unstated
    if not isinstance(do_normalize, bool):
        raise ModelError(f"{where}: do_normalize is {do_normalize!r}, expected true or false")
    return do_normalize


def read_preprocessor(model_dir: Path) -> bool:
    """:func:`check_preprocessor` of a model directory's preprocessor_config.json (normalised input without one)."""
    path = Path(model_dir) / PREPROCESSOR
    if not path.is_file():
        return True
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not readable as JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(settings, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return check_preprocessor(settings, str(path))


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def missing_model(source: str, why: str) -> ModelError:
    """The one-line error for weights that cannot be had here."""
    try:
        # the hub client: only when a model is fetched
        from huggingface_hub.constants import HF_HUB_CACHE as cache
    except Exception:  # pragma: no cover - huggingface_hub always ships with transformers
        cache = "the Hugging Face cache"
    mode = "HF_HUB_OFFLINE=1 is set, so nothing is downloaded" if offline() else "download failed"
    return ModelError(
        f"model {source!r}: {why} ({mode}; cache {cache}). Provide the weights: on a machine with internet "
        f"(e.g. a login node) run `huggingface-cli download {source}` (or `hf download {source}`) with the same "
        f"HF_HOME, or point the model source at a local directory holding config.json and the weights"
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def quiet_transformers() -> None:
    # transformers (~2 s to import): only when a HuBERT is built or prepared
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _prepare_tiny(out_dir: Path, tiny: dict[str, Any] | None) -> dict[str, Any]:
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


def source_files(source: str) -> Callable[[str], Path]:
    """``fetch(file_name)`` for a local directory or a Hugging Face id: the file's local path (for a hub id
    downloaded alone, or found in the HF cache with HF_HUB_OFFLINE=1), or a one-line ModelError."""
    local = Path(source).expanduser()
    if local.is_dir():
        def fetch_local(name: str) -> Path:
            path = local / name
            if not path.is_file():
                raise ModelError(f"model {source!r}: the directory has no {name}")
            return path

        return fetch_local
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelError(f"model {source!r}: no such local directory")  # a hub id is "name" or "org/name"
    # the hub client: only when a model is fetched
    from huggingface_hub import hf_hub_download

    def fetch_hub(name: str) -> Path:
        try:
            return Path(hf_hub_download(source, name, local_files_only=offline()))
        except Exception as exc:  # not cached, offline, no such file or repo: one line either way
            raise missing_model(source, f"{name}: {type(exc).__name__}") from None

    return fetch_hub


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


@register("mhubert")
class MHubert(Architecture):
    """mHuBERT-147 (or any HuBERT checkpoint in Hugging Face format) fine-tuned with a classification head."""

    #: how a hub id or local directory is read into the model directory (an architecture reusing
    #: :meth:`prepare` with another model class sets its own)
    _pretrained = staticmethod(prepare_pretrained)

    @classmethod
    def prepare(cls, source: str, out_dir: Path, tiny: dict[str, Any] | None = None) -> Path:
        """Write the model directory ``out_dir`` from ``source`` (hub id, local directory or ``"tiny"``)."""
        out_dir = Path(out_dir)
        if tiny is not None and source != "tiny":
            raise ModelError(f"model {source!r}: a tiny config is only meaningful with source 'tiny'")
        with atomic_dir(out_dir) as tmp:
            info = _prepare_tiny(tmp, tiny) if source == "tiny" else cls._pretrained(source, tmp)
            weights = sorted(p.name for p in tmp.iterdir() if p.suffix in (".safetensors", ".bin"))
            write_json(
                tmp / PROVENANCE,
                {"arch": cls.name, "source": source, **info, "weights": {w: sha256_file(tmp / w) for w in weights}},
            )
        return out_dir

    @classmethod
    def load(cls, model_dir: Path, num_labels: int, *, freeze_feature_encoder: bool = True,
             pool_layers: int | None = None) -> HubertClassifier:
        """The prepared encoder plus a freshly initialised head (uses the torch RNG: seed before calling);
        ``pool_layers``: embeddings pool the mean of the last so many hidden states (None: the last one)."""
        encoder, do_normalize = load_encoder(model_dir, freeze_feature_encoder)
        return HubertClassifier(encoder, num_labels, do_normalize, pool_layers)

    @classmethod
    def load_sv(cls, model_dir: Path, num_speakers: int, hparams: dict[str, Any]) -> nn.Module:
        """Speaker verification: the encoder fine-tuned as speaker identification over the cell's training
        speakers (cross-entropy); embeddings: the last ``pool_layers`` hidden states' mean, time-pooled."""
        clf = cls.load(model_dir, num_speakers, freeze_feature_encoder=hparams["freeze_feature_encoder"],
                       pool_layers=hparams["pool_layers"])
        return SpeakerIdModel(clf, clf.head)


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


MHubert.load_ctc = classmethod(lambda cls, model_dir, vocab_size, **kw: load_ctc(model_dir, vocab_size, **kw))
