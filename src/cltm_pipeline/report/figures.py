"""The report's plotly figures: the CLTM and M heatmaps of a matrix, and the small plots of its analyses.

Layout of a heatmap (rows are targets i, columns donors j, as in ``cltm.py``): languages are grouped by
family (alphabetical by family, then by name), a strip of family-coloured cells with the locale codes runs
along the top and the left, tick labels carry the language names in their family's colour, family blocks
on the diagonal are outlined (dashed; a solid outline for a top-level family split into several
sub-families), self cells are outlined, missing or undefined cells are grey with "–", and a row whose
self gain is not clearly positive is boxed in amber and its label carries a ⚠. Every figure carries a
fixed id, so the same inputs give the same bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from cltm_pipeline.analysis.inference import ALPHA
from cltm_pipeline.analysis.properties import top_family
from cltm_pipeline.analysis.matrix import CLTMResult
from cltm_pipeline.io import write_text
from cltm_pipeline.report.data import Analysis, Counted, LearningCurve, MatrixEntry
from cltm_pipeline.report.display import (
    FLAG_COLOR, FONT, PALETTE, Lang, display_languages, esc, family_key, fmt, num, pct, slugify,
)

__all__ = ["C_CLIP", "figures", "figure_div", "write_figure_html", "interval_text", "display_order", "m_range",
           "summary_figure", "strength_figure", "map_figure", "projection_figure", "curve_figure"]

#: The CLTM colour scale is centred on 0 and saturates at +-C_CLIP (printed values are never clipped).
C_CLIP = 1.5

_MISSING_COLOR = "#c4c4c4"
_LEGEND_ENTRY = 190  # px of text per legend entry (families are listed in columns under the heatmap)
_LEGEND_ITEM_PAD = 40  # plotly adds the symbol and gaps to each entry
# Diverging: blue (interference) - near white (no effect) - red (transfer); RdBu reversed.
_DIVERGING = [
    [0.0, "#053061"], [0.1, "#2166ac"], [0.2, "#4393c3"], [0.3, "#92c5de"], [0.4, "#d1e5f0"],
    [0.5, "#f7f7f7"],
    [0.6, "#fddbc7"], [0.7, "#f4a582"], [0.8, "#d6604d"], [0.9, "#b2182b"], [1.0, "#67001f"],
]
_PLOTLY_CONFIG = {
    "displaylogo": False,
    "responsive": False,
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"],
    "toImageButtonOptions": {"format": "svg"},
}


# --------------------------------------------------------------------------------------------------
# The heatmaps
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """Pixel sizes of one heatmap, from its number of languages (see :func:`_geometry`)."""

    cell: int  # px per matrix cell
    font: float  # cell value font size
    show_values: bool
    tick_font: float
    strip_font: float
    strip_w: float  # width of the left family strip, in cells (wide enough for the locale codes)
    top_codes: bool  # whether the codes fit in the top strip's cells
    margin_l: int
    margin_t: int
    margin_r: int
    margin_b: int
    width: int
    height: int


_MAX_WIDTH = 1340  # px: a figure of up to ~55 languages fits a 1400 px wide window without scrolling


def _cell_px(n: int) -> int:
    """The starting cell size for n languages, before the figure is fitted to the page width."""
    return int(min(52, max(16, 1060 // max(n, 1))))


def _geometry(langs: Sequence[Lang], n_legend: int, flagged: bool) -> _Geometry:
    """Pixel layout: cells shrink with the number of languages (52 px for a handful, 19-20 px at 54)."""
    n = max(len(langs), 1)
    tick_font_for = lambda cell: round(min(13.0, max(10.0, cell * 0.5)), 1)  # noqa: E731
    longest = max((len(lang.name) for lang in langs), default=4)
    longest_code = max((len(lang.code) for lang in langs), default=2)
    margin_r = 112  # colour bar and its tick labels
    cell = _cell_px(n)
    while True:
        tick_font = tick_font_for(cell)
        strip_font = round(min(12.0, max(7.5, cell * 0.4)), 1)
        code_px = longest_code * 0.62 * strip_font + 6
        strip_w = max(1.0, math.ceil(code_px / cell * 4) / 4)
        margin_l = int(36 + (longest + (2 if flagged else 0)) * tick_font * 0.58)
        width = margin_l + int((n + strip_w) * cell) + margin_r
        if width <= _MAX_WIDTH or cell <= 16:
            break
        cell -= 1
    font = round(min(12.0, max(7.5, cell * 0.4)), 1)
    show_values = cell >= 19  # below that, two decimals no longer fit: values stay on hover
    top_codes = code_px <= cell
    margin_t = int(116 + longest * tick_font * 0.47)
    width = max(width, 600)
    # A horizontal legend wraps at the plot area's width.
    legend_cols = max(1, (width - margin_l - margin_r) // (_LEGEND_ENTRY + _LEGEND_ITEM_PAD))
    margin_b = 30 + 21 * math.ceil(n_legend / legend_cols)
    height = margin_t + (n + 1) * cell + margin_b
    return _Geometry(cell, font, show_values, tick_font, strip_font, strip_w, top_codes, margin_l, margin_t,
                     margin_r, margin_b, width, height)


def _tick_text(lang: Lang, flagged: bool = False) -> str:
    """A tick label: the name in its family's colour, after an amber ⚠ when the row is flagged."""
    label = f'<span style="color:{lang.text_color}">{esc(lang.name)}</span>'
    if flagged:
        label = f'<span style="color:{FLAG_COLOR}"><b>⚠</b></span> ' + label
    return label


