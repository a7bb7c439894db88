"""Paired-seed inference for the CLTM: per-cell tests of C = 0 and C = 1, Fieller intervals, matrix means.

Seeds are paired across the cells of a target (same target subset, same seed), so every question about
C = num / den with num_s = a_s − b_s and den_s = c_s − b_s is a question about paired differences:

- C = 0 ⟺ a = b: a one-sample test of d_s = a_s − b_s;
- C = 1 ⟺ a = c: a one-sample test of d_s = a_s − c_s;
- the interval of C is Fieller's: every θ for which the paired t-test of num_s − θ·den_s = 0 does not
  reject. So the interval excludes 0 (or 1) exactly when the t-test of C = 0 (or 1) rejects at 1 − level.

The default test is the paired t-test (exact when seed-to-seed noise is normal; robust to mild
non-normality; with 3 seeds it can still reject). The exact sign-flip permutation test is the
distribution-free option; its smallest two-sided p is 2 / 2^n (0.25 at 3 seeds, 0.0625 at 5), which
:func:`p_floor` reports so that an untestable cell never reads as "no effect". numpy + scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import special, stats

__all__ = [
    "ALPHA",
    "TESTS",
    "Fieller",
    "bh",
    "delta_se",
    "fieller",
    "holm",
    "p_floor",
    "paired_test",
    "ratio_mean_interval",
    "t_crit",
]

#: False-discovery level at which cells are marked significant (analysis.json, the report).
ALPHA = 0.05
#: Per-cell tests on paired differences; "t" is the default (see the module docstring for why).
TESTS: tuple[str, ...] = ("t", "signflip")
# Exact enumeration of sign flips up to this many seeds (2^16 = 65,536 patterns); Monte Carlo above.
_SIGNFLIP_EXACT_MAX = 16
_SIGNFLIP_DRAWS = 20_000

Test = Literal["t", "signflip"]


@lru_cache(maxsize=256)
def t_crit(level: float, n: int) -> float:
    """Two-sided t quantile for an interval of ``level`` from ``n`` paired seeds (n − 1 df); NaN for n < 2."""
    return float(stats.t.ppf(0.5 + level / 2.0, n - 1)) if n >= 2 else math.nan


def p_floor(n: int, test: Test = "t") -> float:
    """The smallest two-sided p-value the test can give with ``n`` seeds (0 for t with n ≥ 2; NaN if none)."""
    if n < 2:
        return math.nan
    if test == "t":
        return 0.0
    if test == "signflip":
        return 2.0 / 2.0**n if n <= _SIGNFLIP_EXACT_MAX else 1.0 / (_SIGNFLIP_DRAWS + 1)
    raise ValueError(f"unknown test {test!r} (known: {', '.join(TESTS)})")


def _signs(n: int, rng: np.random.Generator | None) -> np.ndarray:
    """Sign patterns: every one of 2^n (exact) or ``_SIGNFLIP_DRAWS`` random ones (identity first)."""
    if n <= _SIGNFLIP_EXACT_MAX:
        codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)[None, :]
        return 1.0 - 2.0 * (codes & 1)
    rng = rng if rng is not None else np.random.default_rng(0)
    return np.vstack([np.ones((1, n)), rng.choice([-1.0, 1.0], size=(_SIGNFLIP_DRAWS, n))])


def paired_test(d: np.ndarray, test: Test = "t", rng: np.random.Generator | None = None) -> np.ndarray:
    """Two-sided p-values that the mean of paired differences is 0, one per column of ``d`` (seeds × cells).

    ``d`` may be 1-D (one cell). NaN p for fewer than 2 seeds. t: a column of identical non-zero
    differences has p = 0, of zeros p = 1. signflip: p = share of sign patterns whose |mean| reaches the
    observed one (the identity included, so p ≥ p_floor), exact up to 16 seeds.
    """
    d = np.asarray(d, dtype=float)
    one = d.ndim == 1
    d = d[:, None] if one else d
    n = d.shape[0]
    if n < 2:
        p = np.full(d.shape[1], np.nan)
    elif test == "t":
        mean, sd = d.mean(axis=0), d.std(axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.abs(mean) / (sd / math.sqrt(n))
        t = np.where(sd > 0, t, np.where(mean != 0, np.inf, 0.0))
        p = 2.0 * special.stdtr(n - 1, -t)  # the t survival function as a ufunc: cheap per cell
    elif test == "signflip":
        signs = _signs(n, rng)
        obs = np.abs(d.mean(axis=0))
        flipped = np.abs(signs @ d) / n
        p = (flipped >= obs[None, :] - 1e-12 * np.maximum(1.0, obs[None, :])).mean(axis=0)
    else:
        raise ValueError(f"unknown test {test!r} (known: {', '.join(TESTS)})")
    return p[0] if one else p


def _mean_cov(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(Var x̄, Var ȳ, Cov(x̄, ȳ)) from paired samples: sample (co)variances (ddof 1) over n."""
    n = x.size
    dx, dy = x - x.mean(), y - y.mean()
    k = 1.0 / ((n - 1) * n)
    return float(dx @ dx) * k, float(dy @ dy) * k, float(dx @ dy) * k


