"""CLTM completion: predict the dual cells nobody measured, with prediction intervals.

A transfer matrix is structured: targets differ in how much any donor helps them (a row level), donors in how
much they help anyone (a column level), and families form blocks that a low-rank term captures. The models,
fitted on the measured off-diagonal cells only (the diagonal is 1 by definition):

- ``row_mean``: the mean measured C of the target's row (the naive baseline);
- ``additive``: C = mu + a_target + b_donor (ridge least squares);
- ``lowrank<k>``: the additive model plus a rank-k interaction u_target . v_donor, fitted by alternating
  ridge least squares from a seeded start;
- ``auto`` (default): whichever of additive, lowrank1 and lowrank2 has the least cross-validated median error
  on the matrix's own measured cells (chosen by held-out error, per matrix, never by looking at hidden cells).

Intervals are cross-validated conformal (CV+ in its simple, symmetric form): the measured cells are split
into ``folds``; each fold is predicted by a model fitted on the others; the ``level`` quantile of those
absolute errors, with the finite-sample correction, is the half-width of every predicted cell's interval.
Their coverage holds for cells hidden at random among the measured ones (exchangeable); ``bench/completion.py``
measures it on the study's real matrices. A cell chosen for being hard (adaptive design) is not exchangeable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cltm_pipeline.errors import ConfigError
from cltm_pipeline.io import write_json, write_tsv

__all__ = ["MODELS", "AUTO_CANDIDATES", "Completion", "read_wide", "cell_weights", "fit_predict", "complete",
           "write_cells"]

MODELS = ("row_mean", "additive", "lowrank1", "lowrank2", "auto")
#: Ridge penalty of the target and donor effects (C is on a scale of about 1; this keeps rows with few cells
#: tame), and of the low-rank factors.
RIDGE = 1.0
FACTOR_RIDGE = 0.1
#: What ``auto`` chooses among, by cross-validated error on the matrix's own measured cells.
AUTO_CANDIDATES = ("additive", "lowrank1", "lowrank2")
_ITERATIONS = 60
#: Ridge penalty of the covariate coefficients (covariates standardised), and rounds of refitting them.
COVARIATE_RIDGE = 5.0
_COVARIATE_ROUNDS = 4


@dataclass(frozen=True)
class Completion:
    """A completed matrix: point estimates, interval bounds and which cells were measured."""

    languages: list[str]
    C: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    measured: np.ndarray
    model: str
    level: float
    half_width: float
    cv_errors: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the chosen model's held-out errors
    undefined: np.ndarray | None = None  # targets whose C is undefined (zero self gain): nothing predicted

    def summary(self) -> dict[str, Any]:
        """The facts of the completion (summary.json): model, interval, held-out error, budget spent."""
        off = ~np.eye(len(self.languages), dtype=bool)
        e = self.cv_errors
        undefined = np.zeros(len(self.languages), dtype=bool) if self.undefined is None else self.undefined
        return {
            "languages": list(self.languages), "model": self.model, "level": self.level,
            "half_width": self.half_width if math.isfinite(self.half_width) else None,
            "cv_cells": int(len(e)),
            "cv_median_error": float(np.median(e)) if len(e) else None,
            "cv_p90_error": float(np.quantile(e, 0.9)) if len(e) else None,
            "measured_dual": int((self.measured & off).sum()), "dual_cells": int(off.sum()),
            "undefined_targets": [t for t, bad in zip(self.languages, undefined) if bad],
        }


def read_wide(path: Path, require_measured: bool = True) -> tuple[list[str], np.ndarray]:
    """A wide CLTM TSV (``target`` then the donors; one row per target in the same order; NaN or empty for an
    unmeasured cell); any problem is one line naming the file and the row (with ``require_measured``, also
    a matrix without any measured off-diagonal cell)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the matrix ({exc})") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines or lines[0].split("\t")[0] != "target":
        raise ConfigError(f"{path}: row 1: expected a header starting with 'target', then the donor codes")
    donors = lines[0].split("\t")[1:]
    if len(set(donors)) != len(donors) or not donors:
        raise ConfigError(f"{path}: row 1: the donor codes must be distinct and at least one")
    values = np.full((len(donors), len(donors)), np.nan)
    seen: list[str] = []
    for k, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(donors) + 1:
            raise ConfigError(f"{path}: row {k}: {len(cells)} fields, the header has {len(donors) + 1}")
        if cells[0] not in donors:
            raise ConfigError(f"{path}: row {k}: target {cells[0]!r} is not among the donor columns")
        if cells[0] in seen:
            raise ConfigError(f"{path}: row {k}: target {cells[0]!r} appears twice")
        seen.append(cells[0])
        for j, text in enumerate(cells[1:]):
            try:
                values[donors.index(cells[0]), j] = float(text) if text.strip() not in ("", "NA") else math.nan
            except ValueError:
                raise ConfigError(f"{path}: row {k}: {donors[j]}: {text!r} is not a number") from None
    if len(seen) != len(donors):
        missing = [d for d in donors if d not in seen]
        raise ConfigError(f"{path}: no row for target(s) {', '.join(missing)}: the matrix must be square")
    off = ~np.eye(len(donors), dtype=bool)
    if require_measured and not np.isfinite(values[off]).any():
        raise ConfigError(f"{path}: no measured off-diagonal cell: nothing to complete from")
    return donors, values


