"""Adaptive design of a CLTM: which dual cells to measure next, given the ones measured so far.

Every rule scores the unmeasured off-diagonal cells and a batch takes the best-scored ones, at most
``ceil(budget / L)`` per row and per column (so one uncertain row cannot swallow a batch); ties and the
``random`` rule are broken by a seeded generator, so a batch is a pure function of (measured cells, rule, seed).

Rules (``bench/adaptive_design.py`` measures each against random choice on the study's real matrices):

- ``random``: uniform among the unmeasured cells (the baseline);
- ``balance``: the cells whose row and column hold the fewest measured cells, 1/(n_row + 1) + 1/(n_col + 1).
  This is also the *widest interval* rule of a count-normalised interval: the CV-conformal interval of
  ``analysis.completion`` has one half-width for every predicted cell, so "widest" means nothing there;
- ``committee``: disagreement of a committee, the spread (SD) of the predictions of the completion model
  refitted once per cross-validation fold (each member misses one fold of the measured cells);
- ``models``: disagreement between model classes, the SD of the additive, rank-1 and rank-2 predictions;
- ``committee_balance``: ``committee`` times ``balance``;
- ``variance``: the largest predictive variance of the additive + rank-1 model linearised at its fit (where
  a measurement most reduces the uncertainty of the target's and donor's parameters: ``balance`` plus the
  leverage of the cell on the interaction factors);
- ``widest``: the widest interval of a row-and-column-scaled interval: the expected absolute error of the
  cell's row and column (their cells' held-out errors in the committee's cross-validation, shrunk);
- ``gain``: ``widest`` less the expected absolute error of the measurement itself (sqrt(2/pi) x its SD, when
  a per-cell noise SD is known): the expected drop in the cell's error if it is measured.

An initial design (:func:`initial_design`) spreads the first cells evenly: whole permuted cyclic diagonals,
so every row and every column holds the same number of measured cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from cltm_pipeline.analysis.completion import AUTO_CANDIDATES, fit_predict
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.io import write_text

__all__ = ["RULES", "MODEL_RULES", "initial_design", "committee_spread", "error_scale", "predictive_variance",
           "model_spread", "scores", "pick", "next_batch", "read_cells", "read_trained", "write_plan",
           "read_plan", "plan_by_target"]

RULES = ("random", "balance", "committee", "models", "committee_balance", "variance", "widest", "gain")
#: Rules that need the completion model (the others look only at which cells are measured).
MODEL_RULES = ("committee", "committee_balance", "variance", "widest", "gain")
#: Committee size: the completion model refitted without each of this many folds of the measured cells.
COMMITTEE_FOLDS = 5


def initial_design(n: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` off-diagonal cells of an ``n`` x ``n`` matrix spread evenly over rows and columns: whole
    cyclic diagonals (i, i + s) of a seeded language order, then part of one more; a boolean mask."""
    total = n * (n - 1)
    if not 0 <= count <= total:
        raise ConfigError(f"initial design: {count} cells asked of a {n} x {n} matrix with {total} dual cells")
    rng = np.random.default_rng([seed, 0xD5])
    order, shifts = rng.permutation(n), 1 + rng.permutation(n - 1)
    mask = np.zeros((n, n), dtype=bool)
    for k, s in enumerate(shifts):
        take = min(n, count - k * n)
        if take <= 0:
            break
        rows = np.arange(n) if take == n else np.sort(rng.permutation(n)[:take])
        mask[order[rows], order[(rows + s) % n]] = True
    return mask


def _off(n: int) -> np.ndarray:
    return ~np.eye(n, dtype=bool)


