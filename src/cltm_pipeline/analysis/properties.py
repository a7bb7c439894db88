"""Properties of a CLTM (DESIGN.md "Analyses"): strengths, asymmetry, shares, families, MDS map, clusters,
Mantel test against typological distances, significance counts, probes and training-time transfer.

Every function is pure and takes a matrix indexed [target i, donor j] (rows receive, columns give) with
NaN for missing or undefined cells. NaN cells are never imputed: each statistic is computed on the finite
cells it needs and says how many it used.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from cltm_pipeline.analysis.inference import ALPHA, holm, ratio_mean_interval
from cltm_pipeline.protocol import SINGLE

__all__ = [
    "analyse",
    "asymmetry",
    "clusters",
    "donor_strength",
    "mantel",
    "mds",
    "per_seed_arrays",
    "probe_summary",
    "profile_distance",
    "receiver_strength",
    "shares",
    "intra_family_share",
    "significance_counts",
    "steps_to_reach",
    "symmetrised",
    "top_family",
    "transfer_summary",
]


def _off_diagonal(n: int) -> np.ndarray:
    """Boolean mask of the off-diagonal cells of an n x n matrix."""
    return ~np.eye(n, dtype=bool)


def _positive_off_diagonal(C: np.ndarray) -> np.ndarray:
    """C with the diagonal, NaN and non-positive cells set to 0 (the positive transfer mass)."""
    C = np.asarray(C, dtype=float)
    keep = _off_diagonal(C.shape[0]) & np.isfinite(C) & (C > 0)
    return np.where(keep, C, 0.0)


def donor_strength(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per donor j: sum over targets of positive off-diagonal C[i, j], and the finite cells it saw."""
    finite = np.isfinite(C) & _off_diagonal(C.shape[0])
    return _positive_off_diagonal(C).sum(axis=0), finite.sum(axis=0)


