"""SpeechLLM: a frozen large pre-trained speech encoder gives utterance embeddings (time-pooled last hidden
states); a small MLP on ``[|e1 - e2|, e1 * e2]`` is trained per cell with BCE on same/different pairs.

The encoder never trains, so its embeddings are a function of the clip alone: the workflow computes them
once per utterance into a cache (:mod:`cltm_pipeline.models.embeddings`, rule ``embed``) that every cell and seed
reuses; only the MLP trains per cell.

Sources: ``fbank`` (a parameter-free log-mel statistics front end: the offline demo's stand-in, see
:data:`FBANK_SIZES`), ``tiny`` (a random tiny HuBERT built offline, :data:`cltm_pipeline.models.hubert.TINY_CONFIG`:
tests and the cache benchmark, where only its cost matters), a local directory in ``save_pretrained`` layout,
or a Hugging Face id. A HuBERT / wav2vec 2.0 / WavLM checkpoint loads as it is. A multimodal checkpoint (the
study's ``skit-ai/speechllm-2B``: HuBERT x-large, a CNN connector, TinyLlama-1.1B; custom code) is not
loaded as a model: its safetensors index is read and only the audio encoder's (:data:`ENCODER_PREFIX`) and
the connector's (:data:`CONNECTOR_PREFIXES`) tensors are read into a transformers ``HubertModel`` of the
built-in config (:data:`ENCODER_CONFIGS`) and a :class:`Connector`, without remote code, peft or the LLM
(4.0 of the 8.4 GB; for a hub id only the shards holding them are downloaded). Its embedding is the mean
over time of the connector's output, L2-normalised (:class:`ConnectorPooled`; README: deviations).

The registration and the constants live here (no torch: ``snakemake -n`` imports this module); the models,
the frozen embedder and the preparation code are in :mod:`cltm_pipeline.models.speechllm_nn`, imported where
they are used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from cltm_pipeline.models.hubert import MHubert
from cltm_pipeline.models.registry import CONFIG_NAME, Architecture, register

__all__ = ["HUBERT_XLARGE_LL60K", "ENCODER_CONFIGS", "ENCODER_PREFIX", "CONNECTOR_PREFIXES", "CONNECTOR_STRIDE",
           "CONNECTOR_WEIGHTS", "CONNECTOR_CONFIG", "FBANK_SIZES", "FORWARDS", "SpeechLLM"]

#: Source ``fbank``: a parameter-free frozen front end (log-mel filterbank, mean and standard deviation over
#: valid frames) for the offline demo. A randomly initialised network is no stand-in for a pre-trained
#: encoder here: on the demo's noisy eSpeak speech, pair MLPs on a random tiny HuBERT's or Whisper
#: encoder's pooled states stayed at 1 - EER ~ 0.5 (chance) whatever the pooling, so the matrix would be
#: all noise; log-mel statistics carry the speaker cues a pre-trained encoder would (1 - EER 0.6-0.85).
FBANK_SIZES: dict[str, dict[str, Any]] = {"fbank": {"seed": 0, "n_mels": 40}}

#: Utterances passed through a frozen encoder in this process (for the cache benchmark and metrics.json).
FORWARDS = {"utterances": 0}

#: facebook/hubert-xlarge-ll60k's HubertConfig (its public config.json): skit-ai/speechllm-2B's audio encoder.
#: The multimodal checkpoint names its encoder only by hub id (config.json ``audio_encoder_name``) and built it
#: from that id's config at run time; keeping the config here is what lets the encoder load offline.
HUBERT_XLARGE_LL60K: dict[str, Any] = {
    "hidden_size": 1280, "num_hidden_layers": 48, "num_attention_heads": 16, "intermediate_size": 5120,
    "hidden_act": "gelu", "layer_norm_eps": 1e-5, "feat_extract_norm": "layer", "do_stable_layer_norm": True,
    "conv_bias": True, "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "feat_proj_dropout": 0.1,
    "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "final_dropout": 0.1,
    "layerdrop": 0.1, "mask_time_prob": 0.05, "vocab_size": 32,
}
#: the audio encoders whose configuration is built in, by the name a multimodal config.json gives them
ENCODER_CONFIGS: dict[str, dict[str, Any]] = {"facebook/hubert-xlarge-ll60k": HUBERT_XLARGE_LL60K}
#: where a multimodal checkpoint keeps its audio encoder (a transformers HubertModel's tensors)
ENCODER_PREFIX = "audio_encoder.encoder."
#: where it may keep the CNN connector (skit-ai/SpeechLLM's ``connector.layer``; ``audio_encoder.cnn``
#: as issue 19 describes the 2B checkpoint), tried in this order
CONNECTOR_PREFIXES = ("connector.layer.", "audio_encoder.cnn.")
#: the connector's second convolution's stride: not in the tensors; skit-ai/SpeechLLM's CNNConnector default k
CONNECTOR_STRIDE = 2
CONNECTOR_WEIGHTS = "connector.safetensors"
CONNECTOR_CONFIG = "connector.json"


@register("speechllm")
class SpeechLLM(Architecture):
    """Frozen encoder embeddings (cached) + pair MLP; ``mlp_hidden`` is the MLP's width."""

    hparams = {"mlp_hidden": 64}
    embedding_cache = True

    impl = "cltm_pipeline.models.speechllm_nn"

    @classmethod
    def _pretrained(cls, source: str, out_dir: Path) -> dict[str, Any]:
        """Any Hugging Face audio encoder, not only HuBERT (:func:`cltm_pipeline.models.speechllm_nn.prepare_remote`)."""
        return cls.nn().prepare_remote(source, out_dir)

    @classmethod
    def prepare(cls, source: str, out_dir: Path, tiny: dict[str, Any] | None = None) -> Path:
        if source in FBANK_SIZES:
            # torch: only when a model is prepared
            from cltm_pipeline.models.speaker import prepare_scratch

            return prepare_scratch(cls.name, source, out_dir, FBANK_SIZES, tiny, cls.nn().FbankStats)
        return MHubert.prepare.__func__(cls, source, out_dir, tiny=tiny)  # its directory handling, our loader

    @classmethod
    def embedder(cls, model_dir: Path, device: Any) -> Callable[[Any, Any], Any]:
        """The frozen encoder as ``f(waves, lengths) -> [B, H]``: :func:`cltm_pipeline.models.speechllm_nn.frozen_embedder`."""
        return cls.nn().frozen_embedder(model_dir, device)

    @classmethod
    def embedding_dim(cls, model_dir: Path) -> int:
        fbank = Path(model_dir) / CONFIG_NAME
        if fbank.is_file():
            return 2 * int(json.loads(fbank.read_text(encoding="utf-8"))["n_mels"])
        connector = Path(model_dir) / CONNECTOR_CONFIG
        if connector.is_file():
            return int(json.loads(connector.read_text(encoding="utf-8"))["channels"][-1])
        return int(json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["hidden_size"])

    @classmethod
    def load_sv(cls, model_dir: Path, num_speakers: int, hparams: dict[str, Any]) -> Any:
        """A :class:`~cltm_pipeline.models.speechllm_nn.PairMLP` over the encoder's embeddings."""
        return cls.nn().PairMLP(cls.embedding_dim(model_dir), hparams["mlp_hidden"])
