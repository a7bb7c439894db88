"""The ASR task's cell (:mod:`cltm_pipeline.tasks.asr` registers the task and holds its vocabulary,
batching and scoring): the hooks the training loop calls. Imported only when a cell runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import polars as pl
import torch

from cltm_pipeline.data.audio import SAMPLE_RATE, Clips
from cltm_pipeline.errors import ConfigError, ModelError
from cltm_pipeline.io import write_tsv
from cltm_pipeline.models import get_architecture
from cltm_pipeline.protocol import CellSpec, performance
from cltm_pipeline.tasks.asr import UNITS, Vocabulary, asr_scores, duration_batches, greedy_decode
from cltm_pipeline.tasks.registry import CellData, TaskCell
from cltm_pipeline.text import normalise

__all__ = ["AsrCell", "PAD_QUANTUM", "padded_length"]

#: A batch's padded length is rounded up to a multiple of this many samples (0.5 s, a whole number of
#: 320-sample frames). CPU convolution kernels are built per input shape: with every batch as long as its
#: longest clip, nearly every ASR step had a new shape and paid for new kernels (measured: ragged lengths
#: 1.8x the time per step of fixed ones); rounded, a handful of shapes recur all run long.
PAD_QUANTUM = 8000


def padded_length(longest: int) -> int:
    """The padded length of a batch whose longest clip has ``longest`` samples."""
    return -(-int(longest) // PAD_QUANTUM) * PAD_QUANTUM


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
            x, n = clips.batch(idx, padded_length(samples[idx].max()), None)
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
        x, n = self.train_clips.batch(idx, padded_length(self.train_samples[idx].max()), None)
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
