"""Speaker verification (DESIGN.md §1): fixed trial lists per target, four architectures, 1 - EER as P.

Trials. Per target locale, one trial list over its test speakers, and one over its dev speakers for model
selection, each a pure function of the evaluation set (independent of seed and cell), stored as a
versioned artifact in VoxCeleb's format ``label enrol test`` (1 target, 0 non-target; utterance ids).
Per speaker, up to :data:`TARGETS_PER_SPEAKER` same-speaker pairs of its clips in a hashed order; per
target trial one non-target trial with the same enrolment clip and a clip of another speaker of the same
gender, so the list is balanced and non-targets are never separable by gender alone. Evaluation
speakers never train any cell of their target (the subsets exclude them, donors included, and every
cell checks it again).

Cells. :class:`SvCell` is the task's hooks for the one training loop. It trains the
architecture's SV model (:mod:`cltm_pipeline.models.speaker`) on the cell's training rows, with one of
two objectives: speaker identification over the cell's training speakers (mHuBERT, ECAPA-TDNN), or
same/different pairs drawn from them with the seed (Siamese, SpeechLLM); selects the epoch with the best
dev 1 - EER; scores the test trials; writes metrics.json with every task's layout: EER, AUC and
normalised minDCF at p_target 0.01 and 0.05 (parameters beside them) and the dev EER of the selected
state. An architecture with a frozen encoder (``embedding_cache``) reads its embeddings from the
per-locale caches passed as artifacts ``emb:<locale>``; without them it embeds the cell's clips itself
(and counts the encoder's forward passes).

Every cell trains through the one loop (:mod:`cltm_pipeline.training.loop`), so an SV cell killed
mid-training resumes from its checkpoint (``checkpoint_every``) like any other.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl
import torch

from cltm_pipeline.data.audio import SAMPLE_RATE, Clips
from cltm_pipeline.data.subsets import SubsetSpec
from cltm_pipeline.models.embeddings import embed_rows, load_cache
from cltm_pipeline.errors import ConfigError, SubsetError
from cltm_pipeline.io import stable_hash, write_tsv
from cltm_pipeline.metrics import auc, eer, min_dcf
from cltm_pipeline.models import get_architecture
from cltm_pipeline.models.speechllm import FORWARDS
from cltm_pipeline.protocol import CellSpec, performance
from cltm_pipeline.tasks.registry import CellData, Task, TaskCell, register

__all__ = ["TRIALS", "DEV_TRIALS", "TARGETS_PER_SPEAKER", "DCF_P_TARGETS", "trial_list", "read_trials",
           "build_trials", "build_dev_trials", "draw_pairs", "sv_metrics", "SvCell", "EMBEDDING_PREFIX"]

#: Artifact names: the version is part of the name, so a changed trial rule is a new file, never a silent edit.
TRIALS = "trials-v1.txt"
DEV_TRIALS = "dev-trials-v1.txt"
#: Same-speaker trials per speaker at most (a CV test speaker may have hundreds of clips).
TARGETS_PER_SPEAKER = 50
#: minDCF operating points (C_miss = C_fa = 1), written into every metrics.json beside the values.
DCF_P_TARGETS = (0.01, 0.05)
DCF_COSTS = {"c_miss": 1.0, "c_fa": 1.0}
#: Artifact-name prefix of a locale's embedding cache manifest (``emb:<locale>``).
EMBEDDING_PREFIX = "emb:"


# ------------------------------------------------------------------------------------------ trials


def trial_list(rows: pl.DataFrame, what: str = "evaluation set") -> list[tuple[int, str, str]]:
    """Balanced (label, enrol, test) trials over the speakers of ``rows`` (see the module docstring)."""
    targets: list[tuple[str, str, str, str]] = []  # (enrol, test, speaker, gender)
    by_speaker: dict[str, list[str]] = {}
    gender_of: dict[str, str] = {}
    for r in rows.select("utt_id", "client_id", "gender").iter_rows():
        by_speaker.setdefault(r[1], []).append(r[0])
        gender_of[r[1]] = r[2]
    speakers_by_gender: dict[str, list[str]] = {}
    for spk in sorted(by_speaker, key=lambda s: stable_hash("sv-speaker", s)):
        speakers_by_gender.setdefault(gender_of[spk], []).append(spk)
        clips = sorted(by_speaker[spk], key=lambda u: (stable_hash("sv-trial", u), u))
        by_speaker[spk] = clips
        m, pairs = len(clips), 0
        for d in range(1, m):  # consecutive clips in hashed order, then every second one, ...
            for k in range(m - d):
                if pairs == TARGETS_PER_SPEAKER:
                    break
                targets.append((clips[k], clips[k + d], spk, gender_of[spk]))
                pairs += 1
    if not targets:
        raise SubsetError(f"sv trials: no speaker of the {what} has two clips")
    trials = {(1, a, b) for a, b, _, _ in targets}
    for a, b, spk, g in targets:
        others = [s for s in speakers_by_gender.get(g, []) if s != spk]
        if not others:
            raise SubsetError(f"sv trials: the {what} has a single {g} speaker; same-gender non-target trials need two "
                              f"(a task-level split with more test speakers per gender is needed)")
        for salt in range(1000):
            other = others[stable_hash("sv-non", a, b, salt) % len(others)]
            clip = by_speaker[other][stable_hash("sv-non-clip", a, b, salt) % len(by_speaker[other])]
            enrol, test = (a, clip) if salt % 2 == 0 else (b, clip)
            if (0, enrol, test) not in trials:
                trials.add((0, enrol, test))
                break
        else:
            raise SubsetError(f"sv trials: cannot find a fresh non-target trial for {a} in the {what}")
    return sorted(trials, key=lambda t: (t[1], t[2], t[0]))


def _trials_bytes(rows: pl.DataFrame, what: str) -> bytes:
    return "".join(f"{label} {enrol} {test}\n" for label, enrol, test in trial_list(rows, what)).encode("utf-8")


def build_trials(spec: SubsetSpec, test: pl.DataFrame, dev: pl.DataFrame) -> bytes:
    """The target's test trial list (a target artifact; depends on the test set only)."""
    return _trials_bytes(test, "test set")


