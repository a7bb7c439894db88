"""Time per ASR training step of the demo's tiny HuBERT + CTC with ragged batch lengths (each batch padded to
its longest clip, as before) against lengths rounded up to ``asr_cell.PAD_QUANTUM`` (0.5 s), side by side.

Usage: python bench/asr_padding.py [--steps 40] [--threads 1]

Batches of 1-5 clips of 1.4-4.4 s (the demo's ASR clips), drawn with a fixed seed; the same draws for both
ways, interleaved in blocks so that load on a shared machine hits both alike. Prints ms per step and the
ratio. CPU convolution kernels are built per input shape: ragged lengths give nearly every step a new shape.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cltm_pipeline.models import get_architecture
from cltm_pipeline.models.hubert_nn import load_ctc
from cltm_pipeline.tasks.asr_cell import padded_length


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = get_architecture("mhubert").prepare("tiny", Path(tmp) / "tiny")
        model = load_ctc(model_dir, 40, freeze_feature_encoder=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    batches = [rng.integers(int(1.4 * 16000), int(4.4 * 16000), size=int(rng.integers(1, 6))) for _ in range(args.steps)]

    def step(lengths: np.ndarray, width: int) -> None:
        x = torch.randn(len(lengths), width) * 0.1
        n = torch.from_numpy(lengths.astype(np.int64))
        logits, frames = model(x, n)
        lp = torch.log_softmax(logits, -1).transpose(0, 1)
        labels = torch.randint(1, 40, (int(frames.min()) // 2 * len(lengths),))
        loss = torch.nn.functional.ctc_loss(lp, labels, frames, torch.full((len(lengths),), int(frames.min()) // 2))
        opt.zero_grad()
        loss.backward()
        opt.step()

    ways = {"ragged (longest clip)": lambda b: int(b.max()), "rounded to 0.5 s": lambda b: padded_length(b.max())}
    spent = dict.fromkeys(ways, 0.0)
    block = 10
    for lo in range(0, len(batches), block):  # interleaved blocks: shared-machine load hits both ways alike
        for name, width in ways.items():
            t = time.perf_counter()
            for b in batches[lo:lo + block]:
                step(b, width(b))
            spent[name] += time.perf_counter() - t
    for name, s in spent.items():
        print(f"{name:24s} {s / len(batches) * 1000:7.1f} ms/step")
    ragged, rounded = spent.values()
    print(f"ragged / rounded: {ragged / rounded:.2f}x ({len(batches)} steps each, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
