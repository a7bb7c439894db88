"""The speaker-verification task's cell (:mod:`cltm_pipeline.tasks.sv` registers the task and holds its
trial lists, pair draws and metrics): the hooks the training loop calls. Imported only when a cell runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import polars as pl
import torch

from cltm_pipeline.data.audio import SAMPLE_RATE, Clips
from cltm_pipeline.models.embeddings import embed_rows, load_cache
from cltm_pipeline.errors import ConfigError, SubsetError
from cltm_pipeline.io import write_tsv
from cltm_pipeline.models import get_architecture
from cltm_pipeline.models.speechllm import FORWARDS
from cltm_pipeline.protocol import CellSpec, performance
from cltm_pipeline.tasks.registry import CellData, TaskCell
from cltm_pipeline.tasks.sv import (DCF_COSTS, DCF_P_TARGETS, DEV_TRIALS, EMBEDDING_PREFIX, TRIALS, draw_pairs, read_trials,
                                    sv_metrics)

__all__ = ["SvCell"]


class _Inputs:
    """Model inputs of a manifest's rows: cropped audio, or cached embeddings of a frozen encoder."""

    def __init__(self, rows: pl.DataFrame, ingest_root: Path, max_len: int, embeddings: np.ndarray | None):
        self.max_len = max_len
        self.emb = embeddings
        self.clips = Clips(rows, ingest_root) if embeddings is None else None

    def batch(self, idx: np.ndarray, rng: np.random.Generator | None, device: Any) -> tuple[Any, Any]:
        if self.emb is not None:
            return torch.from_numpy(self.emb[idx]).to(device), None
        x, n = self.clips.batch(idx, self.max_len, rng)
        return torch.from_numpy(x).to(device), torch.from_numpy(n).to(device)