def _runs(langs: Sequence[Lang], key) -> list[tuple[str, int, int]]:
    """Contiguous runs of equal ``key(lang)``: (value, first index, last index)."""
    runs: list[tuple[str, int, int]] = []
    for k, lang in enumerate(langs):
        value = key(lang)
        if runs and runs[-1][0] == value:
            runs[-1] = (value, runs[-1][1], k)
        else:
            runs.append((value, k, k))
    return runs


def _rect(x0: float, x1: float, y0: float, y1: float, color: str, width: float, dash: str = "solid") -> dict:
    """An unfilled rectangle in data coordinates, drawn above the heatmap."""
    return {
        "type": "rect", "xref": "x", "yref": "y", "x0": x0, "x1": x1, "y0": y0, "y1": y1,
        "line": {"color": color, "width": width, "dash": dash}, "fillcolor": "rgba(0,0,0,0)", "layer": "above",
    }


def _base_figure(
    langs: Sequence[Lang],
    flags: Sequence[bool],
    z: np.ndarray,
    hover: list[list[str]],
    missing_hover: list[list[str]],
    *,
    title: str,
    subtitle: str,
    texttemplate: str,
    zmax: float,
    colorbar: dict,
    uid: str,
    marks: Sequence[tuple[str, str, list[int], list[int]]] = (),
) -> go.Figure:
    """The heatmap with family strips, outlines, flags and legend; ``z`` is already in display order.

    ``marks``: (legend name, corner, display columns, display rows) of cells to mark with a small symbol
    in a corner of the cell ("tr" top right, "tl" top left): the significance marks of the CLTM.
    """
    n = len(langs)
    families = sorted({lang.family for lang in langs}, key=family_key)
    n_legend = len(families) + 1 + (1 if any(flags) else 0) + len(marks)
    geo = _geometry(langs, n_legend, any(flags))
    idx = list(range(n))
    fig = go.Figure()
    _add_family_strips(fig, langs, flags, families, geo)
    _add_missing_layer(fig, z, missing_hover, geo)
    # The values.
    fig.add_trace(go.Heatmap(
        x=idx, y=idx, z=[[num(z[i, j]) for j in idx] for i in idx], zmin=-zmax, zmax=zmax, zmid=0,
        colorscale=_DIVERGING, xgap=1, ygap=1, hovertext=hover, hoverongaps=False,
        hovertemplate="%{hovertext}<extra></extra>", texttemplate=texttemplate if geo.show_values else "",
        textfont={"size": geo.font, "family": FONT}, colorbar=colorbar, name="value",
    ))
    _add_legend(fig, families, {lang.family: lang.color for lang in langs}, any(flags))
    _add_marks(fig, marks, geo)
    fig.update_layout(**_heatmap_layout(langs, flags, geo, title, subtitle, uid))
    return fig


def _add_family_strips(fig: go.Figure, langs: Sequence[Lang], flags: Sequence[bool], families: Sequence[str],
                       geo: _Geometry) -> None:
    """Family strips: one heatmap with a column at x = -1 (rows) and a row at y = -1 (columns)."""
    n = len(langs)
    fam_color = {lang.family: lang.color for lang in langs}
    fam_index = {fam: k for k, fam in enumerate(families)}
    k_fam = max(len(families), 1)
    scale: list[list[Any]] = []
    for k, fam in enumerate(families):
        scale += [[k / k_fam, fam_color[fam]], [(k + 1) / k_fam, fam_color[fam]]]
    if not scale:
        scale = [[0, "#888888"], [1, "#888888"]]
    values = [fam_index[lang.family] + 0.5 for lang in langs]
    codes = [esc(lang.code) for lang in langs]
    desc = [
        f"<b>{esc(lang.name)}</b> ({esc(lang.code)})<br>{esc(lang.family)}"
        + ("<br>⚠ self gain not clearly positive" if flags[k] else "")
        for k, lang in enumerate(langs)
    ]
    strip_style = {
        "zmin": 0, "zmax": k_fam, "colorscale": scale, "showscale": False, "xgap": 1, "ygap": 1,
        "hoverongaps": False, "hovertemplate": "%{hovertext}<extra></extra>", "texttemplate": "%{text}",
        "textfont": {"size": geo.strip_font, "family": FONT, "weight": "bold"}, "name": "family",
    }
    w = geo.strip_w
    fig.add_trace(go.Heatmap(x0=-0.5 - w / 2, dx=w, y=list(range(n)), z=[[v] for v in values],
                             text=[[c] for c in codes], hovertext=[[d] for d in desc], **strip_style))
    top_text = [codes] if geo.top_codes else [[""] * n]
    fig.add_trace(go.Heatmap(x=list(range(n)), y0=-1, dy=1, z=[values], text=top_text, hovertext=[desc],
                             **strip_style))