def _fold_fits(C: np.ndarray, obs: np.ndarray, model: str, seed: int,
               folds: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``model`` refitted without each of ``folds`` seeded folds of the measured cells: the members'
    predictions, and each measured cell's absolute error when its own fold was held out (NaN elsewhere)."""
    cells = np.argwhere(obs)
    order = np.random.default_rng([seed, 0xC0]).permutation(len(cells))
    k = max(2, min(folds, len(cells)))
    preds, errors = [], np.full(C.shape, np.nan)
    for f in range(k):
        train = obs.copy()
        held = cells[order[f::k]]
        train[held[:, 0], held[:, 1]] = False
        if train.any():
            pred = fit_predict(C, train, model, seed=seed)
            preds.append(pred)
            errors[held[:, 0], held[:, 1]] = np.abs(C[held[:, 0], held[:, 1]] - pred[held[:, 0], held[:, 1]])
    return preds, errors


def committee_spread(C: np.ndarray, obs: np.ndarray, model: str, seed: int = 0,
                     folds: int = COMMITTEE_FOLDS) -> np.ndarray:
    """Per cell, the SD of ``model``'s predictions over a committee, each member fitted without one fold of
    the measured cells (seeded folds)."""
    preds, _ = _fold_fits(C, obs, model, seed, folds)
    return np.std(preds, axis=0) if len(preds) > 1 else np.zeros(C.shape)


def error_scale(C: np.ndarray, obs: np.ndarray, model: str, seed: int = 0, folds: int = COMMITTEE_FOLDS,
                prior: float = 3.0) -> np.ndarray:
    """Per cell, the expected absolute error of ``model``: the mean held-out error of the cell's row and of
    its column (each shrunk towards the overall mean as if ``prior`` more cells sat at it), averaged."""
    _, errors = _fold_fits(C, obs, model, seed, folds)
    seen = np.isfinite(errors)
    overall = float(errors[seen].mean()) if seen.any() else 0.0
    e = np.where(seen, errors, 0.0)
    row = (e.sum(1) + prior * overall) / (seen.sum(1) + prior)
    col = (e.sum(0) + prior * overall) / (seen.sum(0) + prior)
    return 0.5 * (row[:, None] + col[None, :])


def model_spread(C: np.ndarray, obs: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per cell, the SD of the predictions of the model classes ``auto`` chooses among."""
    return np.std([fit_predict(C, obs, m, seed=seed) for m in AUTO_CANDIDATES], axis=0)


def predictive_variance(C: np.ndarray, obs: np.ndarray, model: str = "lowrank1", seed: int = 0,
                        ridge: float = 1.0) -> np.ndarray:
    """Per cell, the predictive variance (in units of the noise variance) of the additive + rank-1 model
    linearised at its fit: 1/(n_row + r) + 1/(n_col + r) for the target and donor effects, plus
    v_j^2 / (sum of v^2 over the row's measured donors + r) + u_i^2 / (sum of u^2 over the column's measured
    targets + r) for the interaction u_i v_j (its first singular pair); r = ``ridge``."""
    pred = fit_predict(C, obs, model if model.startswith("lowrank") else "lowrank1", seed=seed)
    inter = pred - pred.mean(1, keepdims=True) - pred.mean(0, keepdims=True) + pred.mean()
    left, sv, right = np.linalg.svd(inter)
    u, v = left[:, 0] * math.sqrt(sv[0]), right[0] * math.sqrt(sv[0])
    w = obs.astype(float)
    var = 1.0 / (w.sum(1)[:, None] + ridge) + 1.0 / (w.sum(0)[None, :] + ridge)
    return var + (v**2)[None, :] / ((w @ v**2)[:, None] + ridge) + (u**2)[:, None] / ((u**2 @ w)[None, :] + ridge)


def _balance(obs: np.ndarray) -> np.ndarray:
    return 1.0 / (obs.sum(1)[:, None] + 1.0) + 1.0 / (obs.sum(0)[None, :] + 1.0)


def scores(C: np.ndarray, obs: np.ndarray, rule: str, model: str = "lowrank1", seed: int = 0,
           noise: np.ndarray | None = None) -> np.ndarray:
    """Each cell's acquisition score under ``rule`` (higher = measure sooner); ``-inf`` where the cell is
    measured or on the diagonal. ``C`` holds the measured values where ``obs`` is true; ``noise`` (for
    ``gain``) the SD a measurement of each cell would have (its SE), 0 where unknown."""
    if rule not in RULES:
        raise ConfigError(f"design rule {rule!r} is not one of {', '.join(RULES)}")
    free = _off(len(C)) & ~obs
    if rule == "random":
        s = np.zeros(C.shape)
    elif rule == "balance":
        s = _balance(obs)
    elif rule == "committee":
        s = committee_spread(C, obs, model, seed)
    elif rule == "models":
        s = model_spread(C, obs, seed)
    elif rule == "variance":
        s = predictive_variance(C, obs, model, seed)
    elif rule == "widest":
        s = error_scale(C, obs, model, seed)
    elif rule == "gain":
        known = np.zeros(C.shape) if noise is None else np.nan_to_num(noise, nan=0.0)
        s = error_scale(C, obs, model, seed) - math.sqrt(2 / math.pi) * known
    else:
        s = committee_spread(C, obs, model, seed) * _balance(obs)
    return np.where(free, s, -np.inf)


def pick(score: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """The ``budget`` best-scored cells (finite score), at most ``ceil(budget / L)`` per row and per column
    while the cap can be met, ties broken by a seeded shuffle; an array of (row, column) in pick order."""
    n = len(score)
    free = np.argwhere(np.isfinite(score))
    budget = min(budget, len(free))
    if budget <= 0:
        return np.zeros((0, 2), dtype=int)
    jitter = np.random.default_rng([seed, 0xB1]).permutation(len(free))
    values = score[free[:, 0], free[:, 1]]
    order = free[np.lexsort((jitter, -values))]  # best score first, seeded tie-break
    cap = math.ceil(budget / n)
    rows, cols = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    chosen: list[tuple[int, int]] = []
    taken = np.zeros(len(order), dtype=bool)
    while len(chosen) < budget:
        for k, (i, j) in enumerate(order):
            if len(chosen) == budget:
                break
            if not taken[k] and rows[i] < cap and cols[j] < cap:
                chosen.append((int(i), int(j)))
                taken[k] = True
                rows[i] += 1
                cols[j] += 1
        cap += 1  # the cap could not be met with what is left: relax it
    return np.array(chosen, dtype=int)


def next_batch(C: np.ndarray, obs: np.ndarray, budget: int, rule: str = "balance", model: str = "lowrank1",
               seed: int = 0, noise: np.ndarray | None = None,
               trained: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The next ``budget`` dual cells to measure under ``rule``, as (row, column) pairs in pick order, and
    the scores they were picked by; with no cell trained yet, the initial design's spread (no scores).
    ``trained`` (default ``obs``) marks cells already trained whose C may be undefined (zero self gain):
    never picked again; rules that only count cells count them; with none of them measured, ``balance``."""
    if budget < 0:
        raise ConfigError(f"--budget: must be >= 0, got {budget}")
    off = _off(len(C))
    obs = obs & off
    trained = obs if trained is None else (trained | obs) & off
    if not trained.any():
        return np.argwhere(initial_design(len(C), min(budget, len(C) * (len(C) - 1)), seed)), None
    if rule not in MODEL_RULES + ("models",) or not obs.any():
        rule = rule if rule in ("random", "balance") else "balance"
        score = scores(C, trained, rule, model, seed, noise)
    else:
        score = np.where(trained, -np.inf, scores(C, obs, rule, model, seed, noise))
    return pick(score, budget, seed), score


def read_trained(path: Path, languages: Sequence[str]) -> np.ndarray:
    """The dual cells of a workflow matrix's ``cells.tsv`` with at least one seed trained (``n_seeds`` > 0),
    defined C or not; without that column (``cltm complete``'s cells), the measured ones."""
    index = {lang: i for i, lang in enumerate(languages)}
    out = np.zeros((len(languages), len(languages)), dtype=bool)
    try:
        df = pl.read_csv(path, separator="\t", infer_schema_length=0)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ConfigError(f"{path}: cannot read the cells ({exc})") from None
    if "n_seeds" not in df.columns:
        return out
    for target, donor, n in df.select("target", "donor", "n_seeds").iter_rows():
        if target in index and donor in index and n not in (None, "", "0"):
            out[index[target], index[donor]] = True
    return out & _off(len(languages))


def read_cells(path: Path, languages: Sequence[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The measured cells of a long cells TSV (``target donor C``, optional ``measured`` and ``se``: the
    workflow's matrix ``cells.tsv`` or ``cltm complete``'s): the languages (``languages``, or every target and
    donor named, in order of appearance), C and SE as square arrays, NaN where not measured. Diagonal rows
    are ignored. Any problem is one line naming the file and the row."""
    path = Path(path)
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the cells ({exc})") from None
    header = lines[0].split("\t") if lines else []
    missing = [c for c in ("target", "donor", "C") if c not in header]
    if missing:
        raise ConfigError(f"{path}: row 1: no column {', '.join(missing)} (need target, donor, C)")
    rows = []
    for k, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ConfigError(f"{path}: row {k}: {len(fields)} fields, the header has {len(header)}")
        rows.append((k, dict(zip(header, fields))))
    if languages is None:
        languages = list(dict.fromkeys(name for _, r in rows for name in (r["target"], r["donor"])))
    langs = list(languages)
    if len(langs) < 2:
        raise ConfigError(f"{path}: fewer than two languages: no dual cell to plan")
    index = {lang: i for i, lang in enumerate(langs)}
    C, se = np.full((len(langs), len(langs)), np.nan), np.full((len(langs), len(langs)), np.nan)
    seen: set[tuple[str, str]] = set()
    for k, r in rows:
        for side in ("target", "donor"):
            if r[side] not in index:
                raise ConfigError(f"{path}: row {k}: unknown language {r[side]!r} ({side}; not in --languages)")
        if (r["target"], r["donor"]) in seen:
            raise ConfigError(f"{path}: row {k}: cell {r['target']} <- {r['donor']} appears twice")
        seen.add((r["target"], r["donor"]))
        if r["target"] == r["donor"] or r.get("measured", "true").lower() not in ("true", "1"):
            continue
        i, j = index[r["target"]], index[r["donor"]]
        for name, out in (("C", C), ("se", se)):
            text = r.get(name, "").strip()
            try:
                out[i, j] = float(text) if text not in ("", "NA") else math.nan
            except ValueError:
                raise ConfigError(f"{path}: row {k}: {name} {text!r} is not a number") from None
    return langs, C, se


def write_plan(path: Path, languages: Sequence[str], cells: np.ndarray, score: np.ndarray | None,
               rule: str) -> None:
    """``path``: the planned cells in pick order (``target donor rank rule score``)."""
    lines = ["target\tdonor\trank\trule\tscore"]
    for rank, (i, j) in enumerate(cells, start=1):
        value = "NA" if score is None else repr(float(score[i, j]))
        lines.append(f"{languages[i]}\t{languages[j]}\t{rank}\t{rule}\t{value}")
    write_text(Path(path), "\n".join(lines) + "\n")


def read_plan(path: Path) -> list[tuple[str, str]]:
    """The (target, donor) cells of a plan written by :func:`write_plan`, in pick order."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t")[:2] != ["target", "donor"]:
        raise ConfigError(f"{path}: row 1: not a cltm plan (expected target, donor, rank, rule, score)")
    return [(f[0], f[1]) for f in (line.split("\t") for line in lines[1:] if line.strip())]


def plan_by_target(path: Path, languages: Sequence[str]) -> dict[str, list[str]]:
    """A plan's cells as target -> donors, both in ``languages`` order; targets without a cell left out."""
    planned = set(read_plan(path))
    cells = {t: [d for d in languages if (t, d) in planned] for t in languages}
    return {t: ds for t, ds in cells.items() if ds}
