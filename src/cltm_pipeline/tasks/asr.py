"""ASR: an encoder with a CTC head over one character vocabulary per matrix, scored by corpus WER or CER.

- Text: every transcript (training targets, references, hypotheses) goes through
  :func:`cltm_pipeline.text.normalise`, one normaliser for every language.
- Vocabulary (``vocab.json``, a task artifact): the union of the characters of the normalised sentences of
  every clip any cell of the matrix could train on (each language's training pool: outside its own test
  and dev speakers, :func:`cltm_pipeline.data.subsets.training_pool`), sorted by code point, after the CTC
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
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jiwer
import numpy as np
import polars as pl
import torch

from cltm_pipeline.data.audio import SAMPLE_RATE, Clips
from cltm_pipeline.data.subsets import SubsetSpec, training_pool
from cltm_pipeline.errors import ConfigError, ModelError
from cltm_pipeline.io import write_tsv
from cltm_pipeline.models import get_architecture
from cltm_pipeline.protocol import CellSpec, performance
from cltm_pipeline.tasks.registry import CellData, Task, TaskCell, register
from cltm_pipeline.text import normalise

__all__ = [
    "VOCAB_VERSION", "BLANK", "UNK", "WORD_DELIMITER", "ASR_HPARAMS", "build_vocab", "Vocabulary",
    "greedy_decode", "asr_scores", "duration_batches", "AsrCell", "check_asr_hparams",
]

VOCAB_VERSION = 1
BLANK, UNK, WORD_DELIMITER = "<blank>", "<unk>", "|"

#: Hyper-parameters ASR adds to :data:`cltm_pipeline.training.hparams.HPARAM_DEFAULTS` (``batch_size``,
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


class AsrCell(TaskCell):
    """One ASR cell (see the module docstring): CTC over the matrix's vocabulary, duration batches, selection
    on dev by ``select_by``. Predictions: the test set's references and hypotheses as a TSV."""

    def __init__(self, spec: CellSpec, hp: Mapping[str, Any], data: CellData, device: Any):
        super().__init__(spec, hp, data, device)
        if "vocab.json" not in spec.artifacts:
            raise ConfigError(f"{spec.where}: no vocab.json artifact given (the task's vocabulary)")
        self.vocab = Vocabulary.read(spec.artifacts["vocab.json"])
        self.unit = hp["asr_unit"] or "word"
        self.error_key = UNITS[self.unit]
        self.select_key = self.error_key if hp["select_by"] == "asr_error" else hp["select_by"]
        self.fp16 = bool(hp["fp16"]) and device.type == "cuda"
        # transcripts normalised; empty transcripts and over-long clips left out (and counted)
        text = data.train["sentence"].map_elements(normalise, return_dtype=pl.String)
        empty, too_long = text.str.len_chars() == 0, data.train["duration_s"] > hp["max_clip_seconds"]
        self.excluded = {"empty_transcript": int(empty.sum()), "over_max_clip_seconds": int(too_long.sum())}
        self.train_rows = data.train.filter(~empty & ~too_long)
        if self.train_rows.height == 0:
            raise ConfigError(f"{spec.where}: no training clip left (empty transcripts {self.excluded['empty_transcript']}, "
                              f"over max_clip_seconds {self.excluded['over_max_clip_seconds']})")
        self.targets = [torch.tensor(self.vocab.encode(t), dtype=torch.long) for t in text.filter(~empty & ~too_long).to_list()]
        self.train_clips = Clips(self.train_rows, spec.ingest_root)
        self.train_samples = self.train_rows["num_samples"].to_numpy()
        self.dev_set, self.test_set = self._eval_set(data.dev), self._eval_set(data.test)
        self.hyps: list[str] = []

    def _eval_set(self, rows: pl.DataFrame) -> dict[str, Any]:
        clips, samples = Clips(rows, self.spec.ingest_root), rows["num_samples"].to_numpy()
        batches = []
        for idx in duration_batches(samples / SAMPLE_RATE, self.hp["batch_seconds"], None):
            x, n = clips.batch(idx, int(samples[idx].max()), None)
            batches.append((idx, torch.from_numpy(x), torch.from_numpy(n)))
        return {"refs": [normalise(s) for s in rows["sentence"].to_list()], "batches": batches, "n": rows.height}

    def build(self, rng: np.random.Generator) -> None:
        loader = getattr(get_architecture(self.spec.arch), "load_ctc", None)
        if loader is None:
            raise ModelError(f"architecture {self.spec.arch!r} has no CTC head (load_ctc); it cannot run the asr task")
        self.model = loader(self.spec.model_dir, len(self.vocab),
                            freeze_feature_encoder=self.hp["freeze_feature_encoder"]).to(self.device)
        # every epoch's batches are drawn up front: the linear schedule needs the number of steps
        self.plans = [duration_batches(self.train_samples / SAMPLE_RATE, self.hp["batch_seconds"], rng, self.hp["bucket_clips"])
                      for _ in range(self.hp["epochs"])]
        self.total_steps = sum(len(p) for p in self.plans)
        self.units = self.train_rows.height

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list[Any]:
        return self.plans[epoch]

    def loss(self, idx: Any, rng: np.random.Generator) -> tuple[Any, int]:
        device = self.device
        x, n = self.train_clips.batch(idx, int(self.train_samples[idx].max()), None)
        x, n = torch.from_numpy(x).to(device), torch.from_numpy(n).to(device)
        labels = torch.cat([self.targets[i] for i in idx]).to(device)
        label_len = torch.tensor([len(self.targets[i]) for i in idx], dtype=torch.long, device=device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=self.fp16):
            logits, frames = self.model(x, n)
        log_probs = torch.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [F, B, V]
        loss = torch.nn.functional.ctc_loss(log_probs, labels, frames, label_len, blank=self.vocab.blank,
                                            reduction="mean", zero_infinity=True)
        return loss, len(idx)

    def _transcribe(self, data: Mapping[str, Any]) -> list[str]:
        self.model.eval()
        hyps: list[str] = [""] * data["n"]
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.fp16):
            for idx, x, n in data["batches"]:
                logits, frames = self.model(x.to(self.device), n.to(self.device))
                for i, h in zip(idx, greedy_decode(logits.float().cpu().numpy(), frames.cpu().tolist(), self.vocab)):
                    hyps[int(i)] = h
        self.model.train()
        return hyps

    def dev_score(self) -> tuple[float, Any]:
        scores = asr_scores(self.dev_set["refs"], self._transcribe(self.dev_set))
        return performance(self.select_key, scores[self.select_key]), scores

    def test(self, best_extra: Any) -> dict[str, Any]:
        self.hyps = self._transcribe(self.test_set)
        test, dev, key = asr_scores(self.test_set["refs"], self.hyps), best_extra, self.error_key
        return {
            "metrics": {"asr_error": test[key], "wer": test["wer"], "cer": test["cer"], "mean_utt_wer": test["mean_utt_wer"],
                        "dev_asr_error": dev[key], "dev_wer": dev["wer"], "dev_cer": dev["cer"]},
            "primary_metric": "asr_error",
            "asr_error_is": key,  # corpus WER, or CER for a target written without spaces (asr_unit char)
            "asr_unit": self.unit, "selected_by": f"dev {self.select_key}", "n_train_excluded": self.excluded,
            "n_test": test["n_scored"], "n_test_excluded_empty": test["n_excluded_empty"], "n_dev": dev["n_scored"],
            "vocabulary_size": len(self.vocab),
        }

    def probe_input(self) -> tuple[Callable[..., Any] | None, int]:
        return self.model.embed, int(round(self.hp["max_seconds"] * SAMPLE_RATE))

    def device_note(self) -> str:
        return " fp16" if self.fp16 else ""

    def write_predictions(self, path: Path) -> None:
        write_tsv(Path(path), self.data.test.select("utt_id", "client_id").with_columns(
            pl.Series("reference", self.test_set["refs"]), pl.Series("hypothesis", self.hyps)))


ASR = register(Task(
    name="asr", labels=(), label_column="sentence", primary="asr_error", metrics=("wer", "cer", "mean_utt_wer"),
    cell=AsrCell, task_artifacts={"vocab.json": build_vocab}, hparams=ASR_HPARAMS, check_hparams=check_asr_hparams,
))