def _add_missing_layer(fig: go.Figure, z: np.ndarray, missing_hover: list[list[str]], geo: _Geometry) -> None:
    """Missing / undefined cells: a grey layer under the values, "–" in the cell, the reason on hover."""
    idx = list(range(z.shape[0]))
    nan_z = [[0 if not math.isfinite(float(z[i, j])) else None for j in idx] for i in idx]
    fig.add_trace(go.Heatmap(
        x=idx, y=idx, z=nan_z, zmin=0, zmax=1, colorscale=[[0, _MISSING_COLOR], [1, _MISSING_COLOR]],
        showscale=False, xgap=1, ygap=1, hovertext=missing_hover, hoverongaps=False,
        text=[["–" if v is not None else "" for v in row] for row in nan_z],
        hovertemplate="%{hovertext}<extra></extra>", texttemplate="%{text}" if geo.show_values else "",
        textfont={"size": geo.font + 1, "family": FONT, "color": "#555555"}, name="missing",
    ))


def _add_legend(fig: go.Figure, families: Sequence[str], fam_color: dict[str, str], flagged: bool) -> None:
    """Family legend (dummy traces), plus the grey and amber marks the caption explains."""
    for fam in families:
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=fam, showlegend=True, hoverinfo="skip",
            marker={"symbol": "square", "size": 13, "color": fam_color[fam], "line": {"width": 0}},
        ))
    fig.add_trace(go.Scatter(
        x=[None], y=[None], mode="markers", name="missing or undefined (–)", showlegend=True, hoverinfo="skip",
        marker={"symbol": "square", "size": 13, "color": _MISSING_COLOR},
    ))
    if flagged:
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="lines", name="⚠ ill-conditioned row", showlegend=True, hoverinfo="skip",
            line={"color": FLAG_COLOR, "width": 3},
        ))


def _add_marks(fig: go.Figure, marks: Sequence[tuple[str, str, list[int], list[int]]], geo: _Geometry) -> None:
    """Significance marks: a symbol in a corner of the cell, small enough to leave the value readable."""
    # Tiny and tucked into the corner: at 20 px cells (54 languages) the printed value must stay readable.
    size = round(max(3.0, min(7.0, geo.cell * 0.12)), 1)
    off = 0.5 - (size / 2 + 1.5) / geo.cell
    for name, corner, xs, ys in marks:
        dx = off if corner == "tr" else -off
        symbol = "circle" if corner == "tr" else "diamond"
        fig.add_trace(go.Scatter(
            x=[x + dx for x in xs] or [None], y=[y - off for y in ys] or [None], mode="markers", name=name,
            showlegend=True, hoverinfo="skip",
            marker={"symbol": symbol, "size": size, "color": "#1a1a1a", "line": {"width": 0}},
        ))


def _outlines(langs: Sequence[Lang], flags: Sequence[bool], geo: _Geometry) -> list[dict]:
    """Family blocks (dashed; solid for a top-level family split into sub-families), self cells, flagged rows."""
    n = len(langs)
    shapes: list[dict] = []
    for _, a, b in _runs(langs, lambda lang: lang.family):
        shapes.append(_rect(a - 0.5, b + 0.5, a - 0.5, b + 0.5, "#1a1a1a", 1.6, "dash"))
    for _, a, b in _runs(langs, lambda lang: top_family(lang.family)):
        if len({lang.family for lang in langs[a:b + 1]}) > 1:
            shapes.append(_rect(a - 0.5, b + 0.5, a - 0.5, b + 0.5, "#1a1a1a", 2.2, "solid"))
    inset = 0.5 - min(0.12, 2.0 / geo.cell)
    for k in range(n):
        shapes.append(_rect(k - inset, k + inset, k - inset, k + inset, "#1a1a1a", 1.2))
    for k in range(n):
        if flags[k]:
            shapes.append(_rect(-0.5 - geo.strip_w, n - 0.5, k - 0.5, k + 0.5, FLAG_COLOR, 3.0))
    return shapes


