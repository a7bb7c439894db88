"""CLTM completion on the study's real matrices: hide dual cells at random, predict them, score the predictions.

For ASR (9 x 9) and gender (54 x 54) from ../shared/realworld/study_matrices, at 25 %, 50 % and 75 % of the
off-diagonal cells measured (5 random draws each), every model of ``cltm_pipeline.analysis.completion``
predicts the hidden cells. Printed per model: median and 90th-percentile absolute error of the predicted cells
(pooled over the draws), the median as a ratio of the row-mean baseline's, and the coverage of the 90 %
prediction intervals. ``auto`` chooses its model per matrix by cross-validation on the measured cells only.

    .venv/bin/python bench/completion.py [--draws 5] [--matrices DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cltm_pipeline.analysis.completion import complete, read_wide

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("row_mean", "additive", "lowrank1", "lowrank2", "auto")


def run(path: Path, fractions: list[float], draws: int) -> None:
    languages, truth = read_wide(path)
    off = ~np.eye(len(languages), dtype=bool)
    cells = np.argwhere(off)
    print(f"\n{path.stem} ({len(languages)} x {len(languages)}, {len(cells)} dual cells)")
    print(f"{'measured':>8} {'model':<9} {'median':>7} {'p90':>7} {'x row-mean':>10} {'90% cover':>9}  chosen")
    for frac in fractions:
        errs: dict[str, list[np.ndarray]] = {m: [] for m in MODELS}
        cover: dict[str, list[np.ndarray]] = {m: [] for m in MODELS}
        chosen: list[str] = []
        for d in range(draws):
            rng = np.random.default_rng([d, int(frac * 100)])
            hide = cells[rng.permutation(len(cells))[: round(len(cells) * (1 - frac))]]
            hidden = np.zeros_like(off)
            hidden[hide[:, 0], hide[:, 1]] = True
            observed = np.where(hidden, np.nan, truth)
            for m in MODELS:
                r = complete(languages, observed, model=m, level=0.9, seed=d)
                errs[m].append(np.abs(r.C[hidden] - truth[hidden]))
                cover[m].append((truth[hidden] >= r.lo[hidden]) & (truth[hidden] <= r.hi[hidden]))
                if m == "auto":
                    chosen.append(r.model)
        base = float(np.median(np.concatenate(errs["row_mean"])))
        for m in MODELS:
            e, c = np.concatenate(errs[m]), np.concatenate(cover[m])
            note = ", ".join(f"{k} {chosen.count(k)}" for k in sorted(set(chosen))) if m == "auto" else ""
            print(f"{frac:>8.0%} {m:<9} {np.median(e):>7.3f} {np.quantile(e, 0.9):>7.3f} {np.median(e) / base:>10.2f} "
                  f"{c.mean():>9.1%}  {note}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--matrices", type=Path, default=ROOT.parent / "shared" / "realworld" / "study_matrices")
    args = ap.parse_args()
    for name in ("asr_mhubert.tsv", "gender_mhubert.tsv"):
        run(args.matrices / name, [0.25, 0.5, 0.75], args.draws)
