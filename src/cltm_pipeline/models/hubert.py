"""HuBERT-family encoders (the study's mHuBERT-147) with an utterance classification head.

``prepare`` resolves the weights once, before any training job, into a model directory; every training
job then loads that directory, so a cluster of jobs never touches the hub. Three kinds of source:

- a Hugging Face id (``utter-project/mHuBERT-147``), read from the HF cache; ``HF_HUB_OFFLINE=1`` is
  honoured, and with it a model that is not cached fails at once with a message saying how to get it;
- a local directory holding ``config.json`` and the weights (``save_pretrained`` layout);
- ``"tiny"``: a randomly initialised HuBERT of about 100k parameters built from :data:`TINY_CONFIG`
  (overridable key by key), seeded, so the same config gives the same weights on every machine.

The registration and its light helpers live here (no torch: ``snakemake -n`` imports this module); the
models and the preparation code are in :mod:`cltm_pipeline.models.hubert_nn`, imported where they are used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from cltm_pipeline.data.audio import SAMPLE_RATE
from cltm_pipeline.io import atomic_dir, sha256_file, write_json
from cltm_pipeline.errors import ModelError
from cltm_pipeline.models.registry import PROVENANCE, Architecture, register

__all__ = ["TINY_CONFIG", "PREPROCESSOR", "MHubert", "check_preprocessor", "read_preprocessor", "source_files",
           "offline", "missing_model"]

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


@register("mhubert")
class MHubert(Architecture):
    """mHuBERT-147 (or any HuBERT checkpoint in Hugging Face format) fine-tuned with a classification head."""

    impl = "cltm_pipeline.models.hubert_nn"

    @classmethod
    def _pretrained(cls, source: str, out_dir: Path) -> dict[str, Any]:
        """How a hub id or local directory is read into the model directory (an architecture reusing
        :meth:`prepare` with another model class overrides it)."""
        return cls.nn().prepare_pretrained(source, out_dir)

    @classmethod
    def prepare(cls, source: str, out_dir: Path, tiny: dict[str, Any] | None = None) -> Path:
        """Write the model directory ``out_dir`` from ``source`` (hub id, local directory or ``"tiny"``)."""
        out_dir = Path(out_dir)
        if tiny is not None and source != "tiny":
            raise ModelError(f"model {source!r}: a tiny config is only meaningful with source 'tiny'")
        with atomic_dir(out_dir) as tmp:
            info = MHubert.nn().prepare_tiny(tmp, tiny) if source == "tiny" else cls._pretrained(source, tmp)
            weights = sorted(p.name for p in tmp.iterdir() if p.suffix in (".safetensors", ".bin"))
            write_json(
                tmp / PROVENANCE,
                {"arch": cls.name, "source": source, **info, "weights": {w: sha256_file(tmp / w) for w in weights}},
            )
        return out_dir

    @classmethod
    def load(cls, model_dir: Path, num_labels: int, *, freeze_feature_encoder: bool = True,
             pool_layers: int | None = None) -> Any:
        """The prepared encoder plus a freshly initialised head, a :class:`~cltm_pipeline.models.hubert_nn.HubertClassifier`
        (uses the torch RNG: seed before calling); ``pool_layers``: embeddings pool the mean of the last so
        many hidden states (None: the last one)."""
        nn = cls.nn()
        encoder, do_normalize = nn.load_encoder(model_dir, freeze_feature_encoder)
        return nn.HubertClassifier(encoder, num_labels, do_normalize, pool_layers)

    @classmethod
    def load_sv(cls, model_dir: Path, num_speakers: int, hparams: dict[str, Any]) -> Any:
        """Speaker verification: the encoder fine-tuned as speaker identification over the cell's training
        speakers (cross-entropy); embeddings: the last ``pool_layers`` hidden states' mean, time-pooled."""
        # torch: only when a model is built
        from cltm_pipeline.models.speaker import SpeakerIdModel

        clf = cls.load(model_dir, num_speakers, freeze_feature_encoder=hparams["freeze_feature_encoder"],
                       pool_layers=hparams["pool_layers"])
        return SpeakerIdModel(clf, clf.head)

    @classmethod
    def load_ctc(cls, model_dir: Path, vocab_size: int, *, freeze_feature_encoder: bool = True) -> Any:
        """ASR: :func:`cltm_pipeline.models.hubert_nn.load_ctc` (the encoder plus a fresh CTC head)."""
        return cls.nn().load_ctc(model_dir, vocab_size, freeze_feature_encoder=freeze_feature_encoder)
