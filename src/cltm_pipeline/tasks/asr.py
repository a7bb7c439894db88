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
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

from cltm_pipeline.data.subsets import SubsetSpec, training_pool
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.tasks.registry import Task, register
from cltm_pipeline.text import normalise

__all__ = [
    "VOCAB_VERSION", "BLANK", "UNK", "WORD_DELIMITER", "ASR_HPARAMS", "build_vocab", "Vocabulary",
    "greedy_decode", "asr_scores", "duration_batches", "asr_cell", "check_asr_hparams", "UNITS",
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
    # jiwer (rapidfuzz, ~0.1 s): only when transcripts are scored, not when the Snakefile validates a config
    import jiwer

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


ASR = register(Task(
    name="asr", labels=(), label_column="sentence", primary="asr_error", metrics=("wer", "cer", "mean_utt_wer"),
    cell="cltm_pipeline.tasks.asr_cell:AsrCell", task_artifacts={"vocab.json": build_vocab}, hparams=ASR_HPARAMS, check_hparams=check_asr_hparams,
))