def receiver_strength(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per target i: sum over donors of positive off-diagonal C[i, j], and the finite cells it saw."""
    finite = np.isfinite(C) & _off_diagonal(C.shape[0])
    return _positive_off_diagonal(C).sum(axis=1), finite.sum(axis=1)


def asymmetry(C: np.ndarray) -> tuple[float, int]:
    """||C - C^T||_F / ||C||_F over cells whose mirror is also finite; returns (value, such cells)."""
    C = np.asarray(C, dtype=float)
    both = np.isfinite(C) & np.isfinite(C.T)
    n_used = int(both.sum())
    if n_used == 0:
        return math.nan, 0
    x = np.where(both, C, 0.0)
    norm = float(np.sqrt((x**2).sum()))
    if norm == 0:
        return math.nan, n_used
    return float(np.sqrt(((x - x.T) ** 2).sum())) / norm, n_used


def shares(C: np.ndarray) -> dict[str, float | int]:
    """Shares of finite off-diagonal cells with C > 0, C < 0 and C > 1, and how many cells that is."""
    C = np.asarray(C, dtype=float)
    vals = C[_off_diagonal(C.shape[0]) & np.isfinite(C)]
    n = int(vals.size)
    if n == 0:
        return {"positive": math.nan, "negative": math.nan, "above_one": math.nan, "n": 0}
    return {
        "positive": float(np.mean(vals > 0)),
        "negative": float(np.mean(vals < 0)),
        "above_one": float(np.mean(vals > 1)),
        "n": n,
    }


def intra_family_share(C: np.ndarray, families: Sequence[str]) -> tuple[float, float]:
    """Share of the positive off-diagonal mass within families, and the share expected if mass were uniform.

    The second number is the fraction of finite off-diagonal cells that are intra-family: the share a
    matrix with no family effect would give, so the first is read against it. No finite intra-family
    cell (every language its own family): the share is undefined (NaN), not 0.
    """
    fam = np.asarray(families, dtype=object)
    same = fam[:, None] == fam[None, :]
    pos = _positive_off_diagonal(C)
    total = float(pos.sum())
    finite = np.isfinite(C) & _off_diagonal(len(fam))
    base = float((same & finite).sum() / finite.sum()) if finite.any() else math.nan
    if total == 0 or not (same & finite).any():
        return math.nan, base
    return float(pos[same].sum()) / total, base


def top_family(family: str) -> str:
    """'Indo-European (Romance)' -> 'Indo-European' (the languages sheet's top-level family)."""
    return family.split(" (", 1)[0].strip()


# --------------------------------------------------------------------------------------------------
# Transfer profiles: distances, MDS map, clusters
# --------------------------------------------------------------------------------------------------


def profile_distance(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RMS difference of two languages' transfer profiles (row as target, column as donor).

    For languages k and l the profile coordinates are C[k, j] and C[j, k] for every third language j
    (their own cells are left out: the diagonal is 1 by construction and C[k, l] is not a property of
    either alone). Only coordinates finite in both profiles count; returns (distance, coordinates used),
    NaN where none is shared.
    """
    C = np.asarray(C, dtype=float)
    n = C.shape[0]
    D = np.zeros((n, n))
    used = np.zeros((n, n), dtype=int)
    for k, l in itertools.combinations(range(n), 2):
        others = [j for j in range(n) if j not in (k, l)]
        a = np.concatenate([C[k, others], C[others, k]])
        b = np.concatenate([C[l, others], C[others, l]])
        ok = np.isfinite(a) & np.isfinite(b)
        used[k, l] = used[l, k] = int(ok.sum())
        D[k, l] = D[l, k] = float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2))) if ok.any() else math.nan
    return D, used


def _complete_subset(D: np.ndarray) -> list[int]:
    """Indices of the largest set found (greedy) whose pairwise distances are all finite."""
    keep = list(range(D.shape[0]))
    while keep:
        sub = D[np.ix_(keep, keep)]
        bad = (~np.isfinite(sub)).sum(axis=1)
        if not bad.any():
            break
        keep.pop(int(np.argmax(bad)))  # drop the language with the most undefined distances first
    return keep


def mds(D: np.ndarray) -> dict[str, Any]:
    """Classical (Torgerson) MDS to 2-D, deterministic, with Kruskal stress-1 of the fitted distances.

    Languages with undefined distances are dropped (greedily, most undefined first) and listed by index in
    ``used``. Axis signs are fixed (largest-magnitude coordinate positive) so reruns give the same map.
    """
    # scipy's clustering and scikit-learn (~2 s to import): only `cltm analyse` clusters, every cltm command
    # imports this module through the CLI
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from sklearn.metrics import silhouette_score

    D = np.asarray(D, dtype=float)
    used = _complete_subset(D)
    n = len(used)
    xy = np.zeros((n, 2))
    if n >= 2:
        sub = D[np.ix_(used, used)]
        J = np.eye(n) - 1.0 / n
        B = -0.5 * J @ (sub**2) @ J
        w, V = np.linalg.eigh(B)
        order = np.argsort(w)[::-1][:2]
        for k, idx in enumerate(order):
            if w[idx] > 0:
                v = V[:, idx]
                v = v if v[np.argmax(np.abs(v))] >= 0 else -v
                xy[:, k] = v * math.sqrt(w[idx])
        fitted = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2))
        iu = np.triu_indices(n, 1)
        denom = float((sub[iu] ** 2).sum())
        stress = float(np.sqrt(((sub[iu] - fitted[iu]) ** 2).sum() / denom)) if denom > 0 else 0.0
    else:
        stress = math.nan
    return {"x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(), "used": used, "stress": stress}


def clusters(D: np.ndarray, max_k: int | None = None) -> dict[str, Any]:
    """Average-linkage clusters on a distance matrix, k in 2..n-1 by the best silhouette (smallest k on ties).

    Languages with undefined distances are left out (``used`` lists the indices kept); labels are 1-based
    and numbered in order of first appearance, so equal inputs give equal labels. Fewer than 3 languages:
    one cluster, silhouette NaN.
    """
    # scipy's clustering and scikit-learn (~2 s to import): only `cltm analyse` clusters, every cltm command
    # imports this module through the CLI
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from sklearn.metrics import silhouette_score

    D = np.asarray(D, dtype=float)
    used = _complete_subset(D)
    n = len(used)
    if n < 3:
        return {"labels": [1] * n, "k": 1 if n else 0, "silhouette": math.nan, "used": used}
    sub = D[np.ix_(used, used)]
    sub = (sub + sub.T) / 2.0
    np.fill_diagonal(sub, 0.0)
    tree = linkage(squareform(sub, checks=False), method="average")
    best: tuple[float, int, np.ndarray] | None = None
    for k in range(2, min(n - 1, max_k or n - 1) + 1):
        labels = fcluster(tree, t=k, criterion="maxclust")
        if len(set(labels)) < 2 or len(set(labels)) >= n:
            continue
        score = float(silhouette_score(sub, labels, metric="precomputed"))
        if best is None or score > best[0] + 1e-12:
            best = (score, k, labels)
    if best is None:
        return {"labels": [1] * n, "k": 1, "silhouette": math.nan, "used": used}
    renumber: dict[int, int] = {}
    labels = [renumber.setdefault(int(x), len(renumber) + 1) for x in best[2]]
    return {"labels": labels, "k": len(renumber), "silhouette": best[0], "used": used}


# --------------------------------------------------------------------------------------------------
# Typology: Mantel permutation test
# --------------------------------------------------------------------------------------------------


def symmetrised(C: np.ndarray) -> np.ndarray:
    """(C + C^T) / 2 where both are finite, the finite one where only one is, NaN where neither."""
    C = np.asarray(C, dtype=float)
    stack = np.stack([C, C.T])
    with np.errstate(invalid="ignore"):
        count = np.isfinite(stack).sum(axis=0)
        total = np.where(np.isfinite(stack), stack, 0.0).sum(axis=0)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x**2).sum() * (y**2).sum()))
    return float((x * y).sum() / den) if den > 0 else math.nan


def mantel(
    A: np.ndarray, B: np.ndarray, permutations: int = 9999, seed: int = 0
) -> dict[str, Any]:
    """Mantel test: Pearson r between the upper triangles of A and B, two-sided permutation p-value.

    Languages (rows and columns together) of A are permuted; pairs undefined in either matrix are left
    out, then languages without any defined pair. When n! <= permutations every permutation is
    enumerated (exact p); otherwise ``permutations`` random ones from ``seed``, p = (hits + 1) / (perms + 1).
    Returns r, p, the languages used (indices), pairs used and whether p is exact.
    """
    A, B = np.asarray(A, dtype=float), np.asarray(B, dtype=float)
    both = np.isfinite(A) & np.isfinite(B)
    np.fill_diagonal(both, False)
    used = [k for k in range(A.shape[0]) if both[k].any()]
    n = len(used)
    out: dict[str, Any] = {"r": math.nan, "p": math.nan, "n_languages": n, "n_pairs": 0, "exact": False,
                           "used": used, "permutations": 0}
    if n < 3:
        return out
    A, B, both = A[np.ix_(used, used)], B[np.ix_(used, used)], both[np.ix_(used, used)]
    iu = np.triu_indices(n, 1)
    pairs = both[iu]
    out["n_pairs"] = int(pairs.sum())
    if out["n_pairs"] < 3:
        return out
    y = B[iu][pairs]
    r_obs = _pearson(A[iu][pairs], y)
    if not math.isfinite(r_obs):
        return out
    exact = math.factorial(n) <= permutations
    if exact:
        perms: Iterable[Sequence[int]] = itertools.permutations(range(n))
        total = math.factorial(n)
    else:
        rng = np.random.default_rng(seed)
        perms = (rng.permutation(n) for _ in range(permutations))
        total = permutations
    hits = 0
    for perm in perms:
        P = A[np.ix_(perm, perm)][iu]
        ok = np.isfinite(P) & np.isfinite(B[iu])  # a NaN of A moves with its languages
        r = _pearson(P[ok], B[iu][ok]) if ok.sum() >= 3 else math.nan
        if math.isfinite(r) and abs(r) >= abs(r_obs) - 1e-12:
            hits += 1
    # exact: the identity permutation is among those enumerated, so hits >= 1 already
    p = hits / total if exact else (hits + 1) / (total + 1)
    out.update(r=r_obs, p=min(1.0, p), exact=exact, permutations=total)
    return out


# --------------------------------------------------------------------------------------------------
# Run-level views: latent probes and training-time transfer
# --------------------------------------------------------------------------------------------------


def probe_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Language-ID probe accuracy by cell kind (mean over the runs that carry a probe) and runs without one."""
    by_kind: dict[str, list[tuple[float, float]]] = {}
    missing = 0
    total = 0
    for rec in records:
        total += 1
        probe = rec.get("probe")
        if not isinstance(probe, Mapping) or not isinstance(probe.get("accuracy"), (int, float)):
            missing += 1
            continue
        chance = probe.get("chance")
        by_kind.setdefault(str(rec.get("cell")), []).append(
            (float(probe["accuracy"]), float(chance) if isinstance(chance, (int, float)) else math.nan)
        )
    kinds = {}
    for kind in ("single", "self", "dual"):
        vals = by_kind.get(kind, [])
        if vals:
            acc = np.array([a for a, _ in vals])
            kinds[kind] = {
                "accuracy": float(acc.mean()),
                "sd": float(acc.std(ddof=1)) if acc.size > 1 else math.nan,
                "chance": float(np.nanmean([c for _, c in vals])) if any(math.isfinite(c) for _, c in vals)
                else math.nan,
                "n_runs": int(acc.size),
            }
    return {"by_kind": kinds, "runs": total, "runs_without_probe": missing}


def _first_step_reaching(curve: Sequence[Sequence[float]], level: float) -> float:
    """First step of a dev curve [[step, score], ...] whose score reaches ``level`` (NaN if never)."""
    for step, score in curve:
        if score >= level - 1e-12:
            return float(step)
    return math.nan


def steps_to_reach(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Training-time transfer: per self/dual run, first step reaching its single's best dev score (same seed).

    The single's own first step at its best score is the reference: ratio = steps(cell) / steps(single),
    below 1 when the donor's data gets the model there sooner, NaN when the cell never gets there.
    """
    curves: dict[tuple[str, str | None, int], list[list[float]]] = {}
    for rec in records:
        curve = (rec.get("training") or {}).get("dev_curve")
        if not curve:
            continue
        donor = rec.get("donor")
        donor = None if donor in (None, SINGLE) else donor
        curves[(rec["target"], donor, int(rec["seed"]))] = [[float(s), float(v)] for s, v in curve]
    rows = []
    for (target, donor, seed), curve in sorted(curves.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2])):
        if donor is None:
            continue
        single = curves.get((target, None, seed))
        if not single:
            continue
        best = max(v for _, v in single)
        ref = _first_step_reaching(single, best)
        steps = _first_step_reaching(curve, best)
        rows.append({
            "target": target, "donor": donor, "seed": seed, "single_best": best, "single_steps": ref,
            "steps": steps, "ratio": steps / ref if math.isfinite(steps) and ref > 0 else math.nan,
        })
    return rows


# --------------------------------------------------------------------------------------------------
# One matrix's summary, and the cross-task "language dependence" row
# --------------------------------------------------------------------------------------------------


def transfer_summary(
    values: np.ndarray, single: np.ndarray, self_: np.ndarray, ci: float = 0.95,
    ill_conditioned: np.ndarray | None = None,
) -> dict[str, Any]:
    """Mean off-diagonal C over the well-conditioned rows, with a paired-seed t interval.

    ``values[i, j, s]`` is P of cell (i, j) at seed position s, ``single[i, s]`` and ``self_[i, s]`` the
    same seed's single and self runs, NaN where a run is missing. An ill-conditioned row's C is seed noise
    over a near-zero gain (its Fieller sets are unbounded), so its cells are left out and counted. One seed
    set: the seeds present in every used cell, its single and its self. The interval is
    :func:`~cltm_pipeline.analysis.inference.ratio_mean_interval` (seed as the unit, t with n − 1 df).
    """
    a, b, c = (np.asarray(x, dtype=float) for x in (values, single, self_))
    L, S = b.shape
    ill = np.zeros(L, dtype=bool) if ill_conditioned is None else np.asarray(ill_conditioned, dtype=bool)
    has = np.isfinite(a).any(axis=2) & _off_diagonal(L)
    used = has & ~ill[:, None]
    ii, jj = np.nonzero(used)
    complete = (np.isfinite(a[ii, jj, :]).all(axis=0) & np.isfinite(b[ii, :]).all(axis=0)
                & np.isfinite(c[ii, :]).all(axis=0)) if ii.size else np.zeros(S, dtype=bool)
    seeds = np.flatnonzero(complete)
    num = (a[ii, jj, :] - b[ii, :])[:, seeds].T
    den = (c[ii, :] - b[ii, :])[:, seeds].T
    ok = den.mean(axis=0) != 0 if seeds.size else np.zeros(ii.size, dtype=bool)
    out: dict[str, Any] = ratio_mean_interval(num[:, ok], den[:, ok], ci)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = num[:, ok].mean(axis=0) / den[:, ok].mean(axis=0) if seeds.size else np.array([])
    out.update(
        median=float(np.median(ratios)) if ratios.size else math.nan, ci=ci,
        rows_used=int(len(set(ii[ok].tolist()))), rows_ill=int(ill.sum()),
        cells_left_out=int((has & ill[:, None]).sum()),
        method="mean of C over the off-diagonal cells of well-conditioned rows; paired-seed delta method, t(n-1)",
    )
    return out


# --------------------------------------------------------------------------------------------------
# Everything for one matrix: the content of analysis.json
# --------------------------------------------------------------------------------------------------


def per_seed_arrays(
    runs: Iterable[tuple[str, str | None, int, float]], languages: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values[i, j, s], single[i, s], self[i, s]) from run tuples, NaN where a run is missing."""
    runs = list(runs)
    seeds = sorted({s for _, _, s, _ in runs})
    pos = {t: k for k, t in enumerate(languages)}
    spos = {s: k for k, s in enumerate(seeds)}
    L, S = len(languages), len(seeds)
    a, b = np.full((L, L, S), np.nan), np.full((L, S), np.nan)
    for t, d, s, v in runs:
        if t not in pos or (d is not None and d not in pos):
            continue
        if d is None:
            b[pos[t], spos[s]] = v
        else:
            a[pos[t], pos[d], spos[s]] = v
    return a, b, a[np.arange(L), np.arange(L), :].copy()


def significance_counts(C: np.ndarray, q_zero: np.ndarray, q_one: np.ndarray, alpha: float = ALPHA) -> dict[str, int]:
    """Off-diagonal cells significantly above / below 0 and above / below 1 at BH level ``alpha``."""
    off = _off_diagonal(C.shape[0]) & np.isfinite(C)
    with np.errstate(invalid="ignore"):
        z, o = off & (q_zero < alpha), off & (q_one < alpha)
        return {
            "tested": int((off & np.isfinite(q_zero)).sum()),
            "above_zero": int((z & (C > 0)).sum()), "below_zero": int((z & (C < 0)).sum()),
            "above_one": int((o & (C > 1)).sum()), "below_one": int((o & (C < 1)).sum()),
        }


def _mantel_rows(
    sym: np.ndarray, distances: Mapping[str, np.ndarray], langs: Sequence[str], permutations: int, seed: int
) -> dict[str, dict[str, Any]]:
    """The Mantel test of the symmetrised C against each typological distance, with Holm-adjusted p."""
    rows = {}
    for kind, dist in distances.items():
        m = mantel(sym, np.asarray(dist, dtype=float), permutations=permutations, seed=seed)
        rows[kind] = {**m, "used": [langs[k] for k in m["used"]]}
    # Several distances are tested against one C: Holm's adjustment keeps "any link" at the nominal level.
    kinds_tested = list(rows)
    adjusted = holm(np.array([rows[k]["p"] for k in kinds_tested], dtype=float))
    for kind, p_adj in zip(kinds_tested, adjusted):
        rows[kind]["p_holm"] = float(p_adj)
    return rows


def _training_time(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Steps-to-reach ratios summarised by donor and by cell kind (per-run rows stay out of analysis.json)."""
    timing = steps_to_reach(records)
    by_donor: dict[str, list[float]] = {}
    never: dict[str, int] = {}
    for row in timing:
        if math.isfinite(row["ratio"]):
            by_donor.setdefault(row["donor"], []).append(row["ratio"])
        if not math.isfinite(row["steps"]):
            never[row["donor"]] = never.get(row["donor"], 0) + 1
    by_kind = {}
    for kind in ("self", "dual"):
        ratios = [r["ratio"] for r in timing if ((r["donor"] == r["target"]) == (kind == "self"))]
        fin = [x for x in ratios if math.isfinite(x)]
        by_kind[kind] = {"mean_ratio": float(np.mean(fin)) if fin else math.nan, "reached": len(fin),
                         "cells": len(ratios)}
    return {
        "runs": len(timing),  # per-run rows stay out: 29,700 of them in the study grid
        "by_donor": {d: {"mean_ratio": float(np.mean(v)), "n": len(v), "never": never.get(d, 0)}
                     for d, v in sorted(by_donor.items())},
        "by_kind": by_kind,
    }


def _properties(C: np.ndarray, families: Sequence[str], langs: Sequence[str], mean_c: dict[str, Any]) -> dict[str, Any]:
    """The matrix's properties block: mean C, strengths, asymmetry, shares, intra-family shares."""
    donor, donor_n = donor_strength(C)
    receiver, receiver_n = receiver_strength(C)
    asym, asym_n = asymmetry(C)
    fam_share, fam_uniform = intra_family_share(C, families)
    top_share, top_uniform = intra_family_share(C, [top_family(f) for f in families])
    return {
        "mean_offdiag_C": mean_c,
        "donor_strength": {t: {"value": float(v), "n": int(k)} for t, v, k in zip(langs, donor, donor_n)},
        "receiver_strength": {t: {"value": float(v), "n": int(k)} for t, v, k in zip(langs, receiver, receiver_n)},
        "asymmetry": {"value": asym, "n": asym_n},
        "shares": shares(C),
        "intra_family_share": {"value": fam_share, "uniform": fam_uniform},
        "intra_top_family_share": {"value": top_share, "uniform": top_uniform},
    }


def _profile_map(C: np.ndarray, ill_conditioned: np.ndarray, langs: Sequence[str]) -> dict[str, Any]:
    """MDS map and clusters of the languages' transfer profiles."""
    # An ill-conditioned row is seed noise divided by a near-zero gain: as a profile it would dominate the
    # map. Its row is left out of the profiles (the language stays, placed by what it gives as a donor).
    C_map = np.where(np.asarray(ill_conditioned, dtype=bool)[:, None], np.nan, C)
    D, D_used = profile_distance(C_map)
    layout = mds(D)
    groups = clusters(D)
    return {
        "distance": "RMS difference of transfer profiles (row and column of C, own cells left out)",
        "languages": [langs[k] for k in layout["used"]], "x": layout["x"], "y": layout["y"],
        "stress": layout["stress"],
        "clusters": [int(x) for x in groups["labels"]], "cluster_languages": [langs[k] for k in groups["used"]],
        "k": groups["k"], "silhouette": groups["silhouette"],
        "min_shared_coordinates": int(D_used[_off_diagonal(len(langs))].min()) if len(langs) > 1 else 0,
    }


def analyse(
    result: Any,
    families: Sequence[str],
    runs: Iterable[tuple[str, str | None, int, float]],
    records: Sequence[Mapping[str, Any]],
    distances: Mapping[str, np.ndarray],
    *,
    permutations: int = 9999,
    seed: int = 0,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """All analyses of one CLTMResult: properties, map, clusters, Mantel tests, significance, probes, timing.

    ``families`` follow ``result.languages``; ``runs`` are (target, donor, seed, P) tuples of the matrix's
    runs (for the whole-matrix interval); ``records`` the runs' metrics.json contents (probes, dev
    curves); ``distances`` typological distance matrices in the same language order (NaN where unknown).
    """
    langs = list(result.languages)
    C = np.asarray(result.C, dtype=float)
    a, b, c = per_seed_arrays(runs, langs)
    mean_c = transfer_summary(a, b, c, ci=result.ci, ill_conditioned=result.ill_conditioned)
    return {
        "languages": langs,
        "families": list(families),
        "ill_conditioned": [t for t, bad in zip(langs, result.ill_conditioned) if bad],
        "properties": _properties(C, families, langs, mean_c),
        "significance": {"alpha": alpha, **significance_counts(C, result.q_zero, result.q_one, alpha)},
        "map": _profile_map(C, result.ill_conditioned, langs),
        "mantel": _mantel_rows(symmetrised(C), distances, langs, permutations, seed),
        "probes": {**probe_summary(records), "projections": _projections(records)},
        "training_time": _training_time(records),
    }


def _projections(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per target, the 2-D probe projection of its lowest-seed self cell (else its single), if any."""
    best: dict[str, tuple[tuple[int, int], Mapping[str, Any]]] = {}
    for rec in records:
        probe = rec.get("probe")
        proj = probe.get("projection") if isinstance(probe, Mapping) else None
        if not isinstance(proj, Mapping) or rec.get("cell") not in ("self", "single"):
            continue
        key = (0 if rec["cell"] == "self" else 1, int(rec.get("seed", 0)))
        t = str(rec.get("target"))
        if t not in best or key < best[t][0]:
            best[t] = (key, {"cell": rec["cell"], "seed": int(rec.get("seed", 0)), "accuracy": probe.get("accuracy"),
                             "chance": probe.get("chance"), "x": list(proj.get("x", [])),
                             "y": list(proj.get("y", [])), "locale": list(proj.get("locale", []))})
    return {t: v for t, (_, v) in sorted(best.items())}