def _heatmap_layout(langs: Sequence[Lang], flags: Sequence[bool], geo: _Geometry, title: str, subtitle: str,
                    uid: str) -> dict[str, Any]:
    """The layout of a heatmap: title, size, axes with the coloured language labels, outlines, legend."""
    n, idx, w = len(langs), list(range(len(langs))), geo.strip_w
    legend_y = -10 / ((n + 1) * geo.cell)  # just below the plot area, in paper units
    return dict(
        title={"text": title, "x": 0, "xanchor": "left", "xref": "container", "y": 1, "yref": "container",
               "yanchor": "top", "pad": {"t": 14, "l": 14}, "font": {"size": 16, "family": FONT},
               "subtitle": {"text": subtitle, "font": {"size": 12, "color": "#5b6270", "family": FONT}}},
        width=geo.width, height=geo.height,
        margin={"l": geo.margin_l, "r": geo.margin_r, "t": geo.margin_t, "b": geo.margin_b, "autoexpand": True},
        font={"family": FONT, "size": 12, "color": "#1a1a1a"},
        paper_bgcolor="#ffffff", plot_bgcolor="#ffffff",
        xaxis={
            "tickmode": "array", "tickvals": idx, "ticktext": [_tick_text(lang) for lang in langs],
            "side": "top", "tickangle": -50, "range": [-0.5 - w, n - 0.5], "showgrid": False, "zeroline": False,
            "ticks": "", "tickfont": {"size": geo.tick_font}, "automargin": True, "constrain": "domain",
            "title": {"text": "donor language <i>j</i> (its N units added to the target's N)",
                      "font": {"size": 13}, "standoff": 8},
        },
        yaxis={
            "tickmode": "array", "tickvals": idx,
            "ticktext": [_tick_text(lang, flags[k]) for k, lang in enumerate(langs)],
            "range": [n - 0.5, -1.5], "showgrid": False, "zeroline": False, "ticks": "",
            "tickfont": {"size": geo.tick_font}, "automargin": True, "scaleanchor": "x", "scaleratio": 1,
            "constrain": "domain",
            "title": {"text": "target language <i>i</i> (test set)", "font": {"size": 13}, "standoff": 8},
        },
        shapes=_outlines(langs, flags, geo),
        showlegend=True,
        legend={
            "orientation": "h", "x": 0, "xanchor": "left", "y": legend_y, "yanchor": "top",
            "entrywidth": _LEGEND_ENTRY, "entrywidthmode": "pixels", "itemclick": False, "itemdoubleclick": False,
            "font": {"size": 11.5}, "traceorder": "normal",
        },
        hoverlabel={"font": {"family": FONT, "size": 12}, "align": "left", "bgcolor": "#ffffff"},
        modebar={"orientation": "v"},
        meta={"cltm_figure": uid, "values_printed": geo.show_values, "cell_px": geo.cell},
    )


def _lang_label(lang: Lang) -> str:
    """'Name (code)', escaped."""
    return f"{esc(lang.name)} ({esc(lang.code)})"


def display_order(entry: MatrixEntry, languages: pl.DataFrame | None) -> tuple[list[Lang], list[int]]:
    """The matrix's languages in display order, and their positions in the result's order."""
    langs = display_languages(entry.result.languages, languages)
    pos = {code: k for k, code in enumerate(entry.result.languages)}
    return langs, [pos[lang.code] for lang in langs]


def _missing_reasons(entry: MatrixEntry, perm: Sequence[int], langs: Sequence[Lang]) -> list[list[str]]:
    """Hover text for the grey cells: why C (or M) is not defined there."""
    r = entry.result
    missing = set(r.missing)
    out: list[list[str]] = []
    for i_d, i in enumerate(perm):
        t = r.languages[i]
        row = []
        for j_d, j in enumerate(perm):
            d = r.languages[j]
            head = f"target {_lang_label(langs[i_d])}<br>donor {_lang_label(langs[j_d])}<br>"
            reasons = []
            if (t, None) in missing:
                reasons.append(f"no single run of {esc(t)} (b missing)")
            if (t, t) in missing and i != j:
                reasons.append(f"no self run {esc(t)}+{esc(t)} (c missing)")
            if (t, d) in missing:
                reasons.append(f"cell {esc(t)}+{esc(d)} not run" if i != j else
                               f"no self run {esc(t)}+{esc(t)} (c missing)")
            if not reasons:
                gain = float(r.self_gain[i])
                reasons.append("c − b = 0: C undefined" if gain == 0 else "undefined")
            row.append(head + "<b>" + "; ".join(reasons) + "</b>")
        out.append(row)
    return out


