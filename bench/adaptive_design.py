"""Adaptive against random choice of dual cells, simulated on the study's real matrices.

The published matrix is the truth. Measuring a cell reveals it plus Gaussian noise of SD sigma_target:
the study prints no seeds or SE, so sigma is estimated from the matrix itself, per target row, as the robust
SD (1.4826 x MAD) of the row's 10-fold cross-validated residuals of the rank-1 completion on the full
matrix. That residual holds the seed noise *and* what the model cannot fit, so it bounds the noise from
above (``--noise X`` sets one SD for every cell instead, e.g. 0.01 for figure rounding only).

Every draw starts from the same initial design (``--initial`` of the dual cells, spread evenly over rows and
columns); each rule then adds batches of ``--batch`` of the cells until ``--stop``. After each batch,
``cltm complete``'s model (auto, CV-conformal 90 % intervals) fills the rest, and two whole-matrix figures
are taken over ALL off-diagonal cells:
- error: mean |value - truth|, value = the noisy measurement for a measured cell, the prediction otherwise;
- width: mean 90 % interval width, 2 x 1.645 x sigma for a measured cell, hi - lo for a predicted one.
Targets are what random choice reaches (mean over draws) at ``--levels`` of the cells measured; the cells a
rule needs to reach each (linear interpolation on its mean curve) are printed with their ratio to random's.
The ``oracle`` row picks by each prediction's true error (it knows the matrix): no rule can expect to beat
it, so it bounds what adaptive choice can gain on this matrix and metric. Also printed: the coverage of the predicted cells' intervals at the last batch (adaptive picks are not
exchangeable with the measured cells, so coverage is checked, not assumed).

    .venv/bin/python bench/adaptive_design.py [--draws 5] [--matrices DIR] [--noise row|X] [--only asr|gender]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cltm_pipeline.analysis.completion import complete, fit_predict, read_wide
from cltm_pipeline.analysis.design import RULES, initial_design, next_batch, pick

ROOT = Path(__file__).resolve().parents[1]
Z90 = 1.6449
#: The reference: random cells from the first one on (no initial design); every other rule starts from the
#: initial design (so ``random`` alone measures what the even initial spread is worth).
PURE = "pure_random"
#: Not a rule anyone can run: picks by the true error of each prediction, the bound on what a rule could gain.
ORACLE = "oracle"


def noise_sd(truth: np.ndarray, seed: int = 0, folds: int = 10) -> np.ndarray:
    """Per target row: 1.4826 x MAD of the 10-fold CV residuals of the rank-1 completion on the full matrix."""
    n = len(truth)
    off = ~np.eye(n, dtype=bool)
    cells = np.argwhere(off)
    order = np.random.default_rng([seed, 0xAB]).permutation(len(cells))
    resid = np.full((n, n), np.nan)
    for f in range(folds):
        held = cells[order[f::folds]]
        train = off.copy()
        train[held[:, 0], held[:, 1]] = False
        pred = fit_predict(truth, train, "lowrank1", seed=seed)
        resid[held[:, 0], held[:, 1]] = truth[held[:, 0], held[:, 1]] - pred[held[:, 0], held[:, 1]]
    return np.array([1.4826 * np.median(np.abs(r[np.isfinite(r)] - np.median(r[np.isfinite(r)]))) for r in resid])


def simulate(truth: np.ndarray, sigma: np.ndarray, rule: str, draw: int, initial: float, batch: float,
             stop: float) -> list[tuple[int, float, float, float]]:
    """One draw of one rule: (cells measured, whole-matrix error, mean width, predicted coverage) per batch."""
    n = len(truth)
    off = ~np.eye(n, dtype=bool)
    total = n * (n - 1)
    noisy = truth + sigma[:, None] * np.random.default_rng([draw, 0xE4]).standard_normal((n, n))
    if rule == PURE:  # no design at all: the first cells at random too
        first = np.random.default_rng([draw, 0x5A]).permutation(np.argwhere(off))[: round(initial * total)]
        obs = np.zeros((n, n), dtype=bool)
        obs[first[:, 0], first[:, 1]] = True
    else:
        obs = initial_design(n, round(initial * total), seed=draw)
    step = max(1, round(batch * total))
    curve = []
    while True:
        values = np.where(obs, noisy, np.nan)
        np.fill_diagonal(values, 1.0)
        res = complete([str(i) for i in range(n)], values, model="auto", seed=draw)
        value = np.where(obs, noisy, res.C)
        width = np.where(obs, 2 * Z90 * sigma[:, None], res.hi - res.lo)
        pred = off & ~obs
        cover = float(((truth >= res.lo) & (truth <= res.hi))[pred].mean()) if pred.any() else float("nan")
        curve.append((int(obs.sum()), float(np.abs(value - truth)[off].mean()), float(width[off].mean()), cover))
        if obs.sum() + step > stop * total:
            return curve
        if rule == ORACLE:  # knows the truth: the expected drop in each cell's error if measured
            gain = np.abs(res.C - truth) - np.sqrt(2 / np.pi) * sigma[:, None]
            picked = pick(np.where(off & ~obs, gain, -np.inf), step, seed=draw)
        else:
            picked, _ = next_batch(values, obs, step, rule="random" if rule == PURE else rule, model=res.model,
                                   seed=draw * 1000 + int(obs.sum()), noise=np.broadcast_to(sigma[:, None], (n, n)))
        obs = obs.copy()
        obs[picked[:, 0], picked[:, 1]] = True


def cells_to_reach(curve: np.ndarray, target: float) -> float:
    """First number of cells at which a decreasing curve (cells, value) reaches ``target`` (interpolated)."""
    for (c0, v0), (c1, v1) in zip(curve[:-1], curve[1:]):
        if v0 <= target:
            return float(c0)
        if v1 <= target:
            return float(c0 + (c1 - c0) * (v0 - target) / (v0 - v1))
    return float(curve[0, 0]) if curve[0, 1] <= target else float("nan")


def run(path: Path, args: argparse.Namespace) -> None:
    languages, truth = read_wide(path)
    n = len(languages)
    total = n * (n - 1)
    sigma = noise_sd(truth) if args.noise == "row" else np.full(n, float(args.noise))
    t0 = time.perf_counter()
    curves = {r: np.array([simulate(truth, sigma, r, d, args.initial, args.batch, args.stop)
                           for d in range(args.draws)]) for r in args.rules}
    mean = {r: c.mean(axis=0) for r, c in curves.items()}  # (batches, 4): same cell counts in every draw
    print(f"\n{path.stem}: {n} x {n}, {total} dual cells; noise SD per measured cell: median {np.median(sigma):.3f} "
          f"(range {sigma.min():.3f}-{sigma.max():.3f}, {args.noise}); {args.draws} draws; "
          f"initial {args.initial:.0%}, batches of {args.batch:.0%}; {time.perf_counter() - t0:.0f} s")
    cells = mean[PURE][:, 0]
    for col, name in ((1, "error"), (2, "width")):
        targets = [float(np.interp(f * total, cells, mean[PURE][:, col])) for f in args.levels]
        print(f"  whole-matrix mean {name}: cells needed (fraction of grid) [x pure random]")
        print("  " + f"{'rule':<18}" + "".join(f"{name} <= {t:.3f} (pure rand {f:.0%})".rjust(30) for t, f in zip(targets, args.levels)))
        for r in args.rules:
            row = []
            for t in targets:
                need = cells_to_reach(mean[r][:, [0, col]], t)
                ref = cells_to_reach(mean[PURE][:, [0, col]], t)
                first = "<=" if need == mean[r][0, 0] else ""  # reached at the start: a bound
                row.append(f"{first}{need:.0f} ({need / total:.0%}) [x{need / ref:.2f}]" if np.isfinite(need) else "not reached")
            print("  " + f"{r:<18}" + "".join(x.rjust(30) for x in row))
    print(f"  predicted-cell coverage of the 90 % intervals, mean over draws, at each rule's last batch "
          f"({cells[-1]:.0f} cells measured): "
          + ", ".join(f"{r} {mean[r][-1, 3]:.1%}" for r in args.rules))
    print("  whole-matrix error per batch (mean over draws): cells " + " ".join(f"{c:.0f}" for c in cells))
    for r in args.rules:
        print(f"    {r:<18}" + " ".join(f"{v:.3f}" for v in mean[r][:, 1]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--matrices", type=Path, default=ROOT.parent / "shared" / "realworld" / "study_matrices")
    ap.add_argument("--noise", default="row", help="'row' (estimated per target, see above) or one SD")
    ap.add_argument("--initial", type=float, default=0.2, help="fraction measured by the initial design")
    ap.add_argument("--batch", type=float, default=0.05, help="fraction of the dual cells per batch")
    ap.add_argument("--stop", type=float, default=0.8, help="last fraction measured")
    ap.add_argument("--levels", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6])
    ap.add_argument("--only", choices=("asr", "gender"))
    ap.add_argument("--rules", nargs="+", choices=[*RULES, ORACLE], default=[*RULES, ORACLE], help="besides pure_random (the reference)")
    args = ap.parse_args()
    args.rules = [PURE, *(r for r in args.rules if r != PURE)]
    for name in ("asr_mhubert.tsv", "gender_mhubert.tsv"):
        if args.only is None or name.startswith(args.only):
            run(args.matrices / name, args)