def _additive(C: np.ndarray, W: np.ndarray, ridge: float) -> np.ndarray:
    """mu + a_i + b_j by alternating weighted ridge least squares on the cells of weight ``W`` > 0; the
    fitted matrix."""
    obs = W > 0
    mu = float((W * np.where(obs, C, 0.0)).sum() / W.sum())
    a, b = np.zeros(C.shape[0]), np.zeros(C.shape[1])
    R = np.where(obs, C - mu, 0.0)
    n_row, n_col = W.sum(1), W.sum(0)
    for _ in range(_ITERATIONS):
        a = (W * (R - b[None, :])).sum(1) / (n_row + ridge)
        b = (W * (R - a[:, None])).sum(0) / (n_col + ridge)
    return mu + a[:, None] + b[None, :]


def _lowrank(R: np.ndarray, W: np.ndarray, rank: int, ridge: float, seed: int) -> np.ndarray:
    """A rank-``rank`` fit u . v of the residuals where ``W`` > 0 by alternating weighted ridge least squares
    (every row's and column's small system solved at once)."""
    rng = np.random.default_rng(seed)
    U = 0.1 * rng.standard_normal((R.shape[0], rank))
    V = 0.1 * rng.standard_normal((R.shape[1], rank))
    eye = ridge * np.eye(rank)
    Rw = W * np.where(W > 0, R, 0.0)
    for _ in range(_ITERATIONS):
        U = np.linalg.solve(np.einsum("ij,jk,jl->ikl", W, V, V) + eye, (Rw @ V)[..., None])[..., 0]
        V = np.linalg.solve(np.einsum("ij,ik,il->jkl", W, U, U) + eye, (Rw.T @ U)[..., None])[..., 0]
    return U @ V.T


def cell_weights(obs: np.ndarray, se: np.ndarray | None) -> np.ndarray:
    """Least-squares weight of each measured cell: 1 / (SE^2 + s0^2), s0 the median measured SE (so a cell
    with a tiny SE from few seeds cannot dominate), scaled to mean 1; 1 everywhere without SEs."""
    W = obs.astype(float)
    if se is None:
        return W
    known = obs & np.isfinite(se)
    if not known.any():
        return W
    floor = float(np.median(se[known])) ** 2 or 1e-12
    raw = np.where(known, 1.0 / (np.where(known, se, 0.0) ** 2 + floor), 1.0 / (2 * floor))
    W = np.where(obs, raw, 0.0)
    return W * (obs.sum() / W.sum())