def _cltm_hover(entry: MatrixEntry, perm: Sequence[int], langs: Sequence[Lang]) -> list[list[str]]:
    """Hover text of every CLTM cell: C with its SE, interval and tests, M, a, b, c and seed counts."""
    r = entry.result
    ci = f"{pct(r.ci)} %"
    out: list[list[str]] = []
    for i_d, i in enumerate(perm):
        row = []
        for j_d, j in enumerate(perm):
            lines = [
                f"target <b>{_lang_label(langs[i_d])}</b> · {esc(langs[i_d].family)}",
                f"donor <b>{_lang_label(langs[j_d])}</b> · {esc(langs[j_d].family)}",
                f"<b>C = {fmt(r.C[i, j])}</b> ± {fmt(r.se[i, j])} (SE, delta method)",
            ]
            if i == j:
                lines.append("self cell: C = 1 by construction")
            else:
                lines.append(f"{ci} CI {interval_text(r, i, j)} (Fieller, {int(r.n_paired[i, j])} paired seeds)")
            if i != j and math.isfinite(r.p_zero[i, j]):
                lines.append(f"vs 0: p = {fmt(r.p_zero[i, j], '.3g')}, q = {fmt(r.q_zero[i, j], '.3g')}"
                             f"{' <b>●</b>' if r.q_zero[i, j] < ALPHA else ''} · vs 1: p = {fmt(r.p_one[i, j], '.3g')}, "
                             f"q = {fmt(r.q_one[i, j], '.3g')}{' <b>◆</b>' if r.q_one[i, j] < ALPHA else ''}")
                if not r.testable()[i, j]:
                    lines.append(f"untestable: with {int(r.n_paired[i, j])} seeds the {r.test} test's smallest p is "
                                 f"{fmt(r.p_floor[i, j], '.3g')} ≥ {ALPHA:g}; no mark means too few seeds, not no effect")
            if r.partial[i, j]:
                lines.append("partial: some seeds of single, self or this cell are missing; a, b, c, C use the "
                             "paired seeds only")
            lines.append(f"M = {fmt(r.M[i, j] * 100, '+.1f')} %" if math.isfinite(r.M[i, j]) or r.baseline[i] > 0
                         else "M undefined: b ≤ 0")
            lines.append(f"a = {fmt(r.mu[i, j], '.4f')} · b = {fmt(r.baseline[i], '.4f')} · "
                         f"c = {fmt(r.mu[i, i], '.4f')}")
            lines.append(f"seeds: {int(r.n_seeds[i, j])} cell · {int(r.n_single[i])} single · "
                         f"{int(r.n_seeds[i, i])} self")
            if r.ill_conditioned[i]:
                lines.append(f'<span style="color:{FLAG_COLOR}">⚠ row ill-conditioned: self gain '
                             f"{fmt(r.self_gain[i], '.4f')} ± {fmt(r.self_gain_se[i], '.4f')}</span>")
            row.append("<br>".join(lines))
        out.append(row)
    return out


def interval_text(r: CLTMResult, i: int, j: int) -> str:
    """The Fieller set of cell (i, j) as written: [lo, hi], two rays, the whole line, or n/a."""
    kind = str(r.ci_kind[i, j])
    if kind == "bounded":
        return f"[{fmt(r.ci_low[i, j])}, {fmt(r.ci_high[i, j])}]"
    if kind == "rays":
        return f"(−∞, {fmt(r.ci_gap_low[i, j])}] ∪ [{fmt(r.ci_gap_high[i, j])}, ∞)"
    if kind == "unbounded":
        return "(−∞, ∞)"
    if math.isfinite(r.ci_low[i, j]) or math.isfinite(r.ci_high[i, j]):  # written before ci_kind existed
        return f"[{fmt(r.ci_low[i, j])}, {fmt(r.ci_high[i, j])}]"
    return "n/a"


def _significance_marks(r: CLTMResult, perm: Sequence[int]) -> list[tuple[str, str, list[int], list[int]]]:
    """Cells whose C differs from 0 (●, top right) and from 1 (◆, top left) at BH q < ALPHA, display order."""
    if not np.isfinite(r.q_zero).any() and not np.isfinite(r.q_one).any():
        return []  # a matrix written before the significance columns: no legend entries for nothing
    out = []
    for name, corner, q in ((f"● C ≠ 0 (BH q < {ALPHA:g})", "tr", r.q_zero), (f"◆ C ≠ 1 (BH q < {ALPHA:g})", "tl", r.q_one)):
        xs, ys = [], []
        for i_d, i in enumerate(perm):
            for j_d, j in enumerate(perm):
                if i != j and math.isfinite(q[i, j]) and q[i, j] < ALPHA:
                    xs.append(j_d)
                    ys.append(i_d)
        out.append((name, corner, xs, ys))
    return out


def _m_hover(entry: MatrixEntry, perm: Sequence[int], langs: Sequence[Lang]) -> list[list[str]]:
    """Hover text of every M cell: M, a, b, C and seed counts."""
    r = entry.result
    out: list[list[str]] = []
    for i_d, i in enumerate(perm):
        row = []
        for j_d, j in enumerate(perm):
            lines = [
                f"target <b>{_lang_label(langs[i_d])}</b>",
                f"donor <b>{_lang_label(langs[j_d])}</b>",
                f"<b>M = {fmt(r.M[i, j] * 100, '+.2f')} %</b> (relative gain over single)",
                f"a = {fmt(r.mu[i, j], '.4f')} · b = {fmt(r.baseline[i], '.4f')}",
                f"C = {fmt(r.C[i, j])} ± {fmt(r.se[i, j])}",
                f"seeds: {int(r.n_seeds[i, j])} cell · {int(r.n_single[i])} single",
            ]
            if i == j:
                lines.insert(3, "self cell: M = (c − b) / b")
            row.append("<br>".join(lines))
        out.append(row)
    return out


def _nice_ceiling(x: float) -> float:
    """Round up to 1, 2, 2.5 or 5 times a power of ten."""
    if not math.isfinite(x) or x <= 0:
        return 0.01
    p = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if m * p >= x - 1e-12:
            return m * p
    return 10 * p


