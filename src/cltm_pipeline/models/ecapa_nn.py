"""ECAPA-TDNN's torch module (:mod:`cltm_pipeline.models.ecapa` registers the architecture); imported only
where a model is built or prepared."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cltm_pipeline.models.speaker import LogMel

__all__ = ["EcapaEmbedder"]


class EcapaEmbedder(nn.Module):
    """Log-mel front end + ECAPA-TDNN: ``embed(waves, lengths)`` -> ``[B, lin_neurons]``."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        # speechbrain (~1 s): only when this model is built
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        self.features = LogMel(config["n_mels"])
        self.ecapa = ECAPA_TDNN(
            config["n_mels"], lin_neurons=config["lin_neurons"], channels=list(config["channels"]),
            attention_channels=config["attention_channels"], se_channels=config["se_channels"],
            res2net_scale=config["res2net_scale"],
        )
        self.dim = config["lin_neurons"]

    def embed(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        feats, rel = self.features(waves, lengths)
        return self.ecapa(feats, rel).squeeze(1)
