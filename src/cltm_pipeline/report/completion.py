"""The report's completed matrices (``cltm complete``): measured and predicted cells told apart at a glance.

A predicted cell is drawn with a hatch of diagonal lines over its colour and its interval on hover; a
measured cell is plain. The section states the budget spent against the full grid, the model, and its
held-out error on the matrix's own measured cells (the cross-validation that chose it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from cltm_pipeline.errors import ResultsError
from cltm_pipeline.report.display import FONT, display_languages, esc, pct
from cltm_pipeline.report.figures import C_CLIP, figure_div

__all__ = ["CompletedMatrix", "read_completion", "completion_figure", "completion_section"]

_DIVERGING = [[0.0, "#2166ac"], [0.25, "#92c5de"], [0.5, "#f7f7f7"], [0.75, "#f4a582"], [1.0, "#b2182b"]]
_HATCH = "#333333"


@dataclass(frozen=True)
class CompletedMatrix:
    """A ``cltm complete`` output: its cells as square arrays and its summary.json."""

    label: str
    languages: list[str]
    C: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    measured: np.ndarray
    summary: dict[str, Any]


def read_completion(out_dir: Path, label: str | None = None) -> CompletedMatrix:
    """Read ``out_dir/cells.tsv`` and ``summary.json``; a missing file or column is one line naming it."""
    out_dir = Path(out_dir)
    try:
        cells = pl.read_csv(out_dir / "cells.tsv", separator="\t")
        summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
        langs = list(summary["languages"])
        pos = {code: k for k, code in enumerate(langs)}
        shape = (len(langs), len(langs))
        arrays = {name: np.full(shape, np.nan) for name in ("C", "lo", "hi")}
        measured = np.zeros(shape, dtype=bool)
        for row in cells.iter_rows(named=True):
            i, j = pos[row["target"]], pos[row["donor"]]
            for name, arr in arrays.items():
                arr[i, j] = np.nan if row[name] is None else row[name]
            measured[i, j] = bool(row["measured"])
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as exc:
        raise ResultsError(f"{out_dir}: not a cltm complete output ({type(exc).__name__}: {exc})") from None
    return CompletedMatrix(label or out_dir.name, langs, arrays["C"], arrays["lo"], arrays["hi"], measured, summary)


def completion_figure(cm: CompletedMatrix, languages: pl.DataFrame | None, uid: str) -> go.Figure:
    """The completed CLTM: colour = C; predicted cells hatched, their interval on hover."""
    langs = display_languages(cm.languages, languages)
    perm = [cm.languages.index(lang.code) for lang in langs]
    ix = np.ix_(perm, perm)
    C, lo, hi, meas = cm.C[ix], cm.lo[ix], cm.hi[ix], cm.measured[ix]
    names = [f"{esc(lang.name)} ({esc(lang.code)})" for lang in langs]
    hover = [[(f"target {names[i]}<br>donor {names[j]}<br>"
               + ("C undefined (zero self gain): not predicted" if not np.isfinite(C[i, j]) else
                  f"C = {C[i, j]:.3f} (measured)" if meas[i, j] else
                  f"C = {C[i, j]:.3f} <b>predicted</b><br>{pct(cm.summary['level'])} % interval "
                  f"[{lo[i, j]:.3f}, {hi[i, j]:.3f}]"))
              for j in range(len(langs))] for i in range(len(langs))]
    codes = [lang.code for lang in langs]
    fig = go.Figure(go.Heatmap(
        z=C, x=list(range(len(langs))), y=list(range(len(langs))), zmin=-C_CLIP, zmax=C_CLIP, zmid=0,
        colorscale=_DIVERGING, text=hover,
        hovertemplate="%{text}<extra></extra>", texttemplate="%{z:.2f}" if len(langs) <= 20 else None,
        colorbar={"title": {"text": "C"}, "thickness": 14},
    ))
    n = len(langs)
    xs: list[float | None] = []
    ys: list[float | None] = []
    for i, j in np.argwhere(~meas & np.isfinite(C)):  # three diagonal strokes per predicted cell: the hatch
        for d in (-0.5, 0.0, 0.5):  # the lines x - y = d through the cell, clipped to it
            xs += [j - 0.5 + max(0.0, d), j + 0.5 + min(0.0, d), None]
            ys += [i - 0.5 + max(0.0, -d), i + 0.5 + min(0.0, -d), None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": _HATCH, "width": 0.8}, hoverinfo="skip",
                             name="predicted (hatched)", showlegend=True))
    px = max(12, min(40, 720 // max(n, 1)))
    s = cm.summary
    fig.update_layout(
        title={"text": f"<b>Completed CLTM</b> · {esc(cm.label)}<br><sup>{s['measured_dual']} of {s['dual_cells']} "
                       f"dual cells measured; hatched cells predicted by {esc(s['model'])}</sup>"},
        width=px * n + 260, height=px * n + 200, font={"family": FONT}, plot_bgcolor="white",
        xaxis={"title": "donor", "tickmode": "array", "tickvals": list(range(n)), "ticktext": codes,
               "range": [-0.5, n - 0.5], "side": "bottom", "showgrid": False},
        yaxis={"title": "target", "tickmode": "array", "tickvals": list(range(n)), "ticktext": codes,
               "range": [n - 0.5, -0.5], "showgrid": False},
        legend={"orientation": "h", "y": -0.12}, uirevision=uid,
    )
    return fig


def completion_section(completed: Sequence[CompletedMatrix], languages: pl.DataFrame | None) -> str:
    """The report section of the completed matrices (empty without any)."""
    if not completed:
        return ""
    out = ['<section id="completion">', "<h2>Completed matrices: measured and predicted cells</h2>"]
    for k, cm in enumerate(completed):
        s = cm.summary
        spent = s["measured_dual"] / s["dual_cells"] if s["dual_cells"] else float("nan")
        cv = ("no held-out error (too few measured cells)" if s["cv_median_error"] is None else
              f"held-out error on its own {s['cv_cells']} measured cells ({esc(s['model'])}, cross-validated): "
              f"median {s['cv_median_error']:.3f}, 90th percentile {s['cv_p90_error']:.3f}")
        half = "unbounded" if s["half_width"] is None else f"± {s['half_width']:.3f}"
        bad = s.get("undefined_targets") or []
        undefined = (f" C is undefined for target(s) {esc(', '.join(bad))} (zero self gain): their rows are "
                     "blank, neither measured nor predicted." if bad else "")
        out.append(f"<h3>{esc(cm.label)}</h3><p>Budget: <b>{s['measured_dual']} of {s['dual_cells']}</b> dual "
                   f"cells measured ({spent:.0%} of the full grid). {cv}. Predicted cells carry a "
                   f"{pct(s['level'])} % interval of {half} (CV-conformal; valid for cells hidden at random)."
                   f"{undefined}</p>")
        fig = completion_figure(cm, languages, f"completion-{k}")
        out.append(f'<figure><div class="plot">{figure_div(fig, f"completion-{k}")}</div><figcaption>Plain cells '
                   "were measured; hatched cells are predictions (hover: the interval).</figcaption></figure>")
    out.append("</section>")
    return "\n".join(out)
