"""Speaker verification (DESIGN.md §1): fixed trial lists per target, four architectures, 1 - EER as P.

Trials. Per target locale, one trial list over its test speakers, and one over its dev speakers for model
selection, each a pure function of the evaluation set (independent of seed and cell), stored as a
versioned artifact in VoxCeleb's format ``label enrol test`` (1 target, 0 non-target; utterance ids).
Per speaker, up to :data:`TARGETS_PER_SPEAKER` same-speaker pairs of its clips in a hashed order; per
target trial one non-target trial with the same enrolment clip and a clip of another speaker of the same
gender, so the list is balanced and non-targets are never separable by gender alone. Evaluation
speakers never train any cell of their target (the subsets exclude them, donors included, and every
cell checks it again).

Cells. :func:`run_sv_cell` has :func:`cltm_pipeline.train.run_cell`'s keywords. It trains the
architecture's SV model (:mod:`cltm_pipeline.models.speaker`) on the cell's training rows, with one of
two objectives: speaker identification over the cell's training speakers (mHuBERT, ECAPA-TDNN), or
same/different pairs drawn from them with the seed (Siamese, SpeechLLM); selects the epoch with the best
dev 1 - EER; scores the test trials; writes metrics.json with train.run_cell's layout: EER, AUC and
normalised minDCF at p_target 0.01 and 0.05 (parameters beside them) and the dev EER of the selected
state. An architecture with a frozen encoder (``embedding_cache``) reads its embeddings from the
per-locale caches passed as artifacts ``emb:<locale>``; without them it embeds the cell's clips itself
(and counts the encoder's forward passes).

Checkpoints inside a cell (``checkpoint_every``) are a gender-path feature: an SV cell reruns whole.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

from ..config import ConfigError
from ..io import read_manifest, stable_hash, write_json
from ..subsets import SubsetError, SubsetSpec, cell_manifest
from . import Task, register

__all__ = ["TRIALS", "DEV_TRIALS", "TARGETS_PER_SPEAKER", "DCF_P_TARGETS", "trial_list", "read_trials",
           "build_trials", "build_dev_trials", "draw_pairs", "run_sv_cell", "EMBEDDING_PREFIX"]

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
        from ..train import Clips

        self.max_len = max_len
        self.emb = embeddings
        self.clips = Clips(rows, ingest_root) if embeddings is None else None

    def batch(self, idx: np.ndarray, rng: np.random.Generator | None, device: Any) -> tuple[Any, Any]:
        import torch

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
    from ..metrics import auc, eer, min_dcf

    out = {"eer": eer(scores, labels), "auc": auc(scores, labels)}
    for p in DCF_P_TARGETS:
        out[f"min_dcf_{p:g}"] = min_dcf(scores, labels, p, **DCF_COSTS)
    return out


def run_sv_cell(
    *,
    task: str,
    arch: str,
    model_dir: Path,
    seed_table_path: Path,
    test_path: Path,
    dev_path: Path,
    ingest_root: Path,
    target: str,
    donor: str | None,
    seed: int,
    hparams: Mapping[str, Any],
    out_path: Path,
    device: str = "auto",
    config_hash: str = "",
    threads: int | None = None,
    predictions_out: Path | None = None,
    artifacts: Mapping[str, Path] | None = None,
    probe_path: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one SV cell; write ``metrics.json`` atomically at ``out_path`` (see the module doc).

    ``artifacts`` must hold :data:`TRIALS` and :data:`DEV_TRIALS`, and for a frozen-encoder architecture
    optionally ``emb:<locale>`` cache manifests of every locale of the cell. ``predictions_out``: the
    test trials' scores as a TSV (label, enrol, test, score)."""
    t_start = time.perf_counter()
    import torch

    from ..audio import SAMPLE_RATE
    from ..models import get_architecture
    from ..probe import probe_model
    from ..train import (cell_record, check_hparams, data_hash, device_description, hparam_extras, lr_factor,
                         model_provenance, resolve_device, seed_everything, versions)

    artifacts = dict(artifacts or {})
    architecture = get_architecture(arch)
    hp = check_hparams(hparams, hparam_extras(task, arch))
    if threads is not None:
        hp["threads"] = int(threads)
    where = f"{task}/{arch}/{target}/{donor or '-'}/seed{seed}"
    for name in (TRIALS, DEV_TRIALS):
        if name not in artifacts:
            raise ConfigError(f"{where}: the {name} artifact is missing (built by the target_artifact rule)")

    torch.set_num_threads(hp["threads"])
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    dev_t = torch.device(resolve_device(device))

    seed_table = read_manifest(Path(seed_table_path))
    train_rows = cell_manifest(seed_table, target, donor)
    test_rows, dev_rows = read_manifest(Path(test_path)), read_manifest(Path(dev_path))
    eval_speakers = set(test_rows["client_id"].to_list()) | set(dev_rows["client_id"].to_list())
    leak = train_rows.filter(pl.col("client_id").is_in(list(eval_speakers)))
    if leak.height:
        raise SubsetError(f"{where}: training clip {leak['utt_id'][0]} ({leak['locale'][0]}) is by an evaluation speaker")
    test_trials = _trial_index(test_rows, artifacts[TRIALS], where)
    dev_trials = _trial_index(dev_rows, artifacts[DEV_TRIALS], where)
    speakers = sorted(set(train_rows["client_id"].to_list()))
    y_train = np.array([speakers.index(s) for s in train_rows["client_id"].to_list()], dtype=np.int64)
    max_len = int(hp["max_seconds"] * SAMPLE_RATE)
    hashed = data_hash(train_rows, Path(test_path), Path(dev_path), artifacts)

    rng = seed_everything(seed)
    model = architecture.load_sv(Path(model_dir), len(speakers), hp).to(dev_t)

    # Inputs: audio, or a frozen encoder's embeddings (from the caches, else computed here and counted).
    embed_s, forwards = 0.0, 0
    if model.inputs == "embeddings":
        t_emb = time.perf_counter()
        caches = {n[len(EMBEDDING_PREFIX):]: p for n, p in artifacts.items() if n.startswith(EMBEDDING_PREFIX)}
        if caches:
            from ..embeddings import load_cache

            # one read of the cell's own locales (the target and its donor), not of every language's store
            parts = (train_rows, dev_rows, test_rows)
            needed = sorted({target, *train_rows["locale"].unique().to_list()})
            missing = [loc for loc in needed if loc not in caches]
            if missing:
                raise ConfigError(f"{where}: no embedding cache (artifact {EMBEDDING_PREFIX}{missing[0]}) for {missing[0]}")
            ids = [u for r in parts for u in r["utt_id"].to_list()]
            every = load_cache([caches[loc] for loc in needed], ids)
            cuts = np.cumsum([r.height for r in parts])[:-1]
            embs = np.split(every, cuts)
        else:
            from ..embeddings import embed_rows
            from ..models.speechllm import FORWARDS

            before = FORWARDS["utterances"]
            embed = architecture.embedder(Path(model_dir), dev_t)
            embs = [embed_rows(embed, r, ingest_root, hp["max_seconds"], hp["eval_batch_size"], dev_t)
                    for r in (train_rows, dev_rows, test_rows)]
            forwards = FORWARDS["utterances"] - before
        embed_s = time.perf_counter() - t_emb
        model.fit(torch.from_numpy(embs[0]).to(dev_t))
    else:
        embs = [None, None, None]
    train_in, dev_in, test_in = (_Inputs(r, ingest_root, max_len, e) for r, e in zip((train_rows, dev_rows, test_rows), embs))

    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    genders = train_rows["gender"].to_list()
    client = train_rows["client_id"].to_list()
    if model.objective == "pairs":
        units = len(draw_pairs(client, genders, np.random.default_rng(0))[0])  # pairs per epoch (a constant)
    else:
        units = len(y_train)
    steps_per_epoch = -(-units // hp["batch_size"])
    total_steps = steps_per_epoch * hp["epochs"]
    warmup = int(hp["warmup_ratio"] * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_factor(step, total_steps, warmup, hp["lr_schedule"]))

    def embed_all(inputs: _Inputs, n_rows: int) -> Any:
        out = []
        for lo in range(0, n_rows, hp["eval_batch_size"]):
            x, n = inputs.batch(np.arange(lo, min(lo + hp["eval_batch_size"], n_rows)), None, dev_t)
            out.append(model.embed(x, n))
        return torch.cat(out)

    def score_trials(inputs: _Inputs, n_rows: int, trials: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            emb = embed_all(inputs, n_rows)
            _, a, b = trials
            scores = model.score(emb[torch.from_numpy(a)], emb[torch.from_numpy(b)]).float().cpu().numpy()
        model.train()
        return scores.astype(np.float64)

    best: dict[str, Any] = {"score": -np.inf, "step": 0, "state": None, "eer": None}
    curve: list[list[float]] = []
    epoch_loss: list[float] = []

    def evaluate_dev(step: int) -> None:
        e = sv_metrics(score_trials(dev_in, dev_rows.height, dev_trials), dev_trials[0])["eer"]
        curve.append([step, 1.0 - e])
        if 1.0 - e > best["score"]:  # strict: ties keep the earlier state
            best.update(score=1.0 - e, step=step, eer=e,
                        state={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})

    setup_s = time.perf_counter() - t_start
    t_compute = time.perf_counter()
    model.train()
    step = 0
    for _ in range(hp["epochs"]):
        losses = []
        if model.objective == "pairs":
            first, second, same = draw_pairs(client, genders, rng)
            batches = [(first[lo:lo + hp["batch_size"]], second[lo:lo + hp["batch_size"]], same[lo:lo + hp["batch_size"]])
                       for lo in range(0, len(first), hp["batch_size"])]
        else:
            order = rng.permutation(len(y_train))
            batches = [(order[lo:lo + hp["batch_size"]],) for lo in range(0, len(order), hp["batch_size"])]
        for batch in batches:
            if model.objective == "pairs":
                i, j, s = batch
                x1, n1 = train_in.batch(i, rng, dev_t)
                x2, n2 = train_in.batch(j, rng, dev_t)
                if n1 is None:
                    e1, e2 = model.embed(x1, None), model.embed(x2, None)
                else:  # one forward over both sides: batch statistics (BatchNorm) see the whole pair batch
                    width = max(x1.shape[1], x2.shape[1])
                    x = torch.cat([torch.nn.functional.pad(x1, (0, width - x1.shape[1])),
                                   torch.nn.functional.pad(x2, (0, width - x2.shape[1]))])
                    e1, e2 = model.embed(x, torch.cat([n1, n2])).split(len(i))
                loss = model.pair_loss(e1, e2, torch.from_numpy(s).to(dev_t))
                size = len(i)
            else:
                (idx,) = batch
                x, n = train_in.batch(idx, rng, dev_t)
                loss = model.speaker_loss(x, n, torch.from_numpy(y_train[idx]).to(dev_t))
                size = len(idx)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if hp["max_grad_norm"]:
                torch.nn.utils.clip_grad_norm_(params, hp["max_grad_norm"])
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()) * size)
            step += 1
            if hp["eval_every"] and step % hp["eval_every"] == 0 and step != total_steps:
                evaluate_dev(step)
        epoch_loss.append(sum(losses) / max(1, units))
        if not hp["eval_every"] or step == total_steps:
            evaluate_dev(step)

    model.load_state_dict(best["state"])
    test_scores = score_trials(test_in, test_rows.height, test_trials)
    test_metrics = sv_metrics(test_scores, test_trials[0])
    compute_s = time.perf_counter() - t_compute
    # cached-embedding models (speechllm) never see audio: there is nothing of theirs to probe
    probe = probe_model(model.embed, probe_path if model.inputs == "audio" else None, ingest_root, hp["probe_clips"],
                        max_len, hp["eval_batch_size"], dev_t, seed)

    result = cell_record(
        task=task, arch=arch, target=target, donor=donor, seed=seed, train_rows=train_rows, hparams=hp,
        timing={"setup_s": round(setup_s, 3), "compute_s": round(compute_s, 3), "embed_s": round(embed_s, 3),
                "encoder_forwards": forwards},
        device=device_description(dev_t, hp["threads"]), data_hash=hashed, model=model_provenance(Path(model_dir)),
        versions={k: str(v) for k, v in versions().items()}, config_hash=config_hash, probe=probe,
        metrics={**test_metrics, "dev_eer": float(best["eer"])},
        dcf={**DCF_COSTS, "p_target": list(DCF_P_TARGETS), "normalised": True},
        primary_metric="eer",
        n_train_speakers=len(speakers),
        n_test=int(test_trials[0].size),
        n_test_targets=int(test_trials[0].sum()),
        n_dev=int(dev_trials[0].size),
        trials={"test": Path(artifacts[TRIALS]).name, "dev": Path(artifacts[DEV_TRIALS]).name},
        training={"objective": model.objective, "steps": step, "best_step": best["step"], "dev_curve": curve,
                  "train_loss": epoch_loss},
        resumed_from_step=None,
    )
    if predictions_out is not None:
        from ..io import write_tsv

        labels, a, b = test_trials
        ids = test_rows["utt_id"].to_list()
        write_tsv(Path(predictions_out), pl.DataFrame({"label": labels.tolist(), "enrol": [ids[k] for k in a],
                                                       "test": [ids[k] for k in b], "score": test_scores.tolist()}))
    write_json(Path(out_path), result)
    return result


SV = register(Task(
    name="sv", labels=(), label_column="client_id", primary="eer", metrics=("auc",), run=run_sv_cell,
    target_artifacts={TRIALS: build_trials, DEV_TRIALS: build_dev_trials},
    # pool_layers: mHuBERT's embeddings average the last so many hidden states (the study: 4)
    hparams={"pool_layers": 4},
))
