"""Calibration of the CLTM's per-cell inference, by simulation with a known answer (issue 12).

Simulated studies (cltm_pipeline.analysis.simulate: per-seed offsets shared by the cells of a target and by the
targets drawing a donor, independent cell noise) run through the same ``build_matrices`` and
``transfer_summary`` as the workflow. For n = 3, 5 and 10 seeds it prints nominal against actual for:

- null: every off-diagonal C = 0 (and, separately, every C = 1): the share of matrices with any BH
  discovery at q < 0.05 (nominal: at most 5 %, the family-wise rate BH gives under the complete null);
- mix: 30 % of cells with a true effect (C = 0.8), the rest 0: the FDR (nominal ≤ 5 %) and the power;
- coverage: C uniform in [-0.5, 1.5], self gain 5 noise SD: the 95 % Fieller coverage per cell, and of the
  whole-matrix mean off-diagonal C;
- ill-conditioned rows (self gain 0.5 noise SD): how often the row is flagged, the share of intervals that
  are two rays or the whole line, and their coverage.

Run: ``.venv/bin/python bench/inference_calibration.py [--reps 200] [--languages 20]``. Monte Carlo SE of a
share p over R matrices is sqrt(p (1 - p) / R): about 1.5 points for 5 % at R = 200.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from cltm_pipeline.analysis.matrix import build_matrices
from cltm_pipeline.analysis.properties import per_seed_arrays, transfer_summary
from cltm_pipeline.analysis.simulate import simulate_study

ALPHA = 0.05


def _off(L: int) -> np.ndarray:
    return ~np.eye(L, dtype=bool)


def calibrate(n_seeds: int, reps: int, L: int, seed: int = 0, test: str = "t") -> dict[str, float]:
    """Every figure of the module docstring for one seed count."""
    rng = np.random.default_rng([seed, n_seeds])
    off = _off(L)
    well = np.full(L, 5.0)
    any_zero = any_one = 0
    fdr, power, cover, cover_bounded, bounded, mean_cover = [], [], [], [], [], []
    ill_flag, ill_unbounded, ill_cover = [], [], []
    for _ in range(reps):
        res = build_matrices(simulate_study(rng, np.zeros((L, L)), well, n_seeds).runs, test=test)
        any_zero += bool((res.q_zero[off] < ALPHA).any())
        res = build_matrices(simulate_study(rng, np.ones((L, L)), well, n_seeds).runs, test=test)
        any_one += bool((res.q_one[off] < ALPHA).any())

        effect = (rng.random((L, L)) < 0.3) & off
        st = simulate_study(rng, np.where(effect, 0.8, 0.0), well, n_seeds)
        res = build_matrices(st.runs, test=test)
        found = (res.q_zero < ALPHA) & off
        fdr.append((found & ~effect).sum() / max(found.sum(), 1))
        power.append((found & effect).sum() / max(effect.sum(), 1))

        C = rng.uniform(-0.5, 1.5, (L, L))
        st = simulate_study(rng, C, well, n_seeds)
        res = build_matrices(st.runs, st.languages, test=test)
        inside = (res.ci_low <= st.C) & (st.C <= res.ci_high)
        rays = res.ci_kind == "rays"
        inside &= ~(rays & (st.C > res.ci_gap_low) & (st.C < res.ci_gap_high))
        cover.append(inside[off].mean())
        b = (res.ci_kind == "bounded") & off
        bounded.append(b.sum() / off.sum())
        if b.any():
            cover_bounded.append(inside[b].mean())
        a, bb, c = per_seed_arrays(st.runs.iter_rows(), list(st.languages))
        m = transfer_summary(a, bb, c, ci=0.95, ill_conditioned=res.ill_conditioned)
        if math.isfinite(m["ci_low"]):
            truth = st.C[off & ~np.asarray(res.ill_conditioned)[:, None]].mean()
            mean_cover.append(m["ci_low"] <= truth <= m["ci_high"])

        gains = np.where(np.arange(L) < L // 2, 0.5, 5.0)  # half the rows ill-conditioned by construction
        st = simulate_study(rng, C, gains, n_seeds)
        res = build_matrices(st.runs, st.languages, test=test)
        rows = np.arange(L) < L // 2
        ill_flag.append(np.asarray(res.ill_conditioned)[rows].mean())
        cells = off & rows[:, None]
        ill_unbounded.append(np.isin(res.ci_kind[cells], ("rays", "unbounded")).mean())
        inside = (res.ci_low <= st.C) & (st.C <= res.ci_high)
        inside &= ~((res.ci_kind == "rays") & (st.C > res.ci_gap_low) & (st.C < res.ci_gap_high))
        ill_cover.append(inside[cells].mean())
    return {
        "any_bh_null0": any_zero / reps, "any_bh_null1": any_one / reps,
        "fdr": float(np.mean(fdr)), "power": float(np.mean(power)),
        "coverage": float(np.mean(cover)), "coverage_bounded": float(np.mean(cover_bounded)),
        "bounded_share": float(np.mean(bounded)),
        "mean_coverage": float(np.mean(mean_cover)) if mean_cover else math.nan,
        "ill_flagged": float(np.mean(ill_flag)), "ill_unbounded": float(np.mean(ill_unbounded)),
        "ill_coverage": float(np.mean(ill_cover)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=200, help="simulated matrices per scenario and seed count")
    ap.add_argument("--languages", type=int, default=20)
    ap.add_argument("--test", default="t", choices=("t", "signflip"))
    args = ap.parse_args()
    print(f"# {args.languages} languages, {args.reps} matrices per scenario, test {args.test}, BH q < {ALPHA}, 95 % CI")
    head = ("seeds", "any BH (C=0 null)", "any BH (C=1 null)", "FDR (mix)", "power (mix)", "CI coverage",
            "coverage (bounded only)", "bounded share", "mean-C coverage", "ill: flagged", "ill: unbounded",
            "ill: coverage", "seconds")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n in (3, 5, 10):
        t0 = time.perf_counter()
        r = calibrate(n, args.reps, args.languages, test=args.test)
        mc = math.sqrt(0.05 * 0.95 / args.reps)
        print(f"| {n} | {r['any_bh_null0']:.3f} | {r['any_bh_null1']:.3f} | {r['fdr']:.3f} | {r['power']:.3f} | "
              f"{r['coverage']:.3f} | {r['coverage_bounded']:.3f} | {r['bounded_share']:.3f} | "
              f"{r['mean_coverage']:.3f} | {r['ill_flagged']:.3f} | {r['ill_unbounded']:.3f} | "
              f"{r['ill_coverage']:.3f} | {time.perf_counter() - t0:.0f} |")
    print(f"# nominal: any-BH and FDR <= 0.05 (Monte Carlo SE of 0.05: {mc:.3f}); coverage 0.95")


if __name__ == "__main__":
    main()
