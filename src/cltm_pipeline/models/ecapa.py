"""ECAPA-TDNN (speechbrain's implementation) on log-mel features, trained from scratch as speaker
identification with AAM-softmax (s = 30, m = 0.2 by default); cosine scoring of the embeddings.

Sources: ``scratch`` (the standard size of Desplanques et al. 2020 / speechbrain's VoxCeleb recipe:
channels 1024, 192-dim embeddings, 80 mels) and ``tiny`` (a few thousand parameters, for the demo and
tests); ``models.<name>.tiny`` overrides any key of either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cltm_pipeline.models.registry import Architecture, register

__all__ = ["SIZES", "Ecapa"]

SIZES: dict[str, dict[str, Any]] = {
    "scratch": {"seed": 0, "n_mels": 80, "channels": [1024, 1024, 1024, 1024, 3072], "lin_neurons": 192,
                "attention_channels": 128, "se_channels": 128, "res2net_scale": 8},
    "tiny": {"seed": 0, "n_mels": 24, "channels": [32, 32, 32, 32, 96], "lin_neurons": 32,
             "attention_channels": 16, "se_channels": 16, "res2net_scale": 4},
}


@register("ecapa")
class Ecapa(Architecture):
    """ECAPA-TDNN with AAM-softmax; ``aam_scale`` / ``aam_margin`` are its hyper-parameters."""

    hparams = {"aam_scale": 30.0, "aam_margin": 0.2}
    impl = "cltm_pipeline.models.ecapa_nn"

    @classmethod
    def prepare(cls, source: str, out_dir: Path, tiny: dict[str, Any] | None = None) -> Path:
        # torch: only when a model is prepared
        from cltm_pipeline.models.speaker import prepare_scratch

        return prepare_scratch(cls.name, source, out_dir, SIZES, tiny, cls.nn().EcapaEmbedder)

    @classmethod
    def load_sv(cls, model_dir: Path, num_speakers: int, hparams: dict[str, Any]) -> Any:
        """A :class:`~cltm_pipeline.models.speaker.SpeakerIdModel` with an AAM-softmax head."""
        # torch: only when a model is built
        from cltm_pipeline.models.speaker import AAMHead, SpeakerIdModel, load_scratch

        body, _ = load_scratch(model_dir, cls.nn().EcapaEmbedder)
        return SpeakerIdModel(body, AAMHead(body.dim, num_speakers, hparams["aam_scale"], hparams["aam_margin"]))