def m_range(m: np.ndarray) -> float:
    """Symmetric colour range for M: the 98th percentile of |M|, rounded up to a nice value."""
    finite = np.abs(m[np.isfinite(m)])
    if finite.size == 0:
        return 0.01
    return _nice_ceiling(float(np.quantile(finite, 0.98)))


def figures(entry: MatrixEntry, languages: pl.DataFrame | None) -> dict[str, go.Figure]:
    """The heatmaps of one matrix entry as plotly figures: ``{"cltm": C, "m": M}`` in display order."""
    langs, perm = display_order(entry, languages)
    r = entry.result
    ix = np.ix_(perm, perm)
    flags = [bool(r.ill_conditioned[i]) for i in perm]
    missing_hover = _missing_reasons(entry, perm, langs)
    policy = esc(r.policy)
    metric = esc(entry.metric_name)
    n = len(langs)
    finite, finite_m = int(np.isfinite(r.C).sum()), int(np.isfinite(r.M).sum())
    cbar_c = {
        "title": {"text": "C", "side": "top", "font": {"size": 13}},
        "tickmode": "array",
        "tickvals": [-C_CLIP, -1, -0.5, 0, 0.5, 1, C_CLIP],
        "ticktext": [f"≤ −{C_CLIP:g}", "−1", "−0.5", "0", "0.5", "1", f"≥ {C_CLIP:g}"],
        "thickness": 14, "lenmode": "pixels", "len": min(420, max(160, (len(langs) + 1) * 24)),
        "y": 1, "yanchor": "top", "outlinewidth": 0,
    }
    cltm = _base_figure(
        langs, flags, r.C[ix], _cltm_hover(entry, perm, langs), missing_hover,
        title=f"<b>CLTM</b> · {esc(entry.label)}",
        subtitle=f"C = (a − b) / (c − b) · P = {metric} · policy {policy} · {finite} / {n * n} cells finite",
        texttemplate="%{z:.2f}", zmax=C_CLIP, colorbar=cbar_c, uid=f"{entry.slug}-cltm",
        marks=_significance_marks(r, perm),
    )
    m_pct = r.M[ix] * 100.0
    m_max = m_range(r.M) * 100.0
    cbar_m = {
        "title": {"text": "M (%)", "side": "top", "font": {"size": 13}},
        "thickness": 14, "lenmode": "pixels", "len": min(420, max(160, (len(langs) + 1) * 24)),
        "y": 1, "yanchor": "top", "outlinewidth": 0, "tickformat": ".3~g",
    }
    m_fig = _base_figure(
        langs, flags, m_pct, _m_hover(entry, perm, langs), missing_hover,
        title=f"<b>M</b> (raw relative gain) · {esc(entry.label)}",
        subtitle=f"M = (a − b) / b in % · P = {metric} · policy {policy} · {finite_m} / {n * n} cells finite",
        texttemplate="%{z:+.1f}", zmax=m_max, colorbar=cbar_m, uid=f"{entry.slug}-m",
    )
    return {"cltm": cltm, "m": m_fig}


def figure_div(fig: go.Figure, div_id: str) -> str:
    """The figure as a div plus script, plotly.js not included; byte-stable for equal figures."""
    return fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config=_PLOTLY_CONFIG,
        default_width=f"{fig.layout.width}px" if fig.layout.width else "100%",
        default_height=f"{fig.layout.height}px" if fig.layout.height else "100%",
    )


def write_figure_html(fig: go.Figure, path: Path, title: str | None = None) -> None:
    """Write one figure as a self-contained HTML page (plotly.js inline), atomically and byte-stable."""
    path = Path(path)
    div_id = slugify(path.stem)
    page_title = title or (fig.layout.title.text if fig.layout.title and fig.layout.title.text else path.stem)
    page_title = re.sub(r"<[^>]+>", "", page_title)
    body = figure_div(fig, div_id)
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{esc(page_title)}</title>\n"
        f"<style>body{{margin:16px;font-family:{FONT};}}</style>\n"
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script>\n"
        f"</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
    write_text(path, doc)

# --------------------------------------------------------------------------------------------------
# The small figures of the analyses
# --------------------------------------------------------------------------------------------------

_SMALL_FIG = {"paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff", "font": {"family": FONT, "size": 12}}


