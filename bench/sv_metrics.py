"""EER + minDCF(0.01) + minDCF(0.05) on synthetic trials: cltm_pipeline.metrics against speechbrain.

    .venv/bin/python bench/sv_metrics.py [--n 1000000] [--n-ref 5000]

speechbrain's EER loops over ~2n thresholds in Python (O(n^2) overall) and its minDCF builds an
n x 2n matrix, so it is timed on --n-ref trials; the ratio is taken on those same scores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from speechbrain.utils.metric_stats import EER, minDCF

from cltm_pipeline.metrics import eer, min_dcf


def trials(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = rng.normal(size=n) + 1.5 * labels
    return scores, labels


def ours(scores, labels) -> float:
    t0 = time.perf_counter()
    eer(scores, labels), min_dcf(scores, labels, 0.01), min_dcf(scores, labels, 0.05)
    return time.perf_counter() - t0


def reference(scores, labels) -> float:
    s, y = torch.tensor(scores), torch.tensor(labels)
    pos, neg = s[y == 1], s[y == 0]
    t0 = time.perf_counter()
    EER(pos, neg), minDCF(pos, neg, p_target=0.01), minDCF(pos, neg, p_target=0.05)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n-ref", type=int, default=5_000)
    args = ap.parse_args()
    big = trials(args.n)
    t_big = min(ours(*big) for _ in range(3))
    small = trials(args.n_ref, seed=1)
    t_ours = min(ours(*small) for _ in range(3))
    t_ref = reference(*small)
    print(f"cltm_pipeline.metrics, {args.n:,} trials: {t_big:.3f} s (EER + minDCF@0.01 + minDCF@0.05, best of 3)")
    print(f"{args.n_ref:,} trials: cltm {t_ours * 1e3:.1f} ms, speechbrain {t_ref * 1e3:.0f} ms ({t_ref / t_ours:.0f}x)")


if __name__ == "__main__":
    main()
