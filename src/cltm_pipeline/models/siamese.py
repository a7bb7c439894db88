"""Siamese network: one shared-weight CNN on log-mel features embeds both utterances of a pair; trained
from scratch on same/different-speaker pairs of the cell's training rows with a contrastive loss
(margin ``contrastive_margin`` on the distance of L2-normalised embeddings); cosine scoring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cltm_pipeline.models.registry import Architecture, register

__all__ = ["SIZES", "Siamese"]

SIZES: dict[str, dict[str, Any]] = {
    "scratch": {"seed": 0, "n_mels": 64, "channels": [32, 64, 128, 256], "embedding_dim": 256},
    "tiny": {"seed": 0, "n_mels": 24, "channels": [8, 16, 32], "embedding_dim": 32},
}


@register("siamese")
class Siamese(Architecture):
    hparams = {"contrastive_margin": 1.0}
    impl = "cltm_pipeline.models.siamese_nn"

    @classmethod
    def prepare(cls, source: str, out_dir: Path, tiny: dict[str, Any] | None = None) -> Path:
        # torch: only when a model is prepared
        from cltm_pipeline.models.speaker import prepare_scratch

        return prepare_scratch(cls.name, source, out_dir, SIZES, tiny, cls.nn().SiameseCNN)

    @classmethod
    def load_sv(cls, model_dir: Path, num_speakers: int, hparams: dict[str, Any]) -> Any:
        """A :class:`~cltm_pipeline.models.siamese_nn.SiameseModel` (contrastive pairs)."""
        # torch: only when a model is built
        from cltm_pipeline.models.speaker import load_scratch

        nn = cls.nn()
        body, _ = load_scratch(model_dir, nn.SiameseCNN)
        return nn.SiameseModel(body, hparams["contrastive_margin"])