def summary_figure(matrices: Sequence[MatrixEntry]) -> go.Figure | None:
    """Mean off-diagonal C with its CI per task and architecture, on one axis (the table's first column, drawn)."""
    rows = []
    for e in matrices:
        if e.analysed is None:
            continue
        mean = e.analysed.properties.mean_offdiag_C
        m, lo, hi = mean.mean, mean.ci_low, mean.ci_high
        if math.isfinite(m):
            rows.append((e.label, m, lo, hi, int(np.sum(e.result.ill_conditioned))))
    if not rows:
        return None
    # the axis shows the range that matters (-0.5..1.5 at least); a wider CI is cut at the frame, not hidden
    x_lo = max(-1.5, min(-0.25, *(r[2] for r in rows if math.isfinite(r[2])), *(r[1] for r in rows)))
    x_hi = min(2.5, max(1.25, *(r[3] for r in rows if math.isfinite(r[3])), *(r[1] for r in rows)))
    labels = [f"{r[0]}{' ⚠' if r[4] else ''}" for r in rows][::-1]
    rs = rows[::-1]
    fig = go.Figure(go.Scatter(
        x=[num(r[1]) for r in rs], y=labels, mode="markers",
        marker={"size": 10, "color": ["#b45309" if r[4] else "#2a5db0" for r in rs]},
        error_x={"type": "data", "symmetric": False, "visible": True, "thickness": 1.5, "width": 5,
                 "array": [num(r[3] - r[1]) if math.isfinite(r[3]) else 0 for r in rs],
                 "arrayminus": [num(r[1] - r[2]) if math.isfinite(r[2]) else 0 for r in rs]},
        customdata=[[fmt(r[2]), fmt(r[3]), r[4]] for r in rs],
        hovertemplate="%{y}: mean C %{x:.2f} [%{customdata[0]}, %{customdata[1]}]<br>%{customdata[2]} ⚠ rows"
                      "<extra></extra>", showlegend=False))
    shapes = [{"type": "line", "xref": "x", "yref": "paper", "x0": v, "x1": v, "y0": 0, "y1": 1,
               "line": {"color": "#999", "width": 1, "dash": "dot"}} for v in (0, 1)]
    fig.update_layout(**_SMALL_FIG, width=640, height=90 + 34 * len(rows), shapes=shapes,
                      margin={"l": 170, "r": 20, "t": 16, "b": 44},
                      xaxis={"range": [x_lo, x_hi], "title": "mean off-diagonal C (0 = no transfer, 1 = as good "
                             "as target data)", "gridcolor": "#eee", "zeroline": False},
                      yaxis={"gridcolor": "#eee"}, meta={"cltm_figure": "summary"})
    return fig


def strength_figure(a: Analysis, langs: Sequence[Lang], slug: str) -> go.Figure:
    """Donor and receiver strength per language (bars), languages in family order."""
    names = [lang.name for lang in langs]
    fig = go.Figure()
    none = Counted(math.nan, 0)  # a language the analysis does not cover: no bar
    for strength, label, color in ((a.properties.donor_strength, "donor strength (column sum)", "#2a5db0"),
                                   (a.properties.receiver_strength, "receiver strength (row sum)", "#d6604d")):
        vals = [num(strength.get(lang.code, none).value) for lang in langs]
        ns = [strength.get(lang.code, none).n for lang in langs]
        fig.add_trace(go.Bar(x=names, y=vals, name=label, marker_color=color, customdata=ns,
                             hovertemplate="%{x}: %{y:.2f} (%{customdata} finite cells)<extra>" + label + "</extra>"))
    fig.update_layout(**_SMALL_FIG, barmode="group", width=min(1000, 240 + 34 * len(langs)), height=340,
                      margin={"l": 60, "r": 20, "t": 56, "b": 90}, legend={"orientation": "h", "y": 1.2, "x": 0},
                      yaxis={"title": "sum of positive off-diagonal C", "gridcolor": "#eee"},
                      xaxis={"tickangle": -40}, meta={"cltm_figure": f"{slug}-strength"})
    return fig


def map_figure(a: Analysis, langs: Sequence[Lang], slug: str) -> go.Figure | None:
    """The MDS map of transfer profiles: colour = family, symbol and label = cluster."""
    m = a.map
    codes = m.languages
    if len(codes) < 3:
        return None
    info = {lang.code: lang for lang in langs}
    cluster = dict(zip(m.cluster_languages, m.clusters))
    symbols = ["circle", "square", "diamond", "triangle-up", "cross", "star", "hexagon", "x", "pentagon"]
    fig = go.Figure()
    for fam in sorted({info[c].family for c in codes if c in info}, key=family_key):
        ks = [k for k, c in enumerate(codes) if c in info and info[c].family == fam]
        fig.add_trace(go.Scatter(
            x=[num(m.x[k]) for k in ks], y=[num(m.y[k]) for k in ks], mode="markers+text", name=fam,
            text=[f"{codes[k]}" for k in ks], textposition="top center",
            marker={"size": 13, "color": info[codes[ks[0]]].color, "line": {"width": 1, "color": "#333"},
                    "symbol": [symbols[(cluster.get(codes[k], 1) - 1) % len(symbols)] for k in ks]},
            customdata=[[info[codes[k]].name, cluster.get(codes[k], "–")] for k in ks],
            hovertemplate="%{customdata[0]} (%{text})<br>cluster %{customdata[1]}<extra>" + esc(fam) + "</extra>",
        ))
    fig.update_layout(**_SMALL_FIG, width=640, height=520, margin={"l": 50, "r": 20, "t": 40, "b": 50},
                      xaxis={"title": "MDS 1", "zeroline": False, "gridcolor": "#eee"},
                      yaxis={"title": "MDS 2", "zeroline": False, "gridcolor": "#eee", "scaleanchor": "x"},
                      title={"text": f"Transfer-profile map · stress {fmt(m.stress)} · "
                                     f"{m.k} clusters (symbols)", "font": {"size": 13}, "x": 0.02},
                      meta={"cltm_figure": f"{slug}-map"})
    return fig