@dataclass(frozen=True)
class Fieller:
    """A Fieller confidence set for a ratio of paired means.

    ``kind`` is "bounded" ([low, high]), "rays" ((−∞, gap_low] ∪ [gap_high, ∞): the denominator is not
    clearly non-zero, but some values are excluded), "unbounded" (the whole line) or "none" (fewer than
    2 seeds, or num and den both identically 0). ``low``/``high`` are always the set's hull (−∞/∞ when
    not bounded), so a reader that ignores ``kind`` never sees a fake finite interval.
    """

    kind: str
    low: float
    high: float
    gap_low: float = math.nan
    gap_high: float = math.nan


def fieller(num: np.ndarray, den: np.ndarray, level: float = 0.95) -> Fieller:
    """Fieller's interval for mean(num) / mean(den) from paired per-seed values, t with n − 1 df.

    The set of θ with (x̄ − θȳ)² ≤ t² (v_xx − 2θ v_xy + θ² v_yy), v the (co)variances of the means:
    bounded when ȳ² > t² v_yy (the denominator is significantly non-zero), else two rays or the line.
    """
    x, y = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    n = x.size
    if n < 2:
        return Fieller("none", math.nan, math.nan)
    t2 = t_crit(level, n) ** 2
    xm, ym = float(x.mean()), float(y.mean())
    vxx, vyy, vxy = (float(v) for v in _mean_cov(x, y))
    A = ym * ym - t2 * vyy
    B = xm * ym - t2 * vxy
    Cq = xm * xm - t2 * vxx
    disc = B * B - A * Cq
    if A > 0:
        root = math.sqrt(max(disc, 0.0))
        return Fieller("bounded", (B - root) / A, (B + root) / A)
    if ym == 0 and xm == 0 and vxx == 0 and vyy == 0:
        return Fieller("none", math.nan, math.nan)
    if A < 0 and disc > 0:
        root = math.sqrt(disc)
        r1, r2 = sorted(((B - root) / A, (B + root) / A))
        return Fieller("rays", -math.inf, math.inf, r1, r2)
    return Fieller("unbounded", -math.inf, math.inf)


def delta_se(num: np.ndarray, den: np.ndarray) -> float:
    """Delta-method SE of mean(num) / mean(den) from paired seeds (the quantity Fieller's interval inverts)."""
    x, y = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if x.size < 2 or y.mean() == 0:
        return math.nan
    r = x.mean() / y.mean()
    vxx, vyy, vxy = _mean_cov(x, y)
    return math.sqrt(max((vxx - 2.0 * r * vxy + r * r * vyy) / y.mean() ** 2, 0.0))


def ratio_mean_interval(
    num: np.ndarray, den: np.ndarray, level: float = 0.95
) -> dict[str, float]:
    """Mean over cells of C_k = mean_s num[s, k] / mean_s den[s, k], with a paired-seed t interval.

    ``num`` and ``den`` are seeds × cells on one seed set (each seed present in every cell). The interval
    is the delta method with the seed as the unit: each seed's influence on the mean of ratios,
    ψ_s = mean_k (num_sk − C_k den_sk) / den̄_k, gives SE = sd(ψ) / √n and a t interval with n − 1 df.
    Meant for well-conditioned rows only (den clearly non-zero), where the linearisation holds.
    """
    x, y = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    n, k = x.shape
    out = {"mean": math.nan, "se": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_seeds": n, "n": k}
    if k == 0 or n == 0:
        return out
    ym = y.mean(axis=0)
    ratio = x.mean(axis=0) / ym
    out["mean"] = float(ratio.mean())
    if n < 2:
        return out
    psi = ((x - ratio[None, :] * y) / ym[None, :]).mean(axis=1)
    se = float(psi.std(ddof=1) / math.sqrt(n))
    half = t_crit(level, n) * se
    out.update(se=se, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control); NaN entries stay NaN and don't count."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    vals = p[ok]
    m = vals.size
    if m == 0:
        return out
    order = np.argsort(vals, kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * vals[order])
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def bh(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values (step-up, monotone, capped at 1); NaN p-values stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=float)
    q = np.full(p.shape, np.nan)
    flat = p.ravel()
    ok = np.flatnonzero(np.isfinite(flat))
    m = ok.size
    if m == 0:
        return q
    order = ok[np.argsort(flat[ok], kind="stable")]
    ranked = flat[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    qf = q.ravel()
    qf[order] = np.minimum(ranked, 1.0)
    return qf.reshape(p.shape)
