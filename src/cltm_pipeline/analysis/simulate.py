"""Simulated CLTM studies with a known answer: the ground truth the inference is calibrated against.

A study of L targets and n paired seeds: P(i, donor, s) = b_i + gain · Δ_i + u_is + v_js + e_ijs, with
gain 0 for single, 1 for self and C_ij for dual i+j. u_is is the seed's target-subset offset shared by
every cell of target i (the pairing the tests exploit), v_js the donor subset's offset shared by every
target that draws donor j at seed s, e independent cell noise. Used by bench/inference_calibration.py
and its fast test; also a power calculator ("how many seeds does my noise level need?"). numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

__all__ = ["Study", "simulate_study"]


@dataclass(frozen=True)
class Study:
    """One simulated study: its run table and the truth it was drawn from."""

    runs: pl.DataFrame
    languages: tuple[str, ...]
    C: np.ndarray  # true C, [target, donor]; diagonal 1
    gain: np.ndarray  # true self gain Δ_i per target


def simulate_study(
    rng: np.random.Generator,
    C: np.ndarray,
    gain: np.ndarray,
    n_seeds: int,
    *,
    noise: float = 1.0,
    target_offset: float = 1.0,
    donor_offset: float = 0.5,
    baseline: float = 10.0,
) -> Study:
    """Draw one study with true matrix ``C`` and self gains ``gain`` (in units of ``noise``)."""
    C, gain = np.asarray(C, dtype=float), np.asarray(gain, dtype=float)
    L = gain.size
    langs = tuple(f"l{i:02d}" for i in range(L))
    seeds = np.arange(n_seeds)
    u = rng.normal(0.0, target_offset, size=(L, n_seeds))
    v = rng.normal(0.0, donor_offset, size=(L, n_seeds))
    e_single = rng.normal(0.0, noise, size=(L, n_seeds))
    e_cell = rng.normal(0.0, noise, size=(L, L, n_seeds))
    truth = C.copy()
    np.fill_diagonal(truth, 1.0)
    single = baseline + u + e_single
    cells = baseline + truth[:, :, None] * gain[:, None, None] + u[:, None, :] + v[None, :, :] + e_cell
    target = [langs[i] for i in range(L) for _ in range(n_seeds)]
    rows_t, rows_d, rows_s, rows_v = list(target), [None] * (L * n_seeds), list(np.tile(seeds, L)), list(single.ravel())
    ii, jj = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    rows_t += [langs[i] for i in ii.ravel() for _ in range(n_seeds)]
    rows_d += [langs[j] for j in jj.ravel() for _ in range(n_seeds)]
    rows_s += list(np.tile(seeds, L * L))
    rows_v += list(cells.ravel())
    runs = pl.DataFrame(
        {"target": rows_t, "donor": rows_d, "seed": [int(s) for s in rows_s], "value": [float(x) for x in rows_v]},
        schema={"target": pl.String, "donor": pl.String, "seed": pl.Int64, "value": pl.Float64},
    )
    return Study(runs=runs, languages=langs, C=truth, gain=gain)
