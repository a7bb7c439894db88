"""Speaker verification (DESIGN.md §1): fixed trial lists per target, four architectures, 1 - EER as P.

Trials. Per target locale, one trial list over its test speakers, and one over its dev speakers for model
selection, each a pure function of the evaluation set (independent of seed and cell), stored as a
versioned artifact in VoxCeleb's format ``label enrol test`` (1 target, 0 non-target; utterance ids).
Per speaker, up to :data:`TARGETS_PER_SPEAKER` same-speaker pairs of its clips in a hashed order; per
target trial one non-target trial with the same enrolment clip and a clip of another speaker of the same
gender, so the list is balanced and non-targets are never separable by gender alone. Evaluation
speakers never train any cell of their target (the subsets exclude them, donors included, and every
cell checks it again).

Cells. :class:`cltm_pipeline.tasks.sv_cell.SvCell` is the task's hooks for the one training loop. It trains the
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

from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from cltm_pipeline.data.subsets import SubsetSpec
from cltm_pipeline.errors import ConfigError, SubsetError
from cltm_pipeline.io import stable_hash
from cltm_pipeline.metrics import auc, eer, min_dcf
from cltm_pipeline.tasks.registry import Task, register

__all__ = ["TRIALS", "DEV_TRIALS", "TARGETS_PER_SPEAKER", "DCF_P_TARGETS", "trial_list", "read_trials",
           "build_trials", "build_dev_trials", "draw_pairs", "sv_metrics", "sv_cell", "EMBEDDING_PREFIX", "DCF_COSTS"]

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


def sv_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """EER, AUC and normalised minDCF at :data:`DCF_P_TARGETS` of one scored trial list."""
    out = {"eer": eer(scores, labels), "auc": auc(scores, labels)}
    for p in DCF_P_TARGETS:
        out[f"min_dcf_{p:g}"] = min_dcf(scores, labels, p, **DCF_COSTS)
    return out


SV = register(Task(
    name="sv", labels=(), label_column="client_id", primary="eer", metrics=("auc",), cell="cltm_pipeline.tasks.sv_cell:SvCell",
    target_artifacts={TRIALS: build_trials, DEV_TRIALS: build_dev_trials},
    # pool_layers: mHuBERT's embeddings average the last so many hidden states (the study: 4)
    hparams={"pool_layers": 4},
))
