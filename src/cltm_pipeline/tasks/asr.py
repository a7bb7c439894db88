"""ASR: an encoder with a CTC head over one character vocabulary per matrix, scored by corpus WER or CER.

- Text: every transcript (training targets, references, hypotheses) goes through
  :func:`cltm_pipeline.text.normalise`, one normaliser for every language.
- Vocabulary (``vocab.json``, a task artifact): the union of the characters of the normalised sentences of
  every clip any cell of the matrix could train on (each language's training pool: outside its own test
  and dev speakers, :func:`cltm_pipeline.subsets.training_pool`), sorted by code point, after the CTC
  blank, the unknown token and the word delimiter. It is built once per matrix, so the single, self and
  dual cells of a target, and every seed, share one output layer. (The study built a vocabulary per run.)
- Model: the architecture's ``load_ctc`` (mHuBERT + dropout + linear per frame), CNN feature encoder
  frozen, trained with CTC; greedy decoding (best path: argmax per frame, repeats merged, blanks dropped).
- Batches hold clips up to ``batch_seconds`` of padded audio (batch size x longest clip), in buckets of
  similar length, in a seeded order; clips are never cropped (a crop cuts words out of the transcript):
  training clips longer than ``max_clip_seconds`` are left out and counted.
- Metrics with jiwer over the test set: corpus WER and CER (errors summed over the corpus, divided by the
  reference length summed), and the study's mean per-utterance WER. ``asr_error``, the performance
  P = 1 - asr_error, is the corpus WER, or the CER for a target whose ``asr_unit`` in the languages sheet
  is ``char`` (scripts written without spaces); metrics.json says which. References that normalise to
  the empty string cannot be scored by WER; they are left out and counted (``n_test_excluded_empty``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

from ..config import ConfigError
from ..subsets import SubsetSpec, cell_manifest, training_pool
from ..text import normalise
from . import Task, register

__all__ = [
    "VOCAB_VERSION", "BLANK", "UNK", "WORD_DELIMITER", "ASR_HPARAMS", "build_vocab", "Vocabulary",
    "greedy_decode", "asr_scores", "duration_batches", "run_asr_cell", "check_asr_hparams",
]

VOCAB_VERSION = 1
BLANK, UNK, WORD_DELIMITER = "<blank>", "<unk>", "|"

#: Hyper-parameters ASR adds to :data:`cltm_pipeline.train.HPARAM_DEFAULTS` (``batch_size``,
#: ``max_seconds`` and ``eval_batch_size`` do not apply: batches are made by duration and clips are whole).
#: ``batch_seconds``: padded audio per batch (batch size x longest clip). ``max_clip_seconds``: longer
#: training clips are left out (and counted). ``select_by``: the dev metric that picks the best step
#: (default ``asr_error``: WER, or CER for targets whose unit is char — zh-*, yue, ja, th — where WER is
#: nearly degenerate; the study selected by WER everywhere). ``asr_unit``: null takes the target's unit
#: from the languages sheet (the workflow fills it per target); "word" or "char" forces one.
#: ``fp16``: mixed precision, honoured on CUDA only. ``bucket_clips``: clips per length bucket.
ASR_HPARAMS: dict[str, Any] = {
    "batch_seconds": 60.0,
    "max_clip_seconds": 20.0,
    "select_by": "asr_error",
    "asr_unit": None,
    "fp16": False,
    "bucket_clips": 64,
}
UNITS = {"word": "wer", "char": "cer"}


# ------------------------------------------------------------------------------------ vocabulary


def build_vocab(spec: SubsetSpec, tables: Mapping[str, pl.DataFrame]) -> bytes:
    """``vocab.json``: the characters of every training pool of the matrix's languages (see the module
    docstring). The same tables and spec give the same bytes; cells and seeds do not enter."""
    chars: set[str] = set()
    counts = {}
    for locale in spec.languages:
        pool = training_pool(spec, locale, tables[locale])
        text = "".join(normalise(s) for s in pool["sentence"].to_list())
        here = set(text) - {" "}
        counts[locale] = len(here)
        chars |= here
    tokens = [BLANK, UNK, WORD_DELIMITER, *sorted(chars)]
    doc = {
        "format": "cltm-asr-vocabulary",
        "version": VOCAB_VERSION,
        "normaliser": "cltm_pipeline.text.normalise",
        "languages": list(spec.languages),
        "characters_per_language": counts,
        "blank": 0,
        "unk": 1,
        "word_delimiter": 2,
        "tokens": tokens,
    }
    return (json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode("utf-8")


class Vocabulary:
    """A stored ``vocab.json``: text to label ids and back."""

    def __init__(self, doc: Mapping[str, Any]):
        if doc.get("format") != "cltm-asr-vocabulary" or doc.get("version") != VOCAB_VERSION:
            raise ConfigError(f"vocabulary: format {doc.get('format')!r} version {doc.get('version')!r}, "
                              f"expected cltm-asr-vocabulary version {VOCAB_VERSION}")
        self.tokens: list[str] = list(doc["tokens"])
        self.blank, self.unk, self.delimiter = int(doc["blank"]), int(doc["unk"]), int(doc["word_delimiter"])
        self.index = {t: k for k, t in enumerate(self.tokens)}

    @classmethod
    def read(cls, path: Path) -> "Vocabulary":
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Label ids of a normalised text: a space is the word delimiter, an unknown character ``unk``."""
        return [self.delimiter if ch == " " else self.index.get(ch, self.unk) for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of collapsed label ids (blanks already removed): the delimiter is a space, ``unk`` dropped."""
        out = []
        for i in ids:
            if i == self.delimiter:
                out.append(" ")
            elif i not in (self.blank, self.unk):
                out.append(self.tokens[i])
        return " ".join("".join(out).split())


def greedy_decode(logits: np.ndarray, frames: Sequence[int], vocab: Vocabulary) -> list[str]:
    """Best-path CTC decoding of ``[B, F, V]`` scores with ``frames[b]`` valid frames: the argmax per frame,
    repeats merged, blanks removed (a blank between two equal labels keeps both)."""
    best = np.asarray(logits).argmax(-1)
    out = []
    for b, n in enumerate(frames):
        path = best[b, : int(n)]
        if path.size:
            keep = np.ones(path.size, dtype=bool)
            keep[1:] = path[1:] != path[:-1]
            path = path[keep & (path != vocab.blank)]
        out.append(vocab.decode(path.tolist()))
    return out


# --------------------------------------------------------------------------------------- metrics


def asr_scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus WER and CER and the mean per-utterance WER of normalised texts, with jiwer.

    References that are empty are left out of every figure (WER is undefined for them) and counted in
    ``n_excluded_empty``; an empty hypothesis is all deletions. NaN figures when nothing is left."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r.strip()]
    out = {"n_scored": len(pairs), "n_excluded_empty": len(references) - len(pairs)}
    if not pairs:
        return {**out, "wer": float("nan"), "cer": float("nan"), "mean_utt_wer": float("nan")}
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    out["wer"] = float(jiwer.wer(refs, hyps))
    out["cer"] = float(jiwer.cer(refs, hyps))
    out["mean_utt_wer"] = float(np.mean([jiwer.wer(r, h) for r, h in pairs]))
    return out


# -------------------------------------------------------------------------------------- batching


def duration_batches(durations: Sequence[float], budget_s: float, rng: np.random.Generator | None,
                     bucket: int = 64) -> list[np.ndarray]:
    """Index batches whose padded audio (clips x longest clip) stays within ``budget_s`` seconds.

    With ``rng`` (training): the clips are shuffled, cut into buckets of ``bucket`` clips, sorted by length
    inside each bucket and packed greedily; the batch order is shuffled too. Without (evaluation): packed
    in order of length. Every clip is in exactly one batch; a clip longer than the budget gets its own."""
    d = np.asarray(durations, dtype=float)
    if rng is None:
        groups = [np.argsort(d, kind="stable")]
    else:
        perm = rng.permutation(d.size)
        groups = [g[np.argsort(d[g], kind="stable")] for g in np.array_split(perm, max(1, -(-d.size // bucket)))]
    batches: list[np.ndarray] = []
    for g in groups:
        cur: list[int] = []
        longest = 0.0
        for i in g:
            if cur and (len(cur) + 1) * max(longest, d[i]) > budget_s:
                batches.append(np.array(cur, dtype=np.int64))
                cur, longest = [], 0.0
            cur.append(int(i))
            longest = max(longest, d[i])
        if cur:
            batches.append(np.array(cur, dtype=np.int64))
    if rng is not None:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


# ------------------------------------------------------------------------------------------ cell


def check_asr_hparams(hp: Mapping[str, Any]) -> None:
    """The ASR hyper-parameters' values (at config load and again in the cell); a bad one is a ConfigError."""
    for key in ("batch_seconds", "max_clip_seconds"):
        if not isinstance(hp[key], (int, float)) or isinstance(hp[key], bool) or hp[key] <= 0:
            raise ConfigError(f"hparams.{key}: must be a positive number, got {hp[key]!r}")
    if hp["max_clip_seconds"] > hp["batch_seconds"]:
        raise ConfigError(f"hparams.max_clip_seconds ({hp['max_clip_seconds']}) exceeds batch_seconds ({hp['batch_seconds']})")
    if hp["select_by"] not in ("wer", "cer", "asr_error"):
        raise ConfigError(f"hparams.select_by: must be wer, cer or asr_error, got {hp['select_by']!r}")
    if hp["asr_unit"] not in (None, *UNITS):
        raise ConfigError(f"hparams.asr_unit: must be word, char or null, got {hp['asr_unit']!r}")
    if not isinstance(hp["fp16"], bool):
        raise ConfigError(f"hparams.fp16: must be true or false, got {hp['fp16']!r}")
    if not isinstance(hp["bucket_clips"], int) or hp["bucket_clips"] <= 0:
        raise ConfigError(f"hparams.bucket_clips: must be a positive integer, got {hp['bucket_clips']!r}")


def run_asr_cell(
    *, task: str, arch: str, model_dir: Path, seed_table_path: Path, test_path: Path, dev_path: Path,
    ingest_root: Path, target: str, donor: str | None, seed: int, hparams: Mapping[str, Any], out_path: Path,
    device: str = "auto", config_hash: str = "", threads: int | None = None, predictions_out: Path | None = None,
    artifacts: Mapping[str, Path] | None = None, probe_path: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one ASR cell; write ``metrics.json`` (train.run_cell's layout) and return it.

    With ``checkpoint_every`` the cell checkpoints and resumes as :func:`cltm_pipeline.train.run_cell` does
    (same file, same identity rules): a killed cell continues where it was and ends with the same metrics."""
    t_start = time.perf_counter()
    import torch

    from ..audio import SAMPLE_RATE
    from ..io import read_manifest, write_json
    from ..models import ModelError, get_architecture
    from .. import train as _train
    from ..probe import probe_model
    from ..train import (CHECKPOINT_NAME, Clips, cell_record, check_hparams, data_hash, device_description,
                         hparam_extras, lr_factor, model_provenance, resolve_device, seed_everything, versions)

    hp = check_hparams(hparams, hparam_extras(task, arch))
    check_asr_hparams(hp)
    if threads is not None:
        hp["threads"] = int(threads)
    where = f"{task}/{arch}/{target}/{donor or '-'}/seed{seed}"
    artifacts = dict(artifacts or {})
    if "vocab.json" not in artifacts:
        raise ConfigError(f"{where}: no vocab.json artifact given (the task's vocabulary)")
    vocab = Vocabulary.read(artifacts["vocab.json"])
    unit = hp["asr_unit"] or "word"
    error_key = UNITS[unit]
    select_key = error_key if hp["select_by"] == "asr_error" else hp["select_by"]

    torch.set_num_threads(hp["threads"])
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)  # CTC's CUDA backward has no deterministic kernel
    dev_t = torch.device(resolve_device(device))
    fp16 = bool(hp["fp16"]) and dev_t.type == "cuda"

    # Data: the cell's rows, transcripts normalised; empty transcripts and over-long clips left out.
    seed_table = read_manifest(Path(seed_table_path))
    cell_rows = cell_manifest(seed_table, target, donor)
    test_rows, dev_rows = read_manifest(Path(test_path)), read_manifest(Path(dev_path))
    for name, rows in (("test", test_rows), ("dev", dev_rows)):
        if set(rows["locale"].unique().to_list()) != {target}:
            raise ConfigError(f"{where}: the {name} set holds clips of {sorted(rows['locale'].unique().to_list())}, not only {target}")
    text = cell_rows["sentence"].map_elements(normalise, return_dtype=pl.String)
    empty = text.str.len_chars() == 0
    too_long = cell_rows["duration_s"] > hp["max_clip_seconds"]
    train_rows = cell_rows.filter(~empty & ~too_long)
    train_text = text.filter(~empty & ~too_long).to_list()
    if train_rows.height == 0:
        raise ConfigError(f"{where}: no training clip left (empty transcripts {int(empty.sum())}, over max_clip_seconds {int(too_long.sum())})")
    targets = [torch.tensor(vocab.encode(t), dtype=torch.long) for t in train_text]
    train_clips = Clips(train_rows, ingest_root)
    train_dur = train_rows["num_samples"].to_numpy() / SAMPLE_RATE

    def eval_set(rows: pl.DataFrame) -> dict[str, Any]:
        refs = [normalise(s) for s in rows["sentence"].to_list()]
        clips = Clips(rows, ingest_root)
        dur = rows["num_samples"].to_numpy() / SAMPLE_RATE
        batches = []
        for idx in duration_batches(dur, hp["batch_seconds"], None):
            x, n = clips.batch(idx, int(rows["num_samples"].to_numpy()[idx].max()), None)
            batches.append((idx, torch.from_numpy(x), torch.from_numpy(n)))
        return {"refs": refs, "batches": batches, "n": rows.height}

    dev_set, test_set = eval_set(dev_rows), eval_set(test_rows)

    device_desc = device_description(dev_t, hp["threads"]) + (" fp16" if fp16 else "")
    identity = {
        "task": task, "arch": arch, "target": target, "donor": donor, "seed": seed,
        "data_hash": data_hash(cell_rows, Path(test_path), Path(dev_path), artifacts), "config_hash": config_hash,
        "hparams": {k: v for k, v in hp.items() if k != "checkpoint_every"},
        "model": model_provenance(Path(model_dir)), "versions": {k: str(v) for k, v in versions().items()},
        "device": device_desc if dev_t.type == "cuda" else "cpu",
    }
    ckpt_path = Path(out_path).parent / CHECKPOINT_NAME
    checkpoint = _train._load_checkpoint(ckpt_path, identity, where)

    rng = seed_everything(seed)
    loader = getattr(get_architecture(arch), "load_ctc", None)
    if loader is None:
        raise ModelError(f"architecture {arch!r} has no CTC head (load_ctc); it cannot run the asr task")
    model = loader(Path(model_dir), len(vocab), freeze_feature_encoder=hp["freeze_feature_encoder"]).to(dev_t)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    # every epoch's batches are drawn up front: the linear schedule needs the number of steps
    plans = [duration_batches(train_dur, hp["batch_seconds"], rng, hp["bucket_clips"]) for _ in range(hp["epochs"])]
    total_steps = sum(len(p) for p in plans)
    warmup = int(hp["warmup_ratio"] * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_factor(step, total_steps, warmup, hp["lr_schedule"]))
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    def transcribe(data: Mapping[str, Any]) -> list[str]:
        model.eval()
        hyps: list[str] = [""] * data["n"]
        with torch.no_grad(), torch.autocast(device_type=dev_t.type, dtype=torch.float16, enabled=fp16):
            for idx, x, n in data["batches"]:
                logits, frames = model(x.to(dev_t), n.to(dev_t))
                for i, h in zip(idx, greedy_decode(logits.float().cpu().numpy(), frames.cpu().tolist(), vocab)):
                    hyps[int(i)] = h
        model.train()
        return hyps

    best: dict[str, Any] = {"score": -np.inf, "step": 0, "state": None, "scores": None}
    curve: list[list[float]] = []
    epoch_loss: list[float] = []
    losses: list[float] = []  # of the current epoch
    step, epoch, pos, resumed_from = 0, 0, 0, None  # pos: the next batch of plans[epoch]

    def cpu_state() -> dict[str, Any]:
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    if checkpoint is not None:  # the plans are redrawn identically from the seed; the rest is restored
        model.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        t = checkpoint["training"]
        step, epoch, pos = t["step"], t["epoch"], t["pos"]
        losses, epoch_loss, curve = list(t["losses"]), list(t["epoch_loss"]), [list(c) for c in t["curve"]]
        best = {"score": t["best_score"], "step": t["best_step"], "scores": t["best_scores"],
                "state": cpu_state() if t["best_is_current"] else t["best_state"]}
        _train._set_rng_states(checkpoint["rng"])
        resumed_from = step
        del checkpoint, t
        print(f"{where}: resuming from {ckpt_path} at step {step} of {total_steps}", file=sys.stderr, flush=True)

    def save_checkpoint() -> None:
        best_is_current = best["state"] is not None and best["step"] == step
        _train._save_checkpoint(ckpt_path, {
            "format": _train._CHECKPOINT_FORMAT, "identity": identity, "model": model.state_dict(),
            "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "training": {
                "step": step, "epoch": epoch, "pos": pos, "losses": list(losses), "epoch_loss": list(epoch_loss),
                "curve": [[int(a), float(b)] for a, b in curve], "best_score": float(best["score"]),
                "best_step": int(best["step"]), "best_scores": best["scores"],
                "best_state": None if best_is_current else best["state"], "best_is_current": best_is_current,
            },
            "rng": _train._rng_states(dev_t.type == "cuda"),
        })

    def step_done() -> None:
        if step and hp["checkpoint_every"] and step % hp["checkpoint_every"] == 0 and step < total_steps:
            save_checkpoint()
        if _train._STEP_HOOK is not None:
            _train._STEP_HOOK(step)

    def evaluate_dev(step: int) -> None:
        scores = asr_scores(dev_set["refs"], transcribe(dev_set))
        value = 1.0 - scores[select_key]  # higher is better, as every dev curve
        curve.append([step, value])
        if value > best["score"]:  # strict: ties keep the earlier state
            best.update(score=value, step=step, scores=scores, state=cpu_state())

    setup_s = time.perf_counter() - t_start
    t_compute = time.perf_counter()
    model.train()
    while epoch < hp["epochs"]:
        plan = plans[epoch]
        while pos < len(plan):
            idx = plan[pos]
            x, n = train_clips.batch(idx, int(train_rows["num_samples"].to_numpy()[idx].max()), None)
            x, n = torch.from_numpy(x).to(dev_t), torch.from_numpy(n).to(dev_t)
            labels = torch.cat([targets[i] for i in idx]).to(dev_t)
            label_len = torch.tensor([len(targets[i]) for i in idx], dtype=torch.long, device=dev_t)
            with torch.autocast(device_type=dev_t.type, dtype=torch.float16, enabled=fp16):
                logits, frames = model(x, n)
            log_probs = torch.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [F, B, V]
            loss = torch.nn.functional.ctc_loss(log_probs, labels, frames, label_len, blank=vocab.blank,
                                                reduction="mean", zero_infinity=True)
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if hp["max_grad_norm"]:
                scaler.unscale_(optimiser)
                torch.nn.utils.clip_grad_norm_(params, hp["max_grad_norm"])
            scaler.step(optimiser)
            scaler.update()
            scheduler.step()
            losses.append(float(loss.detach()) * len(idx))
            step += 1
            pos += 1
            if hp["eval_every"] and step % hp["eval_every"] == 0 and step != total_steps:
                evaluate_dev(step)
            if pos < len(plan):
                step_done()  # (an epoch's last step is done after the epoch's end below)
        epoch_loss.append(sum(losses) / train_rows.height)
        if not hp["eval_every"] or step == total_steps:
            evaluate_dev(step)
        epoch, pos, losses = epoch + 1, 0, []
        step_done()

    model.load_state_dict(best["state"])
    hyps = transcribe(test_set)
    test = asr_scores(test_set["refs"], hyps)
    compute_s = time.perf_counter() - t_compute
    probe = probe_model(model.embed, probe_path, ingest_root, hp["probe_clips"], int(round(hp["max_seconds"] * SAMPLE_RATE)),
                        hp["eval_batch_size"], dev_t, seed)

    dev_scores = best["scores"]
    result = cell_record(
        task=task, arch=arch, target=target, donor=donor, seed=seed, train_rows=train_rows, hparams=hp,
        timing={"setup_s": round(setup_s, 3), "compute_s": round(compute_s, 3)}, device=device_desc,
        data_hash=identity["data_hash"], model=identity["model"], versions=identity["versions"],
        config_hash=config_hash, probe=probe,
        metrics={
            "asr_error": test[error_key], "wer": test["wer"], "cer": test["cer"], "mean_utt_wer": test["mean_utt_wer"],
            "dev_asr_error": dev_scores[error_key], "dev_wer": dev_scores["wer"], "dev_cer": dev_scores["cer"],
        },
        primary_metric="asr_error",
        asr_error_is=error_key,  # corpus WER, or CER for a target written without spaces (asr_unit char)
        asr_unit=unit,
        selected_by=f"dev {select_key}",
        n_train_excluded={"empty_transcript": int(empty.sum()), "over_max_clip_seconds": int(too_long.sum())},
        n_test=test["n_scored"],
        n_test_excluded_empty=test["n_excluded_empty"],
        n_dev=dev_scores["n_scored"],
        vocabulary_size=len(vocab),
        training={"steps": step, "best_step": best["step"], "dev_curve": curve, "train_loss": epoch_loss},
        resumed_from_step=resumed_from,  # timing then covers the resumed part only
    )
    if predictions_out is not None:
        from ..io import write_tsv

        write_tsv(Path(predictions_out), test_rows.select("utt_id", "client_id").with_columns(
            pl.Series("reference", test_set["refs"]), pl.Series("hypothesis", hyps)))
    write_json(Path(out_path), result)
    ckpt_path.unlink(missing_ok=True)  # only unfinished cells keep one
    return result


ASR = register(Task(
    name="asr", labels=(), label_column="sentence", primary="asr_error", metrics=("wer", "cer", "mean_utt_wer"),
    run=run_asr_cell, task_artifacts={"vocab.json": build_vocab}, hparams=ASR_HPARAMS, check_hparams=check_asr_hparams,
))
