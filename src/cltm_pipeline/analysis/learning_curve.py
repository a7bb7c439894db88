"""Choice of N: the single regime trained at a ladder of N on a few targets, a fitted curve, a recommendation.

At each N of the ladder the protocol's own subsets are drawn (same fixed test/dev sets as the matrix,
nested single/extra parts per seed) and the *single* (N units) and *self* (2N units) cells of each target
are trained by :func:`cltm_pipeline.training.learning_curve.run_ladder` (the part that needs torch). The self gain c - b at N is then exactly what
doubling N buys, and exactly the denominator of the CLTM at regime N.

Recommendation rule: the **largest N on the ladder at which doubling still gives a clearly positive gain
for every target tried**, with the matrix's own criterion for a well-conditioned row:
c - b - z * sqrt(v_b + v_c) > 0 (z = 2 by default, v = seed variance / n). Beyond it more target data no
longer measurably helps, every CLTM denominator would sit in seed noise, and the matrix would be all ⚠.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cltm_pipeline.io import write_json, write_tsv
from cltm_pipeline.layout import ladder_tables
from cltm_pipeline.data.subsets import SubsetSpec, check_invariants, draw_seed, eval_sets

__all__ = ["CURVE_SCHEMA", "draw_ladder", "fit_curve", "recommend", "write_outputs"]

CURVE_SCHEMA = {
    "target": pl.String, "n": pl.Float64, "cell": pl.String, "units": pl.Float64, "seed": pl.Int64,
    "value": pl.Float64,
}  # no wall times: equal inputs give equal bytes (each run's metrics.json under runs/ keeps its timing)


def draw_ladder(
    spec: SubsetSpec, tables: Mapping[str, pl.DataFrame], targets: Sequence[str], ladder: Sequence[float],
    seeds: Sequence[int], work: Path,
) -> None:
    """Write test/dev and per-seed tables of every target at every N under ``work/subsets/n<N>/<target>/``.

    The spec's languages are narrowed to the target alone: only single and extra parts are drawn.
    """
    for n in ladder:
        for t in targets:
            s = SubsetSpec(**{**spec.__dict__, "n": float(n), "languages": (t,), "seeds": tuple(seeds)})
            test, dev = eval_sets(s, t, tables[t])
            _, test_path, dev_path = ladder_tables(work, n, t, 0)
            write_tsv(test_path, test)
            write_tsv(dev_path, dev)
            for seed in seeds:
                table = draw_seed(s, t, seed, tables, test, dev)
                check_invariants(s, t, table, test, dev)
                write_tsv(ladder_tables(work, n, t, seed)[0], table)


def fit_curve(curve: pl.DataFrame) -> dict[str, dict[str, float]]:
    """Per target, least-squares P = alpha + beta * log2(units) over single and self runs (beta: gain per doubling)."""
    out = {}
    for (t,), g in curve.filter(pl.col("cell").is_in(["single", "self"])).group_by(["target"], maintain_order=True):
        x, y = np.log2(g["units"].to_numpy()), g["value"].to_numpy()
        if np.unique(x).size < 2:
            continue
        beta, alpha = np.polyfit(x, y, 1)
        out[t] = {"alpha": float(alpha), "beta": float(beta), "points": int(x.size)}
    return dict(sorted(out.items()))


def recommend(curve: pl.DataFrame, z: float = 2.0) -> dict[str, Any]:
    """The largest N at which doubling (single N -> self 2N) is clearly positive for every target; per-N detail."""
    steps = []
    for n in sorted(set(curve["n"].to_list())):
        targets = {}
        for t in sorted(set(curve["target"].to_list())):
            g = curve.filter((pl.col("n") == n) & (pl.col("target") == t))
            b = g.filter(pl.col("cell") == "single")["value"].to_numpy()
            c = g.filter(pl.col("cell") == "self")["value"].to_numpy()
            if b.size < 2 or c.size < 2:
                targets[t] = {"b": math.nan, "c": math.nan, "gain": math.nan, "se": math.nan, "clear": False,
                              "n_single": int(b.size), "n_self": int(c.size)}
                continue
            gain = float(c.mean() - b.mean())
            se = float(math.sqrt(b.var(ddof=1) / b.size + c.var(ddof=1) / c.size))
            targets[t] = {"b": float(b.mean()), "c": float(c.mean()), "gain": gain, "se": se,
                          "clear": bool(gain > 0 and gain - z * se > 0), "n_single": int(b.size), "n_self": int(c.size)}
        steps.append({"n": n, "all_clear": bool(targets) and all(v["clear"] for v in targets.values()),
                      "targets": targets})
    clear = [s["n"] for s in steps if s["all_clear"]]
    return {
        "rule": f"largest N on the ladder at which doubling N (single N -> self 2N) still gives a clearly positive "
                f"gain for every target: c - b - {z:g} * sqrt(v_b + v_c) > 0 (a screening threshold on the unpaired SE; the "
                f"matrix's own flag is the paired t test of the self gain over seeds)",
        "z": z,
        "recommended_n": max(clear) if clear else None,
        "steps": steps,
    }


def write_outputs(curve: pl.DataFrame, out_dir: Path, meta: Mapping[str, Any], z: float = 2.0) -> dict[str, Any]:
    """Write curve.tsv and recommendation.json (with the fit and ``meta``) into ``out_dir``; return the latter."""
    out_dir = Path(out_dir)
    write_tsv(out_dir / "curve.tsv", curve)
    rec = {**dict(meta), **recommend(curve, z), "fit": fit_curve(curve)}
    write_json(out_dir / "recommendation.json", rec)
    return rec
