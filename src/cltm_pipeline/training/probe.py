"""Latent probes: how separable the languages stay in a trained model's utterance embeddings.

The probe set of a task is a held-out multilingual set: clips of every language's dev speakers, who never
train any cell (only evaluate, and only for their own target). After training, a cell embeds the probe set
with its selected model; a logistic regression of language identity, cross-validated with speakers held
out, says how linearly separable the languages are, and a 2-D PCA of the embeddings shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import torch

from cltm_pipeline.data.audio import Clips
from cltm_pipeline.io import read_manifest

__all__ = ["language_probe", "probe_model"]


def language_probe(emb: np.ndarray, locales: list[str], speakers: list[str], seed: int = 0) -> dict[str, Any] | None:
    """Speaker-grouped cross-validated accuracy of a logistic regression of language on ``emb``, chance
    level (majority share) and a 2-D PCA; None with fewer than two languages or two speakers per language."""
    # scikit-learn costs ~1.2 s to import: only cells that probe pay it
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    langs = sorted(set(locales))
    y = np.array([langs.index(loc) for loc in locales])
    per_lang_speakers = min(len({s for s, l in zip(speakers, locales) if l == loc}) for loc in langs) if langs else 0
    if len(langs) < 2 or per_lang_speakers < 2:
        return None
    folds = min(5, per_lang_speakers)
    # Folds hold speakers out (a speaker's voice must not pass for a language) and keep every language in
    # every fold with balanced class weights: plain group folds unbalance the training languages fold by
    # fold, which pushes the accuracy of structure-less embeddings *below* chance.
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed))
    pred = cross_val_predict(clf, emb, y, groups=np.array(speakers), cv=StratifiedGroupKFold(n_splits=folds))
    centred = emb - emb.mean(axis=0)
    u, sv, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt * np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])[:, None]  # deterministic signs
    xy = centred @ vt[:2].T if vt.shape[0] >= 2 else np.zeros((len(y), 2))
    return {
        "languages": langs,
        "n": int(len(y)),
        "folds": folds,
        "accuracy": float((pred == y).mean()),
        "chance": float(np.bincount(y).max() / len(y)),
        "projection": {"x": [round(float(v), 5) for v in xy[:, 0]], "y": [round(float(v), 5) for v in xy[:, 1]],
                       "locale": list(locales)},
    }


def probe_model(
    embed: Callable[[Any, Any], Any], probe_path: Path | None, ingest_root: Path, per_language: int, max_len: int,
    batch_size: int, device: Any, seed: int,
) -> dict[str, Any] | None:
    """Embed the first ``per_language`` clips of each language of the probe set at ``probe_path`` with
    ``embed(waves, lengths)`` (a trained model's pooling, in eval mode, no gradients) and probe them with
    :func:`language_probe`; None when probing is off (no probe set, or ``per_language`` 0)."""
    if probe_path is None or per_language <= 0:
        return None
    probe = read_manifest(Path(probe_path))
    rows = pl.concat([g.head(per_language) for _, g in probe.group_by("locale", maintain_order=True)])
    clips = Clips(rows, ingest_root)
    out = []
    module = getattr(embed, "__self__", None)
    was_training = bool(module is not None and module.training)
    if module is not None:
        module.eval()
    with torch.no_grad():
        for lo in range(0, rows.height, batch_size):
            x, n = clips.batch(np.arange(lo, min(lo + batch_size, rows.height)), max_len, None)
            out.append(embed(torch.from_numpy(x).to(device), torch.from_numpy(n).to(device)).float().cpu().numpy())
    if module is not None and was_training:
        module.train()
    return language_probe(np.concatenate(out), rows["locale"].to_list(), rows["client_id"].to_list(), seed)