def _trial_index(rows: pl.DataFrame, trials_path: Path, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, enrol, test = read_trials(trials_path)
    index = {u: k for k, u in enumerate(rows["utt_id"].to_list())}
    missing = [u for u in enrol + test if u not in index]
    if missing:
        raise ConfigError(f"{where}: trial list {trials_path} names {missing[0]}, not in its evaluation set")
    return labels, np.array([index[u] for u in enrol]), np.array([index[u] for u in test])


class SvCell(TaskCell):
    """One SV cell (see the module docstring). ``spec.artifacts`` must hold :data:`TRIALS` and
    :data:`DEV_TRIALS`, and for a frozen-encoder architecture optionally ``emb:<locale>`` cache manifests of
    every locale of the cell. Predictions: the test trials' scores as a TSV (label, enrol, test, score)."""

    def __init__(self, spec: CellSpec, hp: Mapping[str, Any], data: CellData, device: Any):
        super().__init__(spec, hp, data, device)
        for name in (TRIALS, DEV_TRIALS):
            if name not in spec.artifacts:
                raise ConfigError(f"{spec.where}: the {name} artifact is missing (built by the target_artifact rule)")
        eval_speakers = set(data.test["client_id"].to_list()) | set(data.dev["client_id"].to_list())
        leak = data.train.filter(pl.col("client_id").is_in(list(eval_speakers)))
        if leak.height:
            raise SubsetError(f"{spec.where}: training clip {leak['utt_id'][0]} ({leak['locale'][0]}) is by an evaluation speaker")
        self.test_trials = _trial_index(data.test, spec.artifacts[TRIALS], spec.where)
        self.dev_trials = _trial_index(data.dev, spec.artifacts[DEV_TRIALS], spec.where)
        self.speakers = sorted(set(data.train["client_id"].to_list()))
        self.y_train = np.array([self.speakers.index(s) for s in data.train["client_id"].to_list()], dtype=np.int64)
        self.max_len = int(hp["max_seconds"] * SAMPLE_RATE)
        self.embed_s, self.forwards = 0.0, 0
        self.test_scores: np.ndarray | None = None

    def build(self, rng: np.random.Generator) -> None:
        spec, hp, data = self.spec, self.hp, self.data
        self.model = get_architecture(spec.arch).load_sv(spec.model_dir, len(self.speakers), hp).to(self.device)
        embs = self._embeddings() if self.model.inputs == "embeddings" else [None, None, None]
        if embs[0] is not None:
            self.model.fit(torch.from_numpy(embs[0]).to(self.device))
        self.train_in, self.dev_in, self.test_in = (
            _Inputs(r, spec.ingest_root, self.max_len, e) for r, e in zip((data.train, data.dev, data.test), embs))
        self.genders, self.client = data.train["gender"].to_list(), data.train["client_id"].to_list()
        if self.model.objective == "pairs":  # pairs per epoch (a constant)
            self.units = len(draw_pairs(self.client, self.genders, np.random.default_rng(0))[0])
        else:
            self.units = len(self.y_train)
        self.total_steps = -(-self.units // hp["batch_size"]) * hp["epochs"]

    def _embeddings(self) -> list[np.ndarray]:
        """A frozen encoder's embeddings of the train, dev and test rows: from the caches, else computed here
        (and counted)."""
        spec, data, t_emb = self.spec, self.data, time.perf_counter()
        caches = {n[len(EMBEDDING_PREFIX):]: p for n, p in spec.artifacts.items() if n.startswith(EMBEDDING_PREFIX)}
        parts = (data.train, data.dev, data.test)
        if caches:
            # one read of the cell's own locales (the target and its donor), not of every language's store
            needed = sorted({spec.target, *data.train["locale"].unique().to_list()})
            missing = [loc for loc in needed if loc not in caches]
            if missing:
                raise ConfigError(f"{spec.where}: no embedding cache (artifact {EMBEDDING_PREFIX}{missing[0]}) for {missing[0]}")
            every = load_cache([caches[loc] for loc in needed], [u for r in parts for u in r["utt_id"].to_list()])
            embs = np.split(every, np.cumsum([r.height for r in parts])[:-1])
        else:
            before = FORWARDS["utterances"]
            embed = get_architecture(spec.arch).embedder(spec.model_dir, self.device)
            embs = [embed_rows(embed, r, spec.ingest_root, self.hp["max_seconds"], self.hp["eval_batch_size"], self.device)
                    for r in parts]
            self.forwards = FORWARDS["utterances"] - before
        self.embed_s = time.perf_counter() - t_emb
        return embs

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list[Any]:
        size = self.hp["batch_size"]
        if self.model.objective == "pairs":
            first, second, same = draw_pairs(self.client, self.genders, rng)
            return [(first[lo:lo + size], second[lo:lo + size], same[lo:lo + size]) for lo in range(0, len(first), size)]
        order = rng.permutation(len(self.y_train))
        return [(order[lo:lo + size],) for lo in range(0, len(order), size)]

    def loss(self, batch: Any, rng: np.random.Generator) -> tuple[Any, int]:
        model, device = self.model, self.device
        if model.objective != "pairs":
            (idx,) = batch
            x, n = self.train_in.batch(idx, rng, device)
            return model.speaker_loss(x, n, torch.from_numpy(self.y_train[idx]).to(device)), len(idx)
        i, j, s = batch
        x1, n1 = self.train_in.batch(i, rng, device)
        x2, n2 = self.train_in.batch(j, rng, device)
        if n1 is None:
            e1, e2 = model.embed(x1, None), model.embed(x2, None)
        else:  # one forward over both sides: batch statistics (BatchNorm) see the whole pair batch
            width = max(x1.shape[1], x2.shape[1])
            x = torch.cat([torch.nn.functional.pad(x1, (0, width - x1.shape[1])),
                           torch.nn.functional.pad(x2, (0, width - x2.shape[1]))])
            e1, e2 = model.embed(x, torch.cat([n1, n2])).split(len(i))
        return model.pair_loss(e1, e2, torch.from_numpy(s).to(device)), len(i)

    def _score_trials(self, inputs: _Inputs, n_rows: int, trials: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        self.model.eval()
        size = self.hp["eval_batch_size"]
        with torch.no_grad():
            emb = torch.cat([self.model.embed(*inputs.batch(np.arange(lo, min(lo + size, n_rows)), None, self.device))
                             for lo in range(0, n_rows, size)])
            _, a, b = trials
            scores = self.model.score(emb[torch.from_numpy(a)], emb[torch.from_numpy(b)]).float().cpu().numpy()
        self.model.train()
        return scores.astype(np.float64)

    def dev_score(self) -> tuple[float, Any]:
        e = sv_metrics(self._score_trials(self.dev_in, self.data.dev.height, self.dev_trials), self.dev_trials[0])["eer"]
        return performance("eer", e), e

    def test(self, best_extra: Any) -> dict[str, Any]:
        self.test_scores = self._score_trials(self.test_in, self.data.test.height, self.test_trials)
        labels = self.test_trials[0]
        return {
            "metrics": {**sv_metrics(self.test_scores, labels), "dev_eer": float(best_extra)},
            "dcf": {**DCF_COSTS, "p_target": list(DCF_P_TARGETS), "normalised": True},
            "primary_metric": "eer", "n_train_speakers": len(self.speakers), "n_test": int(labels.size),
            "n_test_targets": int(labels.sum()), "n_dev": int(self.dev_trials[0].size),
            "trials": {"test": Path(self.spec.artifacts[TRIALS]).name, "dev": Path(self.spec.artifacts[DEV_TRIALS]).name},
        }

    def probe_input(self) -> tuple[Callable[..., Any] | None, int]:
        # cached-embedding models (speechllm) never see audio: there is nothing of theirs to probe
        return (self.model.embed if self.model.inputs == "audio" else None), self.max_len

    def timing(self) -> dict[str, Any]:
        return {"embed_s": round(self.embed_s, 3), "encoder_forwards": self.forwards}

    def training_info(self) -> dict[str, Any]:
        return {"objective": self.model.objective}

    def write_predictions(self, path: Path) -> None:
        labels, a, b = self.test_trials
        ids = self.data.test["utt_id"].to_list()
        write_tsv(Path(path), pl.DataFrame({"label": labels.tolist(), "enrol": [ids[k] for k in a],
                                            "test": [ids[k] for k in b], "score": self.test_scores.tolist()}))