def _standardise(covariates: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Each covariate centred and scaled on the measured cells; NaN (unknown distance) becomes its mean."""
    X = np.array(covariates, dtype=float)
    for k in range(X.shape[-1]):
        x = X[..., k]
        seen = obs & np.isfinite(x)
        mu = float(x[seen].mean()) if seen.any() else 0.0
        sd = float(x[seen].std()) if seen.sum() > 1 else 0.0
        X[..., k] = np.where(np.isfinite(x), (x - mu) / (sd or 1.0), 0.0)
    return X


def fit_predict(C: np.ndarray, obs: np.ndarray, model: str, ridge: float = RIDGE, seed: int = 0,
                factor_ridge: float = FACTOR_RIDGE, se: np.ndarray | None = None,
                covariates: np.ndarray | None = None) -> np.ndarray:
    """Every cell's prediction from the cells where ``obs`` is true (off-diagonal only), weighted by their
    ``se`` if given; ``covariates`` (L x L x k, e.g. typological distances) add a ridge-regressed linear
    term, refitted in turn with the model."""
    if covariates is None:
        return _fit(C, obs, model, ridge, seed, factor_ridge, cell_weights(obs, se))
    X = _standardise(covariates, obs)
    W = cell_weights(obs, se)
    beta = np.zeros(X.shape[-1])
    for _ in range(_COVARIATE_ROUNDS):
        base = _fit(np.where(obs, C - X @ beta, 0.0), obs, model, ridge, seed, factor_ridge, W)
        A, y, w = X[obs], (C - base)[obs], W[obs]
        beta = np.linalg.solve(A.T @ (w[:, None] * A) + COVARIATE_RIDGE * np.eye(A.shape[1]), A.T @ (w * y))
    return base + X @ beta


def _fit(C: np.ndarray, obs: np.ndarray, model: str, ridge: float, seed: int, factor_ridge: float,
         W: np.ndarray) -> np.ndarray:
    """``fit_predict`` without covariates, cell weights ``W`` given."""
    if model == "row_mean":
        overall = float(C[obs].mean())
        sums, counts = np.where(obs, C, 0.0).sum(1), obs.sum(1)
        rows = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
        return np.repeat(rows[:, None], C.shape[1], axis=1)
    if model not in MODELS or model == "auto":
        raise ConfigError(f"--model: {model!r} is not one of {', '.join(m for m in MODELS if m != 'auto')}")
    base = _additive(C, W, ridge)
    if model == "additive":
        return base
    rank = int(model.removeprefix("lowrank"))
    for _ in range(3):  # alternate between the additive part and the interaction
        inter = _lowrank(np.where(obs, C - base, 0.0), W, rank, factor_ridge, seed)
        base = _additive(np.where(obs, C - inter, 0.0), W, ridge)
    return base + inter


def _cv_errors(C: np.ndarray, obs: np.ndarray, model: str, folds: int, seed: int, se: np.ndarray | None = None,
               covariates: np.ndarray | None = None) -> np.ndarray:
    """Absolute errors of each measured cell predicted by ``model`` fitted without its fold."""
    cells = np.argwhere(obs)
    order = np.random.default_rng([seed, 0xC0]).permutation(len(cells))
    k = min(folds, len(cells))
    errors = []
    for f in range(k):
        held = cells[order[f::k]]
        train = obs.copy()
        train[held[:, 0], held[:, 1]] = False
        if train.any():
            pred = fit_predict(C, train, model, seed=seed, se=se, covariates=covariates)
            errors.extend(np.abs(C[held[:, 0], held[:, 1]] - pred[held[:, 0], held[:, 1]]).tolist())
    return np.array(errors)


def _half_width(errors: np.ndarray, level: float) -> float:
    """The conformal half-width: the ``ceil((n + 1) level)``-th smallest error (infinite for too few cells)."""
    rank = math.ceil((len(errors) + 1) * level)
    return math.inf if rank > len(errors) else float(np.sort(errors)[rank - 1])


def complete(languages: list[str], C: np.ndarray, model: str = "auto", level: float = 0.9, folds: int = 10,
             seed: int = 0, se: np.ndarray | None = None, covariates: np.ndarray | None = None,
             undefined: np.ndarray | None = None) -> Completion:
    """Measured cells as they are; the others predicted by ``model`` (``auto``: the candidate with the least
    cross-validated median error on the measured cells) with a ``level`` prediction interval. ``se`` weighs
    the measured cells; with ``covariates`` (L x L x k), each candidate also competes with covariates added
    (its name then ends in ``+typology``). Rows of ``undefined`` targets (C undefined: zero self gain) are
    neither fitted nor predicted: their dual cells stay NaN, and with no other row measured nothing is."""
    if not 0 < level < 1:
        raise ConfigError(f"--level: must be in (0, 1), got {level}")
    if model not in MODELS:
        raise ConfigError(f"--model: {model!r} is not one of {', '.join(MODELS)}")
    off = ~np.eye(len(languages), dtype=bool)
    bad = np.zeros(len(languages), dtype=bool) if undefined is None else np.asarray(undefined, dtype=bool)
    obs = np.isfinite(C) & off & ~bad[:, None]
    if not obs.any():
        if not bad.any():
            raise ConfigError("no measured off-diagonal cell: nothing to complete from")
        return _undefined_only(languages, C, off, bad, model, level)
    candidates = [(m, None) for m in (AUTO_CANDIDATES if model == "auto" else (model,))]
    if covariates is not None:
        candidates += [(m, covariates) for m, _ in candidates]
    scored = [_cv_errors(C, obs, m, folds, seed, se, X) for m, X in candidates]
    best = min(range(len(candidates)), key=lambda k: float(np.median(scored[k])) if len(scored[k]) else math.inf)
    chosen, X = candidates[best]
    pred = fit_predict(C, obs, chosen, seed=seed, se=se, covariates=X)
    half = _half_width(scored[best], level)
    measured = obs | ~off
    full = np.where(measured, np.where(off, C, 1.0), pred)
    lo = np.where(measured, full, pred - half)
    hi = np.where(measured, full, pred + half)
    gone = np.repeat(bad[:, None], len(bad), axis=1)  # undefined rows: no value, measured or predicted
    full, lo, hi = (np.where(gone, np.nan, a) for a in (full, lo, hi))
    name = chosen if X is None else f"{chosen}+typology"
    return Completion(list(languages), full, lo, hi, measured & ~gone, name, level, half, scored[best], bad)


def _undefined_only(languages: list[str], C: np.ndarray, off: np.ndarray, bad: np.ndarray, model: str,
                    level: float) -> Completion:
    """The completion of a matrix whose every measured row is undefined: the defined rows' diagonal, NaN
    elsewhere."""
    diag = ~off & ~bad[:, None]
    full = np.where(diag, 1.0, np.nan)
    return Completion(list(languages), full, full.copy(), full.copy(), diag, f"{model} (nothing to fit)", level,
                      math.inf, np.zeros(0), bad)


def write_cells(result: Completion, out_dir: Path) -> Path:
    """``out_dir/cells.tsv``: one row per cell (target, donor, C, lo, hi, measured), and
    ``out_dir/summary.json`` (:meth:`Completion.summary`)."""
    L = result.languages
    rows = [(L[i], L[j], float(result.C[i, j]), float(result.lo[i, j]), float(result.hi[i, j]), bool(result.measured[i, j]))
            for i in range(len(L)) for j in range(len(L))]
    df = pl.DataFrame(rows, schema={"target": pl.String, "donor": pl.String, "C": pl.Float64, "lo": pl.Float64,
                                    "hi": pl.Float64, "measured": pl.Boolean}, orient="row")
    path = Path(out_dir) / "cells.tsv"
    write_tsv(path, df)
    write_json(Path(out_dir) / "summary.json", result.summary())
    return path
