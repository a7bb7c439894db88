"""Do per-cell SE weights and URIEL+ typology covariates lower the held-out error of CLTM completion?

On the study's two real matrices (the truth), ``--draws`` random draws at 25 % and 50 % of the dual cells
measured, each completion model is scored on the hidden cells, by median and mean absolute error against
the truth:

- SE weights: measuring a cell reveals truth + noise of a known, cell-specific SE; the SE of a cell is its
  target's noise SD (``adaptive_design.noise_sd``: per row, from the matrix's own residuals; the study's seeds
  make C's SE a per-target thing through its denominator c - b) times a log-normal factor (SD 0.5) for the
  cell's own seed spread. Fitted unweighted and weighted by 1 / (SE^2 + median SE^2).
- typology: the six URIEL+ distances between the languages (``cltm typology``'s table; ``--typology-dir``
  holds ``asr.json`` and ``gender.json``, else they are computed, ~5 min) as covariates, on the noiseless
  matrix (the protocol of ``bench/completion.py``).

    .venv/bin/python bench/completion_weights.py [--draws 5] [--typology-dir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

from adaptive_design import noise_sd  # bench/ is the script's directory
from cltm_pipeline.analysis.completion import AUTO_CANDIDATES, complete, fit_predict, read_wide
from cltm_pipeline.analysis.typology import read_typology, typology_table

ROOT = Path(__file__).resolve().parents[1]


def distances(name: str, languages: list[str], typology_dir: Path | None) -> np.ndarray:
    """The URIEL+ distances of ``languages`` as an L x L x 6 array (NaN where URIEL+ has none)."""
    path = typology_dir / f"{name}.json" if typology_dir else None
    if path and path.is_file():
        table = json.loads(path.read_text())
    else:
        sheet = pl.read_csv(ROOT / "config" / "languages.tsv", separator="\t", comment_prefix="#")
        table = typology_table(languages, dict(zip(sheet["locale"], sheet["iso639_3"])))
    return np.stack(list(read_typology(table, languages).values()), axis=-1)


def run(name: str, path: Path, args: argparse.Namespace) -> None:
    languages, truth = read_wide(path)
    n = len(languages)
    off = ~np.eye(n, dtype=bool)
    cells = np.argwhere(off)
    sigma = noise_sd(truth)
    X = distances(name, languages, args.typology_dir)
    print(f"\n{path.stem} ({n} x {n}); noise SD per target: median {np.median(sigma):.3f}; {args.draws} draws")
    print(f"{'measured':>8} {'model':<18} {'unweighted':>17} {'SE-weighted':>17} {'noiseless':>17} {'+typology':>17}"
          "   (median / mean abs error of the hidden cells)")
    for frac in (0.25, 0.5):
        errs: dict[str, list[np.ndarray]] = {}
        for d in range(args.draws):
            rng = np.random.default_rng([d, 0x3E])
            take = cells[rng.permutation(len(cells))[: round(frac * len(cells))]]
            obs = np.zeros((n, n), dtype=bool)
            obs[take[:, 0], take[:, 1]] = True
            hidden = off & ~obs
            se = sigma[:, None] * np.exp(0.5 * rng.standard_normal((n, n)))
            noisy = truth + se * rng.standard_normal((n, n))
            for m in (*AUTO_CANDIDATES, "auto"):
                for key, C, kw in (("unweighted", noisy, {}), ("SE-weighted", noisy, {"se": se}),
                                   ("noiseless", truth, {}), ("+typology", truth, {"covariates": X})):
                    values = np.where(obs | ~off, C, np.nan)
                    if m == "auto":
                        pred = complete(languages, values, seed=d, **kw).C
                    else:
                        pred = fit_predict(np.where(obs, C, 0.0), obs, m, seed=d, **kw)
                    errs.setdefault(f"{m}|{key}", []).append(np.abs(pred - truth)[hidden])
        for m in (*AUTO_CANDIDATES, "auto"):
            row = []
            for key in ("unweighted", "SE-weighted", "noiseless", "+typology"):
                e = np.concatenate(errs[f"{m}|{key}"])
                row.append(f"{np.median(e):.4f} / {e.mean():.4f}")
            print(f"{frac:>8.0%} {m:<18} " + " ".join(x.rjust(17) for x in row))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--matrices", type=Path, default=ROOT.parent / "shared" / "realworld" / "study_matrices")
    ap.add_argument("--typology-dir", type=Path, help="asr.json and gender.json written by cltm typology")
    args = ap.parse_args()
    for name in ("asr", "gender"):
        run(name, args.matrices / f"{name}_mhubert.tsv", args)