def projection_figure(a: Analysis, langs: Sequence[Lang], slug: str) -> go.Figure | None:
    """2-D PCA of probe-set embeddings of each target's self model (one panel per target, up to 8)."""
    proj = a.probes.projections
    targets = [lang.code for lang in langs if lang.code in proj][:8]
    if not targets:
        return None
    # one hue per locale (family colours would make es and it, or de and nl, indistinguishable here)
    locales = sorted({loc for t in targets for loc in proj[t].locale})
    color = {loc: PALETTE[k % len(PALETTE)] for k, loc in enumerate(locales)}
    cols = min(4, len(targets))
    rows = math.ceil(len(targets) / cols)
    titles = [f"{t} {proj[t].cell} s{proj[t].seed} · acc {fmt(float(proj[t].accuracy or math.nan) * 100, '.0f')} %"
              for t in targets]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.05, vertical_spacing=0.12)
    shown: set[str] = set()
    for k, t in enumerate(targets):
        p = proj[t]
        for loc in sorted(set(p.locale)):
            idx = [q for q, x in enumerate(p.locale) if x == loc]
            fig.add_trace(go.Scatter(
                x=[num(p.x[q]) for q in idx], y=[num(p.y[q]) for q in idx], mode="markers", name=loc,
                legendgroup=loc, showlegend=loc not in shown, hovertemplate=f"{esc(loc)}<extra></extra>",
                marker={"size": 5, "color": color.get(loc, "#888888"), "opacity": 0.8}), row=k // cols + 1, col=k % cols + 1)
            shown.add(loc)
    fig.update_xaxes(showticklabels=False, zeroline=False, gridcolor="#eee")
    fig.update_yaxes(showticklabels=False, zeroline=False, gridcolor="#eee")
    fig.update_layout(**_SMALL_FIG, width=260 * cols + 120, height=250 * rows + 60,
                      margin={"l": 20, "r": 20, "t": 50, "b": 20}, meta={"cltm_figure": f"{slug}-probe"})
    fig.update_annotations(font_size=11)
    return fig


def curve_figure(lc: LearningCurve, langs: Sequence[Lang], uid: str) -> go.Figure:
    """Mean ± sd of P over seeds against training units (log2 axis), per target, with the fitted line."""
    curve, rec = lc.curve, lc.rec
    color = {lang.code: lang.color for lang in langs}
    fig = go.Figure()
    for k, t in enumerate(sorted(set(curve["target"].to_list()))):
        g = curve.filter(pl.col("target") == t).group_by("units").agg(
            pl.col("value").mean().alias("m"), pl.col("value").std().alias("sd"), pl.len().alias("n")).sort("units")
        c = color.get(t, PALETTE[k % len(PALETTE)])
        fig.add_trace(go.Scatter(
            x=g["units"].to_list(), y=[num(x) for x in g["m"]], mode="markers+lines", name=t,
            error_y={"type": "data", "array": [num(x) for x in g["sd"].fill_null(0)], "visible": True},
            marker={"color": c, "size": 8}, line={"color": c, "width": 1.5},
            hovertemplate=f"{esc(t)}: %{{x}} units, P = %{{y:.3f}}<extra></extra>"))
        fit = rec.fit.get(t)
        if fit is not None:
            xs = g["units"].to_list()
            fig.add_trace(go.Scatter(
                x=xs, y=[num(fit.alpha + fit.beta * math.log2(x)) for x in xs], mode="lines",
                name=f"{t} fit: {fit.beta:+.3f} per doubling", line={"color": c, "dash": "dot", "width": 1.2},
                hoverinfo="skip"))
    rec_n = rec.recommended_n
    shapes = []
    if rec_n is not None:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": rec_n, "x1": rec_n, "y0": 0, "y1": 1,
                       "line": {"color": "#1a1a1a", "dash": "dash", "width": 1.2}})
    fig.update_layout(**_SMALL_FIG, width=760, height=420, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      xaxis={"type": "log", "title": f"training units ({esc(rec.unit)})",
                             "tickvals": sorted(set(curve["units"].to_list())), "gridcolor": "#eee"},
                      yaxis={"title": f"test {esc(rec.metric)}", "gridcolor": "#eee"},
                      shapes=shapes,
                      title={"text": f"Learning curve · {esc(rec.task)} · {esc(rec.arch)}"
                                     + (f" · recommended N = {rec_n:g}" if rec_n is not None else ""),
                             "font": {"size": 13}, "x": 0.02},
                      meta={"cltm_figure": uid})
    return fig

