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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from cltm_pipeline.errors import ConfigError
from cltm_pipeline.io import write_tsv

__all__ = ["MODELS", "AUTO_CANDIDATES", "Completion", "read_wide", "fit_predict", "complete", "write_cells"]

MODELS = ("row_mean", "additive", "lowrank1", "lowrank2", "auto")
#: Ridge penalty of the target and donor effects (C is on a scale of about 1; this keeps rows with few cells
#: tame), and of the low-rank factors.
RIDGE = 1.0
FACTOR_RIDGE = 0.1
#: What ``auto`` chooses among, by cross-validated error on the matrix's own measured cells.
AUTO_CANDIDATES = ("additive", "lowrank1", "lowrank2")
_ITERATIONS = 60


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


def read_wide(path: Path) -> tuple[list[str], np.ndarray]:
    """A wide CLTM TSV (``target`` then the donors; one row per target in the same order; NaN or empty for an
    unmeasured cell); any problem is one line naming the file and the row."""
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
    if not np.isfinite(values[off]).any():
        raise ConfigError(f"{path}: no measured off-diagonal cell: nothing to complete from")
    return donors, values


def _additive(C: np.ndarray, obs: np.ndarray, ridge: float) -> np.ndarray:
    """mu + a_i + b_j by alternating ridge least squares on the observed cells; the fitted matrix."""
    mu = float(C[obs].mean())
    a, b = np.zeros(C.shape[0]), np.zeros(C.shape[1])
    R = np.where(obs, C - mu, 0.0)
    n_row, n_col = obs.sum(1), obs.sum(0)
    for _ in range(_ITERATIONS):
        a = (np.where(obs, R - b[None, :], 0.0)).sum(1) / (n_row + ridge)
        b = (np.where(obs, R - a[:, None], 0.0)).sum(0) / (n_col + ridge)
    return mu + a[:, None] + b[None, :]


def _lowrank(R: np.ndarray, obs: np.ndarray, rank: int, ridge: float, seed: int) -> np.ndarray:
    """A rank-``rank`` fit u . v of the observed residuals by alternating ridge least squares (every row's and
    column's small system solved at once)."""
    rng = np.random.default_rng(seed)
    U = 0.1 * rng.standard_normal((R.shape[0], rank))
    V = 0.1 * rng.standard_normal((R.shape[1], rank))
    eye, W = ridge * np.eye(rank), obs.astype(float)
    Rw = np.where(obs, R, 0.0)
    for _ in range(_ITERATIONS):
        U = np.linalg.solve(np.einsum("ij,jk,jl->ikl", W, V, V) + eye, (Rw @ V)[..., None])[..., 0]
        V = np.linalg.solve(np.einsum("ij,ik,il->jkl", W, U, U) + eye, (Rw.T @ U)[..., None])[..., 0]
    return U @ V.T


def fit_predict(C: np.ndarray, obs: np.ndarray, model: str, ridge: float = RIDGE, seed: int = 0,
                factor_ridge: float = FACTOR_RIDGE) -> np.ndarray:
    """Every cell's prediction from the cells where ``obs`` is true (off-diagonal only)."""
    if model == "row_mean":
        overall = float(C[obs].mean())
        sums, counts = np.where(obs, C, 0.0).sum(1), obs.sum(1)
        rows = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
        return np.repeat(rows[:, None], C.shape[1], axis=1)
    if model not in MODELS or model == "auto":
        raise ConfigError(f"--model: {model!r} is not one of {', '.join(m for m in MODELS if m != 'auto')}")
    base = _additive(C, obs, ridge)
    if model == "additive":
        return base
    rank = int(model.removeprefix("lowrank"))
    for _ in range(3):  # alternate between the additive part and the interaction
        inter = _lowrank(np.where(obs, C - base, 0.0), obs, rank, factor_ridge, seed)
        base = _additive(np.where(obs, C - inter, 0.0), obs, ridge)
    return base + inter


def _cv_errors(C: np.ndarray, obs: np.ndarray, model: str, folds: int, seed: int) -> np.ndarray:
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
            pred = fit_predict(C, train, model, seed=seed)
            errors.extend(np.abs(C[held[:, 0], held[:, 1]] - pred[held[:, 0], held[:, 1]]).tolist())
    return np.array(errors)


def _half_width(errors: np.ndarray, level: float) -> float:
    """The conformal half-width: the ``ceil((n + 1) level)``-th smallest error (infinite for too few cells)."""
    rank = math.ceil((len(errors) + 1) * level)
    return math.inf if rank > len(errors) else float(np.sort(errors)[rank - 1])


def complete(languages: list[str], C: np.ndarray, model: str = "auto", level: float = 0.9, folds: int = 10,
             seed: int = 0) -> Completion:
    """Measured cells as they are; the others predicted by ``model`` (``auto``: the candidate with the least
    cross-validated median error on the measured cells) with a ``level`` prediction interval."""
    if not 0 < level < 1:
        raise ConfigError(f"--level: must be in (0, 1), got {level}")
    if model not in MODELS:
        raise ConfigError(f"--model: {model!r} is not one of {', '.join(MODELS)}")
    off = ~np.eye(len(languages), dtype=bool)
    obs = np.isfinite(C) & off
    candidates = AUTO_CANDIDATES if model == "auto" else (model,)
    scored = {m: _cv_errors(C, obs, m, folds, seed) for m in candidates}
    chosen = min(candidates, key=lambda m: (float(np.median(scored[m])) if len(scored[m]) else math.inf))
    pred = fit_predict(C, obs, chosen, seed=seed)
    half = _half_width(scored[chosen], level)
    measured = obs | ~off
    full = np.where(measured, np.where(off, C, 1.0), pred)
    lo = np.where(measured, full, pred - half)
    hi = np.where(measured, full, pred + half)
    return Completion(list(languages), full, lo, hi, measured, chosen, level, half)


def write_cells(result: Completion, out_dir: Path) -> Path:
    """``out_dir/cells.tsv``: one row per cell (target, donor, C, lo, hi, measured)."""
    L = result.languages
    rows = [(L[i], L[j], float(result.C[i, j]), float(result.lo[i, j]), float(result.hi[i, j]), bool(result.measured[i, j]))
            for i in range(len(L)) for j in range(len(L))]
    df = pl.DataFrame(rows, schema={"target": pl.String, "donor": pl.String, "C": pl.Float64, "lo": pl.Float64,
                                    "hi": pl.Float64, "measured": pl.Boolean}, orient="row")
    path = Path(out_dir) / "cells.tsv"
    write_tsv(path, df)
    return path
