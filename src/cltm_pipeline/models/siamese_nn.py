"""The Siamese network's torch modules (:mod:`cltm_pipeline.models.siamese` registers the architecture);
imported only where a model is built or prepared."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cltm_pipeline.models.speaker import LogMel, SVModel, contrastive_loss

__all__ = ["SiameseCNN", "SiameseModel"]


class SiameseCNN(nn.Module):
    """Conv2d-BN-ReLU-maxpool blocks over (time, mel), mean and std pooling over valid time, linear out."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.features = LogMel(config["n_mels"])
        blocks, c_in = [], 1
        for c in config["channels"]:
            blocks += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d((1, 2))]
            c_in = c
        self.cnn = nn.Sequential(*blocks)
        freq = config["n_mels"]
        for _ in config["channels"]:
            freq //= 2
        self.out = nn.Linear(2 * c_in * max(freq, 1), config["embedding_dim"])

    def embed(self, waves: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        feats, rel = self.features(waves, lengths)  # [B, T, M]
        h = self.cnn(feats.unsqueeze(1))  # [B, C, T, M']  (time is not pooled: lengths stay valid)
        b, c, t, m = h.shape
        h = h.permute(0, 2, 1, 3).reshape(b, t, c * m)
        frames = (rel * t).round().long().clamp(min=1)
        mask = (torch.arange(t, device=h.device)[None, :] < frames[:, None]).to(h.dtype)[..., None]
        mean = (h * mask).sum(1) / mask.sum(1)
        std = (((h - mean[:, None]) ** 2 * mask).sum(1) / mask.sum(1)).clamp(min=1e-6).sqrt()
        return self.out(torch.cat([mean, std], -1))


class SiameseModel(SVModel):
    objective = "pairs"

    def __init__(self, body: SiameseCNN, margin: float):
        super().__init__()
        self.body = body
        self.margin = margin

    def embed(self, x: torch.Tensor, n: torch.Tensor | None) -> torch.Tensor:
        return self.body.embed(x, n)

    def pair_loss(self, e1: torch.Tensor, e2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(e1, e2, same, self.margin)