def build_dev_trials(spec: SubsetSpec, test: pl.DataFrame, dev: pl.DataFrame) -> bytes:
    """The target's dev trial list, for model selection (a target artifact; depends on the dev set only)."""
    return _trials_bytes(dev, "dev set")


def read_trials(path: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """Labels, enrolment and test utterance ids of a VoxCeleb-format trial list."""
    labels, enrol, test = [], [], []
    for k, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise ConfigError(f"{path}:{k}: expected 'label enrol test' with label 0 or 1, got {line!r}")
        labels.append(int(parts[0]))
        enrol.append(parts[1])
        test.append(parts[2])
    return np.array(labels, dtype=np.int64), enrol, test


# ---------------------------------------------------------------------------------- training pairs


def draw_pairs(speakers: Sequence[str], genders: Sequence[str], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch of balanced training pairs over rows with these speakers and genders: for every row whose
    speaker has another clip, a same-speaker pair and a different-speaker pair (same gender when possible).
    Returns (first rows, second rows, same) in a random order."""
    spk = np.asarray(speakers, dtype=object)
    gen = np.asarray(genders, dtype=object)
    rows_of: dict[str, np.ndarray] = {}
    for s in dict.fromkeys(spk):
        rows_of[s] = np.flatnonzero(spk == s)
    anchors = [i for i in range(len(spk)) if len(rows_of[spk[i]]) > 1]
    if not anchors:
        raise ConfigError("sv: no training speaker has two clips, so there is no same-speaker pair (raise regime.n)")
    first, second, same = [], [], []
    for i in anchors:
        own = rows_of[spk[i]]
        j = own[rng.integers(len(own) - 1)]
        j = own[-1] if j == i else j  # any other clip of the speaker
        first.append(i), second.append(int(j)), same.append(1.0)
        pool = np.flatnonzero((spk != spk[i]) & (gen == gen[i]))
        if pool.size == 0:
            pool = np.flatnonzero(spk != spk[i])
        if pool.size == 0:
            raise ConfigError("sv: the cell's training rows hold a single speaker")
        first.append(i), second.append(int(pool[rng.integers(pool.size)])), same.append(0.0)
    order = rng.permutation(len(first))
    return np.array(first)[order], np.array(second)[order], np.array(same, dtype=np.float32)[order]


# ------------------------------------------------------------------------------------------- cells


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


def sv_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """EER, AUC and normalised minDCF at :data:`DCF_P_TARGETS` of one scored trial list."""
    out = {"eer": eer(scores, labels), "auc": auc(scores, labels)}
    for p in DCF_P_TARGETS:
        out[f"min_dcf_{p:g}"] = min_dcf(scores, labels, p, **DCF_COSTS)
    return out


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


SV = register(Task(
    name="sv", labels=(), label_column="client_id", primary="eer", metrics=("auc",), cell=SvCell,
    target_artifacts={TRIALS: build_trials, DEV_TRIALS: build_dev_trials},
    # pool_layers: mHuBERT's embeddings average the last so many hidden states (the study: 4)
    hparams={"pool_layers": 4},
))
