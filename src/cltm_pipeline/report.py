"""The HTML report: CLTM and M heatmaps, self-gain tables, run inventory and config in one offline file.

One report carries one section per matrix (task, architecture): the CLTM heatmap, the raw relative gain M,
the self-gain table and the missing cells; then, once, the run inventory, the config and the package
versions. plotly.js is embedded inline exactly once (the cluster and CI have no network), and every plot
div has a fixed id, so the same inputs give the same bytes.

Layout of a heatmap (rows are targets i, columns donors j, as in ``cltm.py``): languages are grouped by
family (alphabetical by family, then by name), a strip of family-coloured cells with the locale codes runs
along the top and the left, tick labels carry the language names in their family's colour, family blocks
on the diagonal are outlined (dashed; a solid outline for a top-level family split into several
sub-families), self cells are outlined, missing or undefined cells are grey with "–", and a row whose
self gain is not clearly positive is boxed in amber and its label carries a ⚠.
"""

from __future__ import annotations

import html
import math
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl
import yaml
from plotly.offline import get_plotlyjs

from cltm_pipeline.analysis import ALPHA
from cltm_pipeline.cltm import CLTMResult
from cltm_pipeline.io import write_text
from cltm_pipeline.protocol import cell_kind
from cltm_pipeline.typology import DISTANCES

__all__ = ["MatrixEntry", "figures", "render_report", "write_figure_html", "C_CLIP"]

#: The CLTM colour scale is centred on 0 and saturates at +-C_CLIP (printed values are never clipped).
C_CLIP = 1.5

# Qualitative palette for families: strong hues first so that neighbouring families (which are adjacent
# in the sorted order) differ, then light and dark variants. Grey is left out: it means "missing".
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#393b79", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
    "#9edae5", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
    "#636363",
)
_UNKNOWN_FAMILY = "Unknown family"
_MISSING_COLOR = "#c4c4c4"
_LEGEND_ENTRY = 190  # px of text per legend entry (families are listed in columns under the heatmap)
_LEGEND_ITEM_PAD = 40  # plotly adds the symbol and gaps to each entry
_FLAG_COLOR = "#b45309"  # amber: ill-conditioned rows
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
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
# Inputs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MatrixEntry:
    """One matrix of the report: a task, an architecture, the performance metric P and its CLTM."""

    task: str
    arch: str
    metric: str | None
    result: CLTMResult
    analysis: Mapping[str, Any] | None = None  # the matrix's analysis.json (cltm analyse), if computed

    @property
    def label(self) -> str:
        return f"{self.task} · {self.arch}"

    @property
    def slug(self) -> str:
        return _slug(f"{self.task}-{self.arch}")

    @property
    def metric_name(self) -> str:
        """P as the matrix computes it: an error rate is shown as 1 − error (cltm turns it around)."""
        from cltm_pipeline.cltm import lower_is_better

        name = self.metric or self.result.metric or "P"
        return f"1 − {name.upper() if name in ('eer', 'wer', 'cer') else name}" if lower_is_better(name) else name


@dataclass(frozen=True)
class _Lang:
    code: str
    name: str
    family: str
    color: str  # the family's colour (strip, legend)
    text_color: str  # the same hue, dark enough to read on white (tick labels)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "matrix"


def _top_family(family: str) -> str:
    """'Indo-European (Romance)' -> 'Indo-European'."""
    return family.split(" (", 1)[0].strip()


def _family_key(family: str) -> tuple[bool, str]:
    return (family == _UNKNOWN_FAMILY, family.casefold())


def _sheet(languages: pl.DataFrame | None) -> dict[str, tuple[str, str]]:
    """locale -> (name, family) from the languages sheet."""
    if languages is None or languages.height == 0:
        return {}
    out: dict[str, tuple[str, str]] = {}
    for row in languages.select(["locale", "name", "family"]).iter_rows():
        locale, name, family = (str(x).strip() if x is not None else "" for x in row)
        out[locale] = (name or locale, family or _UNKNOWN_FAMILY)
    return out


def _family_colors(families: Sequence[str]) -> dict[str, str]:
    """Colour per family, assigned in sorted family order (stable across the matrices of one report)."""
    ordered = sorted(set(families), key=_family_key)
    return {fam: _PALETTE[k % len(_PALETTE)] for k, fam in enumerate(ordered)}


def _languages(codes: Sequence[str], languages: pl.DataFrame | None) -> list[_Lang]:
    """Display order of ``codes``: by family, then name, then code; with colours."""
    sheet = _sheet(languages)
    families = [fam for _, fam in sheet.values()]
    info = {code: sheet.get(code, (code, _UNKNOWN_FAMILY)) for code in codes}
    colors = _family_colors([*families, *(fam for _, fam in info.values())])
    ordered = sorted(codes, key=lambda c: (*_family_key(info[c][1]), info[c][0].casefold(), c))
    out = []
    for code in ordered:
        name, family = info[code]
        color = colors[family] if family != _UNKNOWN_FAMILY else "#888888"
        out.append(_Lang(code, name, family, color, _readable(color)))
    return out


# --------------------------------------------------------------------------------------------------
# Small formatting helpers
# --------------------------------------------------------------------------------------------------


def _rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _luminance(rgb: tuple[float, float, float]) -> float:
    def chan(v: float) -> float:
        v /= 255.0
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (chan(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _readable(color: str, contrast: float = 4.5) -> str:
    """Darken ``color`` until it reaches WCAG ``contrast`` against white."""
    rgb = [float(v) for v in _rgb(color)]
    for _ in range(40):
        if 1.05 / (_luminance(tuple(rgb)) + 0.05) >= contrast:
            break
        rgb = [v * 0.92 for v in rgb]
    return "#{:02x}{:02x}{:02x}".format(*(int(round(v)) for v in rgb))


def _f(x: float, fmt: str = ".2f", nan: str = "–") -> str:
    """Format a float; NaN as an en dash, infinities spelled out."""
    x = float(x)
    if math.isnan(x):
        return nan
    if math.isinf(x):
        return "+∞" if x > 0 else "−∞"
    return format(x, fmt).replace("-", "−")


def _num(x: float, digits: int = 4) -> float | None:
    """A JSON-friendly, rounded float (None for NaN/inf) so that figures stay small and byte-stable."""
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: float) -> str:
    return f"{x * 100:g}"


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
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
    return int(min(52, max(16, 1060 // max(n, 1))))


def _geometry(langs: Sequence[_Lang], n_legend: int, flagged: bool) -> _Geometry:
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


def _tick_text(lang: _Lang, flagged: bool = False) -> str:
    label = f'<span style="color:{lang.text_color}">{_esc(lang.name)}</span>'
    if flagged:
        label = f'<span style="color:{_FLAG_COLOR}"><b>⚠</b></span> ' + label
    return label


def _runs(langs: Sequence[_Lang], key) -> list[tuple[str, int, int]]:
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
    return {
        "type": "rect", "xref": "x", "yref": "y", "x0": x0, "x1": x1, "y0": y0, "y1": y1,
        "line": {"color": color, "width": width, "dash": dash}, "fillcolor": "rgba(0,0,0,0)", "layer": "above",
    }


def _base_figure(
    langs: Sequence[_Lang],
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
    families = sorted({lang.family for lang in langs}, key=_family_key)
    fam_color = {lang.family: lang.color for lang in langs}
    n_legend = len(families) + 1 + (1 if any(flags) else 0) + len(marks)
    geo = _geometry(langs, n_legend, any(flags))
    idx = list(range(n))
    fig = go.Figure()

    # Family strips: one heatmap with a column at x = -1 (rows) and a row at y = -1 (columns).
    fam_index = {fam: k for k, fam in enumerate(families)}
    k_fam = max(len(families), 1)
    scale: list[list[Any]] = []
    for k, fam in enumerate(families):
        scale += [[k / k_fam, fam_color[fam]], [(k + 1) / k_fam, fam_color[fam]]]
    if not scale:
        scale = [[0, "#888888"], [1, "#888888"]]
    values = [fam_index[lang.family] + 0.5 for lang in langs]
    codes = [_esc(lang.code) for lang in langs]
    desc = [
        f"<b>{_esc(lang.name)}</b> ({_esc(lang.code)})<br>{_esc(lang.family)}"
        + ("<br>⚠ self gain not clearly positive" if flags[k] else "")
        for k, lang in enumerate(langs)
    ]
    strip_style = {
        "zmin": 0, "zmax": k_fam, "colorscale": scale, "showscale": False, "xgap": 1, "ygap": 1,
        "hoverongaps": False, "hovertemplate": "%{hovertext}<extra></extra>", "texttemplate": "%{text}",
        "textfont": {"size": geo.strip_font, "family": _FONT, "weight": "bold"}, "name": "family",
    }
    w = geo.strip_w
    fig.add_trace(go.Heatmap(x0=-0.5 - w / 2, dx=w, y=idx, z=[[v] for v in values], text=[[c] for c in codes],
                             hovertext=[[d] for d in desc], **strip_style))
    top_text = [codes] if geo.top_codes else [[""] * n]
    fig.add_trace(go.Heatmap(x=idx, y0=-1, dy=1, z=[values], text=top_text, hovertext=[desc], **strip_style))

    # Missing / undefined cells: a grey layer under the values, "–" in the cell, the reason on hover.
    nan_z = [[0 if not math.isfinite(float(z[i, j])) else None for j in idx] for i in idx]
    fig.add_trace(go.Heatmap(
        x=idx, y=idx, z=nan_z, zmin=0, zmax=1, colorscale=[[0, _MISSING_COLOR], [1, _MISSING_COLOR]],
        showscale=False, xgap=1, ygap=1, hovertext=missing_hover, hoverongaps=False,
        text=[["–" if v is not None else "" for v in row] for row in nan_z],
        hovertemplate="%{hovertext}<extra></extra>", texttemplate="%{text}" if geo.show_values else "",
        textfont={"size": geo.font + 1, "family": _FONT, "color": "#555555"}, name="missing",
    ))

    # The values.
    fig.add_trace(go.Heatmap(
        x=idx, y=idx, z=[[_num(z[i, j]) for j in idx] for i in idx], zmin=-zmax, zmax=zmax, zmid=0,
        colorscale=_DIVERGING, xgap=1, ygap=1, hovertext=hover, hoverongaps=False,
        hovertemplate="%{hovertext}<extra></extra>", texttemplate=texttemplate if geo.show_values else "",
        textfont={"size": geo.font, "family": _FONT}, colorbar=colorbar, name="value",
    ))

    # Family legend (dummy traces), plus the two marks the caption explains.
    for fam in families:
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name=fam, showlegend=True, hoverinfo="skip",
            marker={"symbol": "square", "size": 13, "color": fam_color[fam], "line": {"width": 0}},
        ))
    fig.add_trace(go.Scatter(
        x=[None], y=[None], mode="markers", name="missing or undefined (–)", showlegend=True, hoverinfo="skip",
        marker={"symbol": "square", "size": 13, "color": _MISSING_COLOR},
    ))
    if any(flags):
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="lines", name="⚠ ill-conditioned row", showlegend=True, hoverinfo="skip",
            line={"color": _FLAG_COLOR, "width": 3},
        ))
    # Significance marks: a symbol in a corner of the cell, small enough to leave the value readable.
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

    shapes: list[dict] = []
    # Sub-family blocks (dashed) and top-level families split into several sub-families (solid).
    for _, a, b in _runs(langs, lambda lang: lang.family):
        shapes.append(_rect(a - 0.5, b + 0.5, a - 0.5, b + 0.5, "#1a1a1a", 1.6, "dash"))
    for _, a, b in _runs(langs, lambda lang: _top_family(lang.family)):
        if len({lang.family for lang in langs[a:b + 1]}) > 1:
            shapes.append(_rect(a - 0.5, b + 0.5, a - 0.5, b + 0.5, "#1a1a1a", 2.2, "solid"))
    # Self cells.
    inset = 0.5 - min(0.12, 2.0 / geo.cell)
    for k in idx:
        shapes.append(_rect(k - inset, k + inset, k - inset, k + inset, "#1a1a1a", 1.2))
    # Ill-conditioned rows.
    for k in idx:
        if flags[k]:
            shapes.append(_rect(-0.5 - w, n - 0.5, k - 0.5, k + 0.5, _FLAG_COLOR, 3.0))

    legend_y = -10 / ((n + 1) * geo.cell)  # just below the plot area, in paper units
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "xref": "container", "y": 1, "yref": "container",
               "yanchor": "top", "pad": {"t": 14, "l": 14}, "font": {"size": 16, "family": _FONT},
               "subtitle": {"text": subtitle, "font": {"size": 12, "color": "#5b6270", "family": _FONT}}},
        width=geo.width, height=geo.height,
        margin={"l": geo.margin_l, "r": geo.margin_r, "t": geo.margin_t, "b": geo.margin_b, "autoexpand": True},
        font={"family": _FONT, "size": 12, "color": "#1a1a1a"},
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
        shapes=shapes,
        showlegend=True,
        legend={
            "orientation": "h", "x": 0, "xanchor": "left", "y": legend_y, "yanchor": "top",
            "entrywidth": _LEGEND_ENTRY, "entrywidthmode": "pixels", "itemclick": False, "itemdoubleclick": False,
            "font": {"size": 11.5}, "traceorder": "normal",
        },
        hoverlabel={"font": {"family": _FONT, "size": 12}, "align": "left", "bgcolor": "#ffffff"},
        modebar={"orientation": "v"},
        meta={"cltm_figure": uid, "values_printed": geo.show_values, "cell_px": geo.cell},
    )
    return fig


def _lang_label(lang: _Lang) -> str:
    return f"{_esc(lang.name)} ({_esc(lang.code)})"


def _order(entry: MatrixEntry, languages: pl.DataFrame | None) -> tuple[list[_Lang], list[int]]:
    langs = _languages(entry.result.languages, languages)
    pos = {code: k for k, code in enumerate(entry.result.languages)}
    return langs, [pos[lang.code] for lang in langs]


def _missing_reasons(entry: MatrixEntry, perm: Sequence[int], langs: Sequence[_Lang]) -> list[list[str]]:
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
                reasons.append(f"no single run of {_esc(t)} (b missing)")
            if (t, t) in missing and i != j:
                reasons.append(f"no self run {_esc(t)}+{_esc(t)} (c missing)")
            if (t, d) in missing:
                reasons.append(f"cell {_esc(t)}+{_esc(d)} not run" if i != j else
                               f"no self run {_esc(t)}+{_esc(t)} (c missing)")
            if not reasons:
                gain = float(r.self_gain[i])
                reasons.append("c − b = 0: C undefined" if gain == 0 else "undefined")
            row.append(head + "<b>" + "; ".join(reasons) + "</b>")
        out.append(row)
    return out


def _cltm_hover(entry: MatrixEntry, perm: Sequence[int], langs: Sequence[_Lang]) -> list[list[str]]:
    r = entry.result
    ci = f"{_pct(r.ci)} %"
    out: list[list[str]] = []
    for i_d, i in enumerate(perm):
        row = []
        for j_d, j in enumerate(perm):
            lines = [
                f"target <b>{_lang_label(langs[i_d])}</b> · {_esc(langs[i_d].family)}",
                f"donor <b>{_lang_label(langs[j_d])}</b> · {_esc(langs[j_d].family)}",
                f"<b>C = {_f(r.C[i, j])}</b> ± {_f(r.se[i, j])} (SE, delta method)",
            ]
            if i == j:
                lines.append("self cell: C = 1 by construction")
            else:
                lines.append(f"{ci} CI {interval_text(r, i, j)} (Fieller, {int(r.n_paired[i, j])} paired seeds)")
            if i != j and math.isfinite(r.p_zero[i, j]):
                lines.append(f"vs 0: p = {_f(r.p_zero[i, j], '.3g')}, q = {_f(r.q_zero[i, j], '.3g')}"
                             f"{' <b>●</b>' if r.q_zero[i, j] < ALPHA else ''} · vs 1: p = {_f(r.p_one[i, j], '.3g')}, "
                             f"q = {_f(r.q_one[i, j], '.3g')}{' <b>◆</b>' if r.q_one[i, j] < ALPHA else ''}")
                if not r.testable()[i, j]:
                    lines.append(f"untestable: with {int(r.n_paired[i, j])} seeds the {r.test} test's smallest p is "
                                 f"{_f(r.p_floor[i, j], '.3g')} ≥ {ALPHA:g}; no mark means too few seeds, not no effect")
            if r.partial[i, j]:
                lines.append("partial: some seeds of single, self or this cell are missing; a, b, c, C use the "
                             "paired seeds only")
            lines.append(f"M = {_f(r.M[i, j] * 100, '+.1f')} %" if math.isfinite(r.M[i, j]) or r.baseline[i] > 0
                         else "M undefined: b ≤ 0")
            lines.append(f"a = {_f(r.mu[i, j], '.4f')} · b = {_f(r.baseline[i], '.4f')} · "
                         f"c = {_f(r.mu[i, i], '.4f')}")
            lines.append(f"seeds: {int(r.n_seeds[i, j])} cell · {int(r.n_single[i])} single · "
                         f"{int(r.n_seeds[i, i])} self")
            if r.ill_conditioned[i]:
                lines.append(f'<span style="color:{_FLAG_COLOR}">⚠ row ill-conditioned: self gain '
                             f"{_f(r.self_gain[i], '.4f')} ± {_f(r.self_gain_se[i], '.4f')}</span>")
            row.append("<br>".join(lines))
        out.append(row)
    return out


def interval_text(r: CLTMResult, i: int, j: int) -> str:
    """The Fieller set of cell (i, j) as written: [lo, hi], two rays, the whole line, or n/a."""
    kind = str(r.ci_kind[i, j])
    if kind == "bounded":
        return f"[{_f(r.ci_low[i, j])}, {_f(r.ci_high[i, j])}]"
    if kind == "rays":
        return f"(−∞, {_f(r.ci_gap_low[i, j])}] ∪ [{_f(r.ci_gap_high[i, j])}, ∞)"
    if kind == "unbounded":
        return "(−∞, ∞)"
    if math.isfinite(r.ci_low[i, j]) or math.isfinite(r.ci_high[i, j]):  # written before ci_kind existed
        return f"[{_f(r.ci_low[i, j])}, {_f(r.ci_high[i, j])}]"
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


def _m_hover(entry: MatrixEntry, perm: Sequence[int], langs: Sequence[_Lang]) -> list[list[str]]:
    r = entry.result
    out: list[list[str]] = []
    for i_d, i in enumerate(perm):
        row = []
        for j_d, j in enumerate(perm):
            lines = [
                f"target <b>{_lang_label(langs[i_d])}</b>",
                f"donor <b>{_lang_label(langs[j_d])}</b>",
                f"<b>M = {_f(r.M[i, j] * 100, '+.2f')} %</b> (relative gain over single)",
                f"a = {_f(r.mu[i, j], '.4f')} · b = {_f(r.baseline[i], '.4f')}",
                f"C = {_f(r.C[i, j])} ± {_f(r.se[i, j])}",
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


def _m_range(m: np.ndarray) -> float:
    """Symmetric colour range for M: the 98th percentile of |M|, rounded up to a nice value."""
    finite = np.abs(m[np.isfinite(m)])
    if finite.size == 0:
        return 0.01
    return _nice_ceiling(float(np.quantile(finite, 0.98)))


def figures(entry: MatrixEntry, languages: pl.DataFrame | None) -> dict[str, go.Figure]:
    """The heatmaps of one matrix entry as plotly figures: ``{"cltm": C, "m": M}`` in display order."""
    langs, perm = _order(entry, languages)
    r = entry.result
    ix = np.ix_(perm, perm)
    flags = [bool(r.ill_conditioned[i]) for i in perm]
    missing_hover = _missing_reasons(entry, perm, langs)
    policy = _esc(r.policy)
    metric = _esc(entry.metric_name)
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
        title=f"<b>CLTM</b> · {_esc(entry.label)}",
        subtitle=f"C = (a − b) / (c − b) · P = {metric} · policy {policy} · {finite} / {n * n} cells finite",
        texttemplate="%{z:.2f}", zmax=C_CLIP, colorbar=cbar_c, uid=f"{entry.slug}-cltm",
        marks=_significance_marks(r, perm),
    )
    m_pct = r.M[ix] * 100.0
    m_max = _m_range(r.M) * 100.0
    cbar_m = {
        "title": {"text": "M (%)", "side": "top", "font": {"size": 13}},
        "thickness": 14, "lenmode": "pixels", "len": min(420, max(160, (len(langs) + 1) * 24)),
        "y": 1, "yanchor": "top", "outlinewidth": 0, "tickformat": ".3~g",
    }
    m_fig = _base_figure(
        langs, flags, m_pct, _m_hover(entry, perm, langs), missing_hover,
        title=f"<b>M</b> (raw relative gain) · {_esc(entry.label)}",
        subtitle=f"M = (a − b) / b in % · P = {metric} · policy {policy} · {finite_m} / {n * n} cells finite",
        texttemplate="%{z:+.1f}", zmax=m_max, colorbar=cbar_m, uid=f"{entry.slug}-m",
    )
    return {"cltm": cltm, "m": m_fig}


def _figure_div(fig: go.Figure, div_id: str) -> str:
    """The figure as a div plus script, plotly.js not included; byte-stable for equal figures."""
    return fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config=_PLOTLY_CONFIG,
        default_width=f"{fig.layout.width}px" if fig.layout.width else "100%",
        default_height=f"{fig.layout.height}px" if fig.layout.height else "100%",
    )


def write_figure_html(fig: go.Figure, path: Path, title: str | None = None) -> None:
    """Write one figure as a self-contained HTML page (plotly.js inline), atomically and byte-stable."""
    path = Path(path)
    div_id = _slug(path.stem)
    page_title = title or (fig.layout.title.text if fig.layout.title and fig.layout.title.text else path.stem)
    page_title = re.sub(r"<[^>]+>", "", page_title)
    body = _figure_div(fig, div_id)
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{_esc(page_title)}</title>\n"
        f"<style>body{{margin:16px;font-family:{_FONT};}}</style>\n"
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script>\n"
        f"</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
    write_text(path, doc)


# --------------------------------------------------------------------------------------------------
# Report sections
# --------------------------------------------------------------------------------------------------

_CSS = """
:root { --ink:#1a1a1a; --muted:#5b6270; --rule:#e3e5e8; --accent:#2a5db0; --flag:#b45309; --bg:#fbfbfa; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font: 15px/1.55 __FONT__; }
main, header, nav, footer { max-width: 1100px; margin: 0 auto; padding: 0 28px; }
header { padding-top: 28px; padding-bottom: 8px; }
h1 { font-size: 1.75rem; margin: 0 0 .4rem; letter-spacing: -.01em; }
h2 { font-size: 1.35rem; margin: 2.6rem 0 .3rem; padding-top: .8rem; border-top: 2px solid var(--ink); }
h3 { font-size: 1.05rem; margin: 1.8rem 0 .4rem; }
p { margin: .5rem 0; max-width: 78ch; }
a { color: var(--accent); }
.lede { font-size: 1.02rem; }
.meta, .facts { color: var(--muted); font-size: .9rem; }
.facts b { color: var(--ink); font-weight: 600; }
nav.toc { margin-top: .6rem; }
nav.toc ol { margin: .3rem 0; padding-left: 1.3rem; columns: 2; }
figure { margin: 1.2rem 0 1.6rem; }
.bleed { width: calc(100vw - 32px); margin-left: calc(50% - 50vw + 16px); }
.plot { width: max-content; max-width: 100%; margin: 0 auto; overflow-x: auto; background: #fff;
        border: 1px solid var(--rule); border-radius: 6px; padding: 6px; }
figcaption { font-size: .9rem; color: #333; max-width: 88ch; margin-top: .5rem; }
figcaption .flag, td .flag, .flag { color: var(--flag); font-weight: 600; }
table { border-collapse: collapse; font-size: .88rem; margin: .5rem 0 1rem; background: #fff; }
th, td { padding: .28rem .7rem; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { font-weight: 600; border-bottom: 1.5px solid var(--ink); white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.ill td { background: #fff7ed; }
table.selfgain td { white-space: nowrap; }
table.selfgain td.fam { color: var(--muted); font-size: .92em; }
figcaption p { margin: .35rem 0; }
.swatch { display:inline-block; width:.8em; height:.8em; border-radius:2px; margin-right:.4em;
          vertical-align: -.05em; }
.code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85em; color: var(--muted); }
details { margin: .6rem 0 1rem; background:#fff; border:1px solid var(--rule); border-radius:6px;
          padding:.35rem .8rem; }
details > summary { cursor: pointer; font-weight: 600; }
details[open] > summary { margin-bottom: .4rem; }
pre { background:#f3f4f6; padding: .8rem 1rem; border-radius: 6px; overflow-x: auto; font-size: .82rem;
      line-height: 1.45; }
.scroll { max-height: 28rem; overflow-y: auto; }
.scroll-x { overflow-x: auto; }
.top { max-width: 1340px; margin: 0 auto; padding: 0 28px; }
.top h2 { margin-top: 1rem; }
.top p { max-width: 120ch; }
table.summary { font-size: .84rem; }
table.summary th { white-space: normal; vertical-align: bottom; }
table.summary td { white-space: nowrap; }
table.props td:first-child { white-space: nowrap; }
table.summary th, table.summary td { padding: .28rem .45rem; }
.cols { display: flex; gap: 2rem; flex-wrap: wrap; align-items: flex-start; }
footer { color: var(--muted); font-size: .82rem; padding-top: 2rem; padding-bottom: 3rem; }
""".replace("__FONT__", _FONT)

_MAX_LISTED = 2000  # rows in a "missing" list before it is cut, with a count of the rest


def _lang_cell(lang: _Lang, flagged: bool = False) -> str:
    flag = '<span class="flag" title="ill-conditioned row">⚠</span> ' if flagged else ""
    return (f'{flag}<span class="swatch" style="background:{lang.color}"></span>{_esc(lang.name)} '
            f'<span class="code">{_esc(lang.code)}</span>')


def _self_gain_table(entry: MatrixEntry, langs: Sequence[_Lang], perm: Sequence[int]) -> str:
    r = entry.result
    missing = set(r.missing)
    rows = []
    for lang, i in zip(langs, perm):
        t = r.languages[i]
        gain, se = float(r.self_gain[i]), float(r.self_gain_se[i])
        z = gain / se if math.isfinite(gain) and math.isfinite(se) and se > 0 else math.nan
        if (t, None) in missing:
            flag = "⚠ no single run"
        elif (t, t) in missing:
            flag = "⚠ no self run"
        elif r.ill_conditioned[i]:
            flag = "⚠ ill-conditioned" if math.isfinite(z) or gain <= 0 else "⚠ SE undefined (n < 2)"
        else:
            flag = "ok"
        ill = bool(r.ill_conditioned[i])
        tr = '<tr class="ill">' if ill else "<tr>"
        rows.append(
            f"{tr}<td>{_lang_cell(lang, ill)}</td>"
            f'<td class="fam">{_esc(lang.family)}</td>'
            f'<td class="num">{_f(r.baseline[i], ".4f")}</td><td class="num">{_f(r.mu[i, i], ".4f")}</td>'
            f'<td class="num">{_f(gain, "+.4f")} ± {_f(se, ".4f")}</td><td class="num">{_f(z, ".1f")}</td>'
            f'<td class="num">{int(r.n_single[i])} / {int(r.n_seeds[i, i])}</td>'
            f'<td>{"<span class=flag>" + _esc(flag) + "</span>" if ill else _esc(flag)}</td></tr>'
        )
    head = (
        "<tr><th>target <i>i</i></th><th>family</th><th class=num>b (single)</th><th class=num>c (self)</th>"
        "<th class=num>c − b ± SE</th><th class=num>(c − b) / SE</th><th class=num>seeds b / c</th>"
        "<th>flag</th></tr>"
    )
    return f"<table class=\"selfgain\">\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _missing_list(entry: MatrixEntry, langs: Sequence[_Lang]) -> str:
    r = entry.result
    if not r.missing:
        return "<p class=meta>No missing cells: every single, self and dual cell has runs.</p>"
    name = {lang.code: lang.name for lang in langs}
    items = []
    for t, d in r.missing[:_MAX_LISTED]:
        kind = "single" if d is None else ("self" if d == t else "dual")
        cell = f"{t}" if d is None else f"{t}+{d}"
        donor = "–" if d is None else f"{_esc(name.get(d, d))} <span class=code>{_esc(d)}</span>"
        items.append(f"<tr><td class=code>{_esc(cell)}</td><td>{kind}</td>"
                     f"<td>{_esc(name.get(t, t))} <span class=code>{_esc(t)}</span></td><td>{donor}</td></tr>")
    more = len(r.missing) - _MAX_LISTED
    tail = f"<p class=meta>… and {more} more (see missing.tsv).</p>" if more > 0 else ""
    return (
        f"<details><summary>Missing cells ({len(r.missing)}): NaN in the matrices, never imputed</summary>"
        "<div class=scroll><table><thead><tr><th>cell</th><th>kind</th><th>target</th><th>donor</th></tr></thead>"
        "<tbody>" + "".join(items) + "</tbody></table></div>" + tail + "</details>"
    )


def _cltm_caption(entry: MatrixEntry, values_printed: bool = True) -> str:
    r = entry.result
    n = len(r.languages)
    finite = int(np.isfinite(r.C).sum())
    n_ill = int(np.sum(r.ill_conditioned))
    flag = (
        f'<span class="flag">⚠ {n_ill} row{"s" if n_ill != 1 else ""} ill-conditioned</span> (amber box, ⚠ on '
        f"the label): the target's self gain c − b is not significantly positive (paired t-test over its seeds, "
        f"{_pct(r.ci)} % two-sided, or undefined), so the denominator of C is within seed noise: every interval in "
        "that row is unbounded and its C values are unreliable. Such rows are shown, never hidden; see the "
        "self-gain table."
        if n_ill else f"No row is ill-conditioned: every self gain c − b is significantly positive (paired t, "
                      f"{_pct(r.ci)} %), so every interval of C is bounded."
    )
    values = "" if values_printed else \
        " Cells are too small for printed values at this size: hover for them."
    return (
        f"<p><b>C[i, j] = (a − b) / (c − b)</b> with P = <b>{_esc(entry.metric_name)}</b> (higher is "
        "better): a = P of target <i>i</i> trained on N units of <i>i</i> plus N units of donor <i>j</i>, "
        "b = P on the N units of <i>i</i> alone (single), c = P on 2N units of <i>i</i> (self). "
        "<b>C = 1</b>: the donor's data is worth as much as the same amount of extra target data; "
        "<b>C = 0</b>: no effect; <b>C &lt; 0</b>: interference; C &gt; 1: worth more than in-language "
        f"data. Seeds aggregated by policy <b>{_esc(r.policy)}</b>; <b>{finite} / {n * n}</b> cells finite.</p>"
        f"<p>Colours are centred on 0 and saturate at ±{C_CLIP:g}; printed values are not clipped.{values} "
        "Grey “–”: missing runs or undefined C (hover says which). Dashed boxes: language families "
        "(solid: a family split into sub-families); outlined diagonal: self cells, C = 1 by construction. "
        f"Hover a cell for the SE (delta method), the {_pct(r.ci)} % Fieller interval of the ratio of paired-seed "
        "means (two rays or the whole line when the self gain is not clearly positive), the seed counts and M.</p>"
        f"{_marks_caption(r)}<p>{flag}</p>"
    )


def _marks_caption(r: CLTMResult) -> str:
    """What the ● and ◆ marks on the CLTM mean, or why there are none."""
    if not np.isfinite(r.p_zero).any():
        return ("<p>No per-cell significance marks: this matrix was written without per-cell p-values "
                "(older cltm matrix output, or fewer than 2 paired seeds per cell).</p>")
    test = ("paired t-tests" if r.test == "t" else "exact sign-flip permutation tests" if r.test == "signflip"
            else f"{_esc(r.test)} tests")
    off = ~np.eye(len(r.languages), dtype=bool) & np.isfinite(r.p_zero)
    untestable = int((off & ~r.testable()).sum())
    warn = (f' <span class="flag">{untestable} of {int(off.sum())} cells cannot reach p &lt; {ALPHA:g} with their '
            f"seeds at all (smallest attainable p ≥ {ALPHA:g}): for them no mark means too few seeds, not no "
            "effect.</span>" if untestable else "")
    return (
        f"<p><b>●</b> (top right of a cell): C differs from 0 and <b>◆</b> (top left): C differs from 1, each at "
        f"a Benjamini–Hochberg false-discovery rate of {ALPHA:g} over the off-diagonal cells of this matrix, from "
        f"two-sided {test} on the paired seed differences a − b (C = 0) and a − c (C = 1); a cell is marked "
        f"exactly when its {_pct(r.ci)} % interval excludes the value, before the BH adjustment (hover for p and q). "
        f"No mark: the seeds cannot tell the cell from that value.{warn}</p>"
    )


def _m_caption(entry: MatrixEntry) -> str:
    r = entry.result
    n = len(r.languages)
    finite = int(np.isfinite(r.M).sum())
    return (
        f"<p><b>M[i, j] = (a − b) / b</b> in %, the raw relative gain of target <i>i</i> when donor <i>j</i>'s "
        "N units are added to its own N, over the single baseline b; on the diagonal, the relative self gain "
        "(c − b) / b. Unlike C it is not normalised by what more target data would give, so rows with a "
        f"high baseline have small M. P = <b>{_esc(entry.metric_name)}</b>, aggregation "
        f"<b>{_esc(r.policy)}</b>, <b>{finite} / {n * n}</b> cells finite. Colour range symmetric around 0 "
        f"(±{_f(_m_range(r.M) * 100, 'g')} %, the 98th percentile of |M|); grey “–”: missing or undefined.</p>"
    )


def _facts(entry: MatrixEntry) -> str:
    r = entry.result
    n = len(r.languages)
    seeds = sorted({int(x) for x in np.asarray(r.n_seeds).ravel() if x > 0} | {int(x) for x in r.n_single if x > 0})
    seed_text = "–" if not seeds else (str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}")
    n_ill = int(np.sum(r.ill_conditioned))
    return (
        f"<p class=facts>task <b>{_esc(entry.task)}</b> · architecture <b>{_esc(entry.arch)}</b> · "
        f"P = <b>{_esc(entry.metric_name)}</b> · policy <b>{_esc(r.policy)}</b> · "
        f"<b>{n}</b> languages · seeds per cell <b>{seed_text}</b> · "
        f"finite C cells <b>{int(np.isfinite(r.C).sum())} / {n * n}</b> · missing cells "
        f"<b>{len(r.missing)}</b> · ill-conditioned rows "
        f"<b{' class=flag' if n_ill else ''}>{n_ill}</b></p>"
    )


def _matrix_section(entry: MatrixEntry, slug: str, languages: pl.DataFrame | None) -> str:
    langs, perm = _order(entry, languages)
    figs = figures(entry, languages)
    return "\n".join([
        f'<section id="{slug}">',
        f"<h2>{_esc(entry.label)}</h2>",
        _facts(entry),
        f'<figure><div class="bleed"><div class="plot">{_figure_div(figs["cltm"], f"{slug}-cltm")}</div></div>',
        f"<figcaption>{_cltm_caption(entry, figs['cltm'].layout.meta['values_printed'])}</figcaption></figure>",
        f'<figure><div class="bleed"><div class="plot">{_figure_div(figs["m"], f"{slug}-m")}</div></div>',
        f"<figcaption>{_m_caption(entry)}</figcaption></figure>",
        f'<h3 id="{slug}-self-gain">Self gain</h3>',
        "<p>The denominator of every C in a row: b is P of the single cell (N units of the target), c of the "
        "self cell (2N units), both on the seeds they share; SE = sd(c<sub>s</sub> − b<sub>s</sub>) / √n over "
        "those paired seeds. A row is flagged unless the self gain is significantly positive (paired t-test, "
        f"{_pct(entry.result.ci)} % two-sided): exactly the rows whose Fieller intervals are bounded.</p>",
        _self_gain_table(entry, langs, perm),
        _missing_list(entry, langs),
        _analysis_sections(entry, langs, slug),
        "</section>",
    ])


# --------------------------------------------------------------------------------------------------
# Analyses (cltm analyse): cross-task summary, properties, map, typology, probes, training time, N
# --------------------------------------------------------------------------------------------------

_SMALL_FIG = {"paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff", "font": {"family": _FONT, "size": 12}}


def _g(d: Mapping | None, *keys: str, default: Any = math.nan) -> Any:
    """Nested lookup in analysis.json (None and missing keys give ``default``)."""
    for k in keys:
        if not isinstance(d, Mapping) or d.get(k) is None:
            return default
        d = d[k]
    return d


def _pc(x: float) -> str:
    """A share as a whole percentage ("15 %"), or an en dash when undefined."""
    return f"{_f(float(x) * 100, '.0f')} %" if math.isfinite(float(x)) else "–"


def _best_mantel(a: Mapping) -> tuple[str, float, float] | None:
    """The URIEL distance with the smallest Holm-adjusted Mantel p-value: (kind, r, adjusted p).

    Picking the smallest of several p-values is itself a test of "any link": unadjusted it is too optimistic."""
    rows = [(k, v["r"], v["p_holm"]) for k, v in (a.get("mantel") or {}).items()
            if v.get("p_holm") is not None and math.isfinite(float(v["p_holm"]))]
    return min(rows, key=lambda x: (x[2], x[0])) if rows else None


def _summary_figure(matrices: Sequence[MatrixEntry]) -> go.Figure | None:
    """Mean off-diagonal C with its CI per task and architecture, on one axis (the table's first column, drawn)."""
    rows = []
    for e in matrices:
        mean = _g(e.analysis, "properties", "mean_offdiag_C", default={})
        m, lo, hi = _g(mean, "mean"), _g(mean, "ci_low"), _g(mean, "ci_high")
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
        x=[_num(r[1]) for r in rs], y=labels, mode="markers",
        marker={"size": 10, "color": ["#b45309" if r[4] else "#2a5db0" for r in rs]},
        error_x={"type": "data", "symmetric": False, "visible": True, "thickness": 1.5, "width": 5,
                 "array": [_num(r[3] - r[1]) if math.isfinite(r[3]) else 0 for r in rs],
                 "arrayminus": [_num(r[1] - r[2]) if math.isfinite(r[2]) else 0 for r in rs]},
        customdata=[[_f(r[2]), _f(r[3]), r[4]] for r in rs],
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


def _summary_section(matrices: Sequence[MatrixEntry], slugs: Sequence[str]) -> str:
    """The cross-task "language dependence" table: one row per task and architecture, first on the page."""
    rows = []
    for e, slug in zip(matrices, slugs):
        a = e.analysis or {}
        r = e.result
        mean = _g(a, "properties", "mean_offdiag_C", default={})
        fam = _g(a, "properties", "intra_family_share", default={})
        sh = _g(a, "properties", "shares", default={})
        sig = a.get("significance") or {}
        best = _best_mantel(a)
        probe = _g(a, "probes", "by_kind", "self", "accuracy")
        chance = _g(a, "probes", "by_kind", "self", "chance")
        n_ill = int(np.sum(r.ill_conditioned))
        ci = (f"[{_f(_g(mean, 'ci_low'))}, {_f(_g(mean, 'ci_high'))}]"
              if math.isfinite(_g(mean, "ci_low")) else "")
        rows.append(
            f'<tr><td><a href="#{slug}">{_esc(e.task)}</a></td><td>{_esc(e.arch)}</td>'
            f"<td>{_esc(e.metric_name)}</td><td class=num>{len(r.languages)}</td>"
            f"<td class=num><b>{_f(_g(mean, 'mean'))}</b> <span class=meta>{ci}</span>"
            + (f' <span class=flag title="{n_ill} of {len(r.languages)} rows ill-conditioned: their C are '
               'unreliable">⚠</span>' if n_ill else "") + "</td>"
            f"<td class=num>{_f(_g(sh, 'positive') * 100, '.0f')} / {_f(_g(sh, 'negative') * 100, '.0f')} / "
            f"{_f(_g(sh, 'above_one') * 100, '.0f')}</td>"
            f"<td class=num>{_pc(_g(fam, 'value'))} <span class=meta>(uniform "
            f"{_pc(_g(fam, 'uniform'))})</span></td>"
            f"<td class=num>{_f(_g(a, 'properties', 'asymmetry', 'value'))}</td>"
            f"<td class=num>{sig.get('above_zero', '–')} / {sig.get('below_zero', '–')} / {sig.get('tested', '–')}</td>"
            f"<td class=num>{_f(_g(a, 'map', 'stress'))}</td>"
            + (f"<td>{_esc(best[0])}<br>r = {_f(best[1])}, Holm p = {_f(best[2], '.2g')}</td>" if best else "<td>–</td>")
            + f"<td class=num>{_f(probe * 100, '.0f')}{'' if not math.isfinite(probe) else ' %'}"
            + ("" if not math.isfinite(chance) else f"<br><span class=meta>chance {_pc(chance)}</span>") + "</td>"
            f"<td class=num>{'<span class=flag>' + str(n_ill) + '</span>' if n_ill else 0}</td></tr>"
        )
    head = (
        "<tr><th>task</th><th>arch</th><th>P</th><th class=num>langs</th>"
        "<th class=num>mean off-diag C [CI]</th><th class=num>% C&gt;0 / &lt;0 / &gt;1</th>"
        "<th class=num>intra-family share of + mass</th><th class=num>asym&shy;metry</th>"
        f"<th class=num>cells ≠ 0 at q&lt;{ALPHA:g}: &gt;0 / &lt;0 / tested</th><th class=num>map stress</th>"
        "<th>strongest typology link (Mantel, Holm-adjusted over the distances)</th><th class=num>lang-ID probe (self)</th>"
        "<th class=num>⚠ rows</th></tr>"
    )
    note = (
        "<p class=meta>How language-dependent each task is, side by side. <b>Mean off-diagonal C</b>: what a "
        "donor's data is worth, on average, relative to the target's own (1 = as much, 0 = nothing), over the "
        "cells of well-conditioned rows; its CI is a paired-seed t interval (delta method, seed as the unit). A linguistic task (ASR) is expected to show a lower "
        "mean, more negative cells, a higher intra-family share (against the share of intra-family cells, "
        "“uniform”) and a stronger typology link than paralinguistic ones (gender, SV). Asymmetry: "
        "‖C − Cᵀ‖<sub>F</sub> / ‖C‖<sub>F</sub>. Significance: per-cell paired tests with BH false-discovery control. "
        "Probe: cross-validated accuracy of a linear language-ID classifier on the fine-tuned self models' "
        "embeddings. Each column is explained in the matrix's section.</p>"
    )
    if not any(e.analysis for e in matrices):
        note += "<p class=meta>No analysis.json was given: run <code>cltm analyse</code> (rule analyse).</p>"
    fig = _summary_figure(matrices)
    plot = (f'<figure><div class="plot">{_figure_div(fig, "summary-plot")}</div><figcaption>Mean off-diagonal C '
            "per task and architecture with its paired-seed t interval (bars cut at the frame); amber ⚠: the "
            "matrix has ill-conditioned rows.</figcaption></figure>" if fig is not None else "")
    return (f'<section id="summary"><h2>Language dependence across tasks</h2><div class=scroll-x><table '
            f'class="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>{note}{plot}</section>')


def _strength_figure(entry: MatrixEntry, langs: Sequence[_Lang], slug: str) -> go.Figure:
    """Donor and receiver strength per language (bars), languages in family order."""
    a = entry.analysis or {}
    names = [lang.name for lang in langs]
    fig = go.Figure()
    for key, label, color in (("donor_strength", "donor strength (column sum)", "#2a5db0"),
                              ("receiver_strength", "receiver strength (row sum)", "#d6604d")):
        vals = [_num(_g(a, "properties", key, lang.code, "value")) for lang in langs]
        ns = [_g(a, "properties", key, lang.code, "n", default=0) for lang in langs]
        fig.add_trace(go.Bar(x=names, y=vals, name=label, marker_color=color, customdata=ns,
                             hovertemplate="%{x}: %{y:.2f} (%{customdata} finite cells)<extra>" + label + "</extra>"))
    fig.update_layout(**_SMALL_FIG, barmode="group", width=min(1000, 240 + 34 * len(langs)), height=340,
                      margin={"l": 60, "r": 20, "t": 56, "b": 90}, legend={"orientation": "h", "y": 1.2, "x": 0},
                      yaxis={"title": "sum of positive off-diagonal C", "gridcolor": "#eee"},
                      xaxis={"tickangle": -40}, meta={"cltm_figure": f"{slug}-strength"})
    return fig


def _map_figure(entry: MatrixEntry, langs: Sequence[_Lang], slug: str) -> go.Figure | None:
    """The MDS map of transfer profiles: colour = family, symbol and label = cluster."""
    m = (entry.analysis or {}).get("map") or {}
    codes = m.get("languages") or []
    if len(codes) < 3:
        return None
    info = {lang.code: lang for lang in langs}
    cluster = dict(zip(m.get("cluster_languages") or [], m.get("clusters") or []))
    symbols = ["circle", "square", "diamond", "triangle-up", "cross", "star", "hexagon", "x", "pentagon"]
    fig = go.Figure()
    for fam in sorted({info[c].family for c in codes if c in info}, key=_family_key):
        ks = [k for k, c in enumerate(codes) if c in info and info[c].family == fam]
        fig.add_trace(go.Scatter(
            x=[_num(m["x"][k]) for k in ks], y=[_num(m["y"][k]) for k in ks], mode="markers+text", name=fam,
            text=[f"{codes[k]}" for k in ks], textposition="top center",
            marker={"size": 13, "color": info[codes[ks[0]]].color, "line": {"width": 1, "color": "#333"},
                    "symbol": [symbols[(cluster.get(codes[k], 1) - 1) % len(symbols)] for k in ks]},
            customdata=[[info[codes[k]].name, cluster.get(codes[k], "–")] for k in ks],
            hovertemplate="%{customdata[0]} (%{text})<br>cluster %{customdata[1]}<extra>" + _esc(fam) + "</extra>",
        ))
    fig.update_layout(**_SMALL_FIG, width=640, height=520, margin={"l": 50, "r": 20, "t": 40, "b": 50},
                      xaxis={"title": "MDS 1", "zeroline": False, "gridcolor": "#eee"},
                      yaxis={"title": "MDS 2", "zeroline": False, "gridcolor": "#eee", "scaleanchor": "x"},
                      title={"text": f"Transfer-profile map · stress {_f(m.get('stress', math.nan))} · "
                                     f"{m.get('k', '–')} clusters (symbols)", "font": {"size": 13}, "x": 0.02},
                      meta={"cltm_figure": f"{slug}-map"})
    return fig


def _projection_figure(entry: MatrixEntry, langs: Sequence[_Lang], slug: str) -> go.Figure | None:
    """2-D PCA of probe-set embeddings of each target's self model (one panel per target, up to 8)."""
    from plotly.subplots import make_subplots

    proj = _g(entry.analysis, "probes", "projections", default={})
    targets = [lang.code for lang in langs if lang.code in proj][:8]
    if not targets:
        return None
    # one hue per locale (family colours would make es and it, or de and nl, indistinguishable here)
    locales = sorted({loc for t in targets for loc in proj[t]["locale"]})
    color = {loc: _PALETTE[k % len(_PALETTE)] for k, loc in enumerate(locales)}
    cols = min(4, len(targets))
    rows = math.ceil(len(targets) / cols)
    titles = [f"{t} {proj[t]['cell']} s{proj[t]['seed']} · acc {_f(float(proj[t].get('accuracy') or math.nan) * 100, '.0f')} %"
              for t in targets]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.05, vertical_spacing=0.12)
    shown: set[str] = set()
    for k, t in enumerate(targets):
        p = proj[t]
        for loc in sorted(set(p["locale"])):
            idx = [q for q, x in enumerate(p["locale"]) if x == loc]
            fig.add_trace(go.Scatter(
                x=[_num(p["x"][q]) for q in idx], y=[_num(p["y"][q]) for q in idx], mode="markers", name=loc,
                legendgroup=loc, showlegend=loc not in shown, hovertemplate=f"{_esc(loc)}<extra></extra>",
                marker={"size": 5, "color": color.get(loc, "#888888"), "opacity": 0.8}), row=k // cols + 1, col=k % cols + 1)
            shown.add(loc)
    fig.update_xaxes(showticklabels=False, zeroline=False, gridcolor="#eee")
    fig.update_yaxes(showticklabels=False, zeroline=False, gridcolor="#eee")
    fig.update_layout(**_SMALL_FIG, width=260 * cols + 120, height=250 * rows + 60,
                      margin={"l": 20, "r": 20, "t": 50, "b": 20}, meta={"cltm_figure": f"{slug}-probe"})
    fig.update_annotations(font_size=11)
    return fig


def _plain_table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "",
                 num: Sequence[int] | None = None) -> str:
    """An HTML table of already-escaped cells; columns in ``num`` (default: all but the first) right-aligned."""
    num = set(range(1, len(head)) if num is None else num)
    h = "".join(f"<th{' class=num' if k in num else ''}>{x}</th>" for k, x in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{' class=num' if k in num else ''}>{x}</td>" for k, x in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _analysis_sections(entry: MatrixEntry, langs: Sequence[_Lang], slug: str) -> str:
    """Properties, map and clusters, typology, probes and training time of one matrix."""
    a = entry.analysis
    if not a:
        return "<p class=meta>No analysis for this matrix (cltm analyse was not run).</p>"
    p = a.get("properties") or {}
    mean = p.get("mean_offdiag_C") or {}
    sh = p.get("shares") or {}
    fam, top = p.get("intra_family_share") or {}, p.get("intra_top_family_share") or {}
    sig = a.get("significance") or {}
    out = [f'<h3 id="{slug}-properties-section">Matrix properties</h3>']
    rows = [
        ["mean off-diagonal C", f"{_f(_g(mean, 'mean'))} [{_f(_g(mean, 'ci_low'))}, {_f(_g(mean, 'ci_high'))}]",
         f"{mean.get('n', 0)} cells of {mean.get('rows_used', '–')} well-conditioned rows "
         f"({mean.get('cells_left_out', 0)} cells of {mean.get('rows_ill', 0)} ill-conditioned rows left out); "
         f"{_pct(mean.get('ci', 0.95))} % paired-seed t interval over {mean.get('n_seeds', '–')} seeds (delta method); "
         f"median {_f(_g(mean, 'median'))}"],
        ["share of cells C &gt; 0 / C &lt; 0 / C &gt; 1",
         f"{_pc(_g(sh, 'positive'))} / {_pc(_g(sh, 'negative'))} / "
         f"{_pc(_g(sh, 'above_one'))}", f"{sh.get('n', 0)} finite off-diagonal cells"],
        ["intra-family share of positive mass", f"{_pc(_g(fam, 'value'))}",
         f"families as in the languages sheet; {_pc(_g(fam, 'uniform'))} if mass were spread "
         f"evenly over cells; top-level families: {_pc(_g(top, 'value'))} "
         f"(uniform {_pc(_g(top, 'uniform'))})"],
        ["asymmetry ‖C − Cᵀ‖<sub>F</sub> / ‖C‖<sub>F</sub>", _f(_g(p, "asymmetry", "value")),
         f"over {_g(p, 'asymmetry', 'n', default=0)} cells whose mirror is finite; 0 = symmetric"],
        [f"cells different from 0 (BH q &lt; {ALPHA:g})",
         f"{sig.get('above_zero', '–')} above, {sig.get('below_zero', '–')} below",
         f"of {sig.get('tested', '–')} tested; different from 1: {sig.get('above_one', '–')} above, "
         f"{sig.get('below_one', '–')} below (● and ◆ on the heatmap)"],
    ]
    out.append(_plain_table(["statistic", "value", "computed on"], rows, "props", num=[1]))
    fig = _strength_figure(entry, langs, slug)
    out.append(f'<figure><div class="plot">{_figure_div(fig, f"{slug}-strength")}</div><figcaption>Donor strength '
               "of j: the sum over targets of its positive off-diagonal C[i, j] (how much it gives); receiver "
               "strength of i: the sum over donors of positive C[i, j] (how much it takes). Negative cells are "
               "not subtracted; hover for the number of finite cells behind each bar.</figcaption></figure>")

    m = a.get("map") or {}
    out.append(f'<h3 id="{slug}-map-section">Map of transfer profiles</h3>')
    fig = _map_figure(entry, langs, slug)
    if fig is None:
        out.append("<p class=meta>Fewer than three languages with comparable profiles: no map.</p>")
    else:
        dropped = sorted(set(a.get("languages", [])) - set(m.get("languages") or []))
        out.append(
            f'<figure><div class="plot">{_figure_div(fig, f"{slug}-map")}</div><figcaption>Each language is placed '
            "by classical MDS of the distances between transfer profiles: the RMS difference of two languages' "
            "rows (what they receive) and columns (what they give) over every third language, their own cells "
            "left out; an ill-conditioned row (⚠) is left out of the profiles, so such a language is placed by "
            f"its column alone. Kruskal stress-1 <b>{_f(m.get('stress', math.nan))}</b> (0 = the 2-D map keeps every "
            "distance; above ~0.2 read it loosely). Symbols: average-linkage clusters on the same distances, "
            f"k = {m.get('k', '–')} chosen by silhouette ({_f(m.get('silhouette', math.nan))}). "
            + (f"Left out for undefined distances: {_esc(', '.join(dropped))}." if dropped else "")
            + "</figcaption></figure>")

    out.append(f'<h3 id="{slug}-typology-section">Typology: Mantel tests against URIEL+</h3>')
    typ = a.get("typology") or {}
    mantel = a.get("mantel") or {}
    if not mantel:
        out.append("<p class=meta>No typological distances (cltm analyse was run without --typology).</p>")
    else:
        langs_all = a.get("languages", [])
        mrows = []
        order = {k: n for n, k in enumerate(DISTANCES)}
        for kind, v in sorted(mantel.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
            left = [t for t in langs_all if t not in (v.get("used") or [])]
            mrows.append([_esc(kind), _f(v.get("r", math.nan)), _f(v.get("p", math.nan), ".3g"),
                          _f(v.get("p_holm", math.nan), ".3g"),
                          f"{v.get('n_languages', 0)} / {v.get('n_pairs', 0)}",
                          ("exact, " if v.get("exact") else "") + f"{v.get('permutations', 0)} permutations",
                          _esc(", ".join(left)) or "–"])
        out.append(_plain_table(["URIEL+ distance", "r", "p", "p (Holm)", "languages / pairs", "test",
                                 "left out (no data)"], mrows, "mantel", num=[1, 2, 3, 4]))
        unknown = typ.get("unknown_iso") or []
        no_iso = typ.get("locales_without_iso") or []
        out.append(
            "<p class=meta>Pearson r between the symmetrised CLTM, (C[i, j] + C[j, i]) / 2, and the URIEL+ "
            "distance over language pairs; p from permuting languages (two-sided; every permutation when there "
            "are few languages); p (Holm): adjusted for testing every distance against the same C, so the smallest "
            "adjusted p keeps “any typology link” at its nominal level. Negative r: closer languages transfer more. "
            "Distances from "
            f"{_esc(typ.get('source') or 'URIEL+')} on the languages sheet's ISO 639-3 codes; pairs without "
            "shared URIEL+ features are left out, never imputed."
            + (f" Codes URIEL+ does not know: {_esc(', '.join(unknown))}." if unknown else "")
            + (f" Locales without an ISO 639-3 code: {_esc(', '.join(no_iso))}." if no_iso else "") + "</p>")

    pr = a.get("probes") or {}
    out.append(f'<h3 id="{slug}-probes-section">Latent probes</h3>')
    kinds = pr.get("by_kind") or {}
    if not kinds:
        out.append(f"<p class=meta>No run of this matrix carries a language-ID probe ({pr.get('runs', 0)} runs read; "
                   "set hparams.probe_clips &gt; 0 to probe).</p>")
    else:
        prow = [[k, f"{_f(v['accuracy'] * 100, '.1f')} %", _f(v.get('sd', math.nan) * 100, '.1f'),
                 f"{_f(v.get('chance', math.nan) * 100, '.1f')} %", str(v["n_runs"])] for k, v in kinds.items()]
        out.append(_plain_table(["cell kind", "probe accuracy", "sd (pts)", "chance", "runs"], prow))
        out.append("<p class=meta>How separable the languages stay after fine-tuning: speaker-grouped "
                   "cross-validated logistic regression of language identity on pooled final-layer embeddings of a "
                   "held-out multilingual probe set, averaged over runs. "
                   f"{pr.get('runs_without_probe', 0)} of {pr.get('runs', 0)} runs carry no probe.</p>")
        fig = _projection_figure(entry, langs, slug)
        if fig is not None:
            out.append(f'<figure><div class="plot">{_figure_div(fig, f"{slug}-probe")}</div><figcaption>2-D PCA of '
                       "the probe-set embeddings of each target's self model (lowest seed), coloured by the clip's "
                       "language.</figcaption></figure>")

    tt = a.get("training_time") or {}
    out.append(f'<h3 id="{slug}-training-time-section">Training-time transfer</h3>')
    if not tt.get("runs"):
        out.append("<p class=meta>No dev curves in the runs' metrics.json.</p>")
    else:
        by_kind = tt.get("by_kind") or {}
        krow = [[k, _f(v["mean_ratio"]), f"{v['reached']} / {v['cells']}"] for k, v in by_kind.items()]
        name = {lang.code: lang.name for lang in langs}
        drow = [[f"{_esc(name.get(d, d))} <span class=code>{_esc(d)}</span>", _f(v["mean_ratio"]),
                 str(v["n"]), str(v.get("never", 0))] for d, v in (tt.get("by_donor") or {}).items()]
        out.append(
            "<p>For every self and dual run: the first step at which its dev score reaches the best dev score of "
            "the single run of the same target and seed, divided by the step at which the single run itself "
            "first got there. Below 1: the added data gets the model there sooner. Steps count batches, and a "
            "cell with 2N units runs twice the batches per epoch, so read the ratios against each other (dual "
            "against self) rather than against 1.</p>")
        out.append('<div class="cols">' + _plain_table(["cell kind", "mean steps ratio", "reached / runs"], krow)
                   + _plain_table(["donor", "mean steps ratio", "runs", "never reached"], drow) + "</div>")
    return "\n".join(out)


def _curve_figure(lc: Mapping[str, Any], langs: Sequence[_Lang], uid: str) -> go.Figure:
    """Mean ± sd of P over seeds against training units (log2 axis), per target, with the fitted line."""
    curve = lc["curve"]
    color = {lang.code: lang.color for lang in langs}
    fig = go.Figure()
    for k, t in enumerate(sorted(set(curve["target"].to_list()))):
        g = curve.filter(pl.col("target") == t).group_by("units").agg(
            pl.col("value").mean().alias("m"), pl.col("value").std().alias("sd"), pl.len().alias("n")).sort("units")
        c = color.get(t, _PALETTE[k % len(_PALETTE)])
        fig.add_trace(go.Scatter(
            x=g["units"].to_list(), y=[_num(x) for x in g["m"]], mode="markers+lines", name=t,
            error_y={"type": "data", "array": [_num(x) for x in g["sd"].fill_null(0)], "visible": True},
            marker={"color": c, "size": 8}, line={"color": c, "width": 1.5},
            hovertemplate=f"{_esc(t)}: %{{x}} units, P = %{{y:.3f}}<extra></extra>"))
        fit = (lc["rec"].get("fit") or {}).get(t)
        if fit:
            xs = g["units"].to_list()
            fig.add_trace(go.Scatter(
                x=xs, y=[_num(fit["alpha"] + fit["beta"] * math.log2(x)) for x in xs], mode="lines",
                name=f"{t} fit: {fit['beta']:+.3f} per doubling", line={"color": c, "dash": "dot", "width": 1.2},
                hoverinfo="skip"))
    rec_n = lc["rec"].get("recommended_n")
    shapes = []
    if rec_n is not None:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": rec_n, "x1": rec_n, "y0": 0, "y1": 1,
                       "line": {"color": "#1a1a1a", "dash": "dash", "width": 1.2}})
    fig.update_layout(**_SMALL_FIG, width=760, height=420, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      xaxis={"type": "log", "title": f"training units ({_esc(lc['rec'].get('unit', 'utterances'))})",
                             "tickvals": sorted(set(curve["units"].to_list())), "gridcolor": "#eee"},
                      yaxis={"title": f"test {_esc(lc['rec'].get('metric', 'P'))}", "gridcolor": "#eee"},
                      shapes=shapes,
                      title={"text": f"Learning curve · {_esc(lc['rec'].get('task'))} · {_esc(lc['rec'].get('arch'))}"
                                     + (f" · recommended N = {rec_n:g}" if rec_n is not None else ""),
                             "font": {"size": 13}, "x": 0.02},
                      meta={"cltm_figure": uid})
    return fig


def _learning_curve_section(curves: Sequence[Mapping[str, Any]], languages: pl.DataFrame | None) -> str:
    """Choice of N: the learning curves and the per-N self gains behind the recommendation."""
    if not curves:
        return ""
    out = ['<section id="learning-curve">', "<h2>Choice of N: learning curves</h2>"]
    for k, lc in enumerate(curves):
        rec = lc["rec"]
        langs = _languages(sorted(set(lc["curve"]["target"].to_list())), languages)
        fig = _curve_figure(lc, langs, f"learning-curve-{k}")
        rec_n = rec.get("recommended_n")
        out.append(f'<figure><div class="plot">{_figure_div(fig, f"learning-curve-{k}")}</div><figcaption>'
                   f"Single (N units) and self (2N units) cells of {_esc(', '.join(rec.get('languages', [])))}, "
                   f"seeds {_esc(', '.join(map(str, rec.get('seeds', []))))}; points are mean ± sd over seeds, dotted "
                   "lines the fit P = α + β·log₂(units). <b>Rule</b>: " + _esc(rec.get("rule", "")) + ". "
                   + (f"<b>Recommended N = {rec_n:g}</b> (dashed line)." if rec_n is not None else
                      "<span class=flag>No N on the ladder passes: doubling never clearly helps every target; "
                      "use more seeds, other N or a harder task regime.</span>") + "</figcaption></figure>")
        rows = []
        for step in rec.get("steps", []):
            for t, v in step["targets"].items():
                rows.append([f"{step['n']:g}", _esc(t), _f(v["b"], ".3f"), _f(v["c"], ".3f"),
                             f"{_f(v['gain'], '+.3f')} ± {_f(v['se'], '.3f')}",
                             "yes" if v["clear"] else "<span class=flag>no</span>",
                             "<b>all</b>" if step["all_clear"] else ""])
        out.append(_plain_table(["N", "target", "b (N)", "c (2N)", "c − b ± SE", "clearly positive", ""], rows))
    out.append("</section>")
    return "\n".join(out)


def _inventory_section(inventory: pl.DataFrame | None) -> str:
    out = ['<section id="inventory">', "<h2>Run inventory</h2>"]
    if inventory is None or inventory.height == 0:
        out += ["<p class=meta>No run inventory was given.</p>", "</section>"]
        return "\n".join(out)
    inv = inventory
    for col in ("task", "arch", "target", "donor", "seed", "status"):
        if col not in inv.columns:
            inv = inv.with_columns(pl.lit(None, dtype=pl.String).alias(col))
    inv = inv.with_columns(
        pl.col("task").cast(pl.String).fill_null("?"),
        pl.col("arch").cast(pl.String).fill_null("?"),
        pl.col("target").cast(pl.String).fill_null("?"),
        pl.col("donor").cast(pl.String).fill_null("-").replace("", "-"),
        pl.col("status").cast(pl.String).fill_null("?"),
    )
    statuses = ["done", "missing", "failed"]
    statuses += sorted(set(inv["status"].to_list()) - set(statuses))
    counts = inv.group_by(["task", "arch", "status"]).len().sort(["task", "arch", "status"])
    table: dict[tuple[str, str], dict[str, int]] = {}
    for task, arch, status, n in counts.iter_rows():
        table.setdefault((task, arch), {})[status] = n
    head = "<tr><th>task</th><th>arch</th>" + "".join(f"<th class=num>{_esc(s)}</th>" for s in statuses) + \
        "<th class=num>total</th><th class=num>done %</th></tr>"
    body = []
    for (task, arch), by in sorted(table.items()):
        total = sum(by.values())
        done = by.get("done", 0)
        cells = "".join(
            f"<td class=num><span class=flag>{by[s]}</span></td>" if s != "done" and by.get(s, 0)
            else f"<td class=num>{by.get(s, 0)}</td>"
            for s in statuses
        )
        body.append(f"<tr><td>{_esc(task)}</td><td>{_esc(arch)}</td>{cells}<td class=num>{total}</td>"
                    f"<td class=num>{100 * done / total:.1f}</td></tr>")
    out.append("<p>Every expected run (task, architecture, target, donor, seed) and whether its metrics file "
               "exists and reads back (a truncated or damaged file counts as missing). A missing or failed run "
               "leaves its cell's seed count short or the cell NaN; a plain <code>snakemake</code> rerun "
               "trains exactly those (README, Guarantees and recovery).</p>")
    out.append(f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>")

    bad = inv.filter(pl.col("status") != "done")
    if bad.height == 0:
        out.append("<p class=meta>All runs are done.</p>")
    else:
        grouped = (
            bad.with_columns(pl.col("seed").cast(pl.Int64, strict=False))
            .group_by(["task", "arch", "status", "target", "donor"])
            .agg(pl.col("seed").sort().alias("seeds"))
            .sort(["task", "arch", "status", "target", "donor"])
        )
        rows = []
        for task, arch, status, target, donor, seeds in grouped.head(_MAX_LISTED).iter_rows():
            kind = cell_kind(target, donor)
            seed_text = ", ".join("?" if s is None else str(s) for s in seeds)
            rows.append(f"<tr><td>{_esc(task)}</td><td>{_esc(arch)}</td><td class=code>{_esc(target)}</td>"
                        f"<td class=code>{_esc(donor)}</td><td>{kind}</td><td><span class=flag>{_esc(status)}"
                        f"</span></td><td class=num>{_esc(seed_text)}</td></tr>")
        more = grouped.height - _MAX_LISTED
        tail = f"<p class=meta>… and {more} more cells.</p>" if more > 0 else ""
        out.append(
            f"<details><summary>Runs not done: {bad.height} run{'s' if bad.height != 1 else ''} in "
            f"{grouped.height} cell{'s' if grouped.height != 1 else ''}</summary><div class=scroll><table><thead>"
            "<tr><th>task</th><th>arch</th><th>target</th><th>donor</th><th>kind</th><th>status</th>"
            "<th class=num>seeds</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
            + tail + "</details>"
        )
    out.append("</section>")
    return "\n".join(out)


def _plain(obj: Any) -> Any:
    """A YAML-safe copy of a config (paths and tuples to plain types)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def _versions() -> list[tuple[str, str]]:
    out = [("python", platform.python_version())]
    for dist in ("cltm-pipeline", "numpy", "polars", "plotly", "pyyaml", "snakemake", "torch"):
        try:
            out.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            out.append((dist, "not installed"))
    return out


def _config_section(config: Mapping | None) -> str:
    dump = yaml.safe_dump(_plain(config or {}), sort_keys=False, allow_unicode=True, default_flow_style=None,
                          width=100)
    versions = "".join(f"<tr><td>{_esc(k)}</td><td class=code>{_esc(v)}</td></tr>" for k, v in _versions())
    return "\n".join([
        '<section id="config">', "<h2>Configuration and versions</h2>",
        "<details open><summary>Config (YAML, as validated)</summary>", f"<pre>{_esc(dump)}</pre></details>",
        f"<table><thead><tr><th>package</th><th>version</th></tr></thead><tbody>{versions}</tbody></table>",
        "</section>",
    ])


def render_report(
    matrices: Sequence[MatrixEntry],
    languages: pl.DataFrame | None,
    inventory: pl.DataFrame | None,
    config: Mapping | None,
    out_path: Path,
    title: str = "Cross-Lingual Transfer Matrices",
    *,
    generated: str | None = None,
    learning_curves: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Write the report as ONE self-contained HTML file (plotly.js inline once), byte-stable for equal inputs.

    ``generated`` is an optional timestamp (or any text) printed under the title; nothing else depends on
    the clock. The cross-task summary comes first (it needs each entry's ``analysis``); ``learning_curves``
    are ``{"curve": curve.tsv as a DataFrame, "rec": recommendation.json}`` (cltm learning-curve).
    """
    slugs: list[str] = []
    for entry in matrices:
        slug, k = entry.slug, 2
        while slug in slugs or slug in ("inventory", "config", "summary", "learning-curve"):
            slug, k = f"{entry.slug}-{k}", k + 1
        slugs.append(slug)

    lede = (
        "Each matrix measures <b>cross-lingual transfer</b>: how much training data from a donor language "
        "<i>j</i> helps a target language <i>i</i>, relative to the same amount of extra data in <i>i</i> "
        "itself. Every cell is scored on the target's own test set, averaged over seeds. In the "
        "Cross-Lingual Transfer Matrix, <b>C = 1</b> means the donor's data is worth as much as target "
        "data, <b>0</b> no effect, <b>below 0</b> interference. Rows are targets, columns donors, languages "
        "grouped by family. Hover any cell for its uncertainty (delta-method SE and Fieller interval); "
        "rows whose own self gain is too small to divide by are flagged ⚠, never hidden."
    )
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>", f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head>", "<body>",
        "<header>", f"<h1>{_esc(title)}</h1>", f'<p class="lede">{lede}</p>',
    ]
    meta = [f"{len(matrices)} matri{'ces' if len(matrices) != 1 else 'x'}"]
    if generated:
        meta.append(f"generated {_esc(generated)}")
    parts.append(f'<p class="meta">{" · ".join(meta)}</p>')
    parts.append("</header>")
    if matrices:  # first screen: the cross-task summary, before the contents
        parts.append(f'<div class="top">{_summary_section(matrices, slugs)}</div>')
    if len(matrices) > 1:
        toc = "".join(
            f'<li><a href="#{slug}">{_esc(e.label)}</a> <span class=meta>({len(e.result.languages)} languages'
            f'{", " + str(int(np.sum(e.result.ill_conditioned))) + " ⚠" if np.any(e.result.ill_conditioned) else ""})'
            "</span></li>"
            for e, slug in zip(matrices, slugs)
        )
        if learning_curves:
            toc += '<li><a href="#learning-curve">Choice of N: learning curves</a></li>'
        toc += '<li><a href="#inventory">Run inventory</a></li><li><a href="#config">Configuration</a></li>'
        parts.append(f'<nav class="toc"><b>Contents</b><ol>{toc}</ol></nav>')
    parts.append("<main>")
    if not matrices:
        parts.append("<p class=meta>No matrices to show.</p>")
    for entry, slug in zip(matrices, slugs):
        parts.append(_matrix_section(entry, slug, languages))
    parts.append(_learning_curve_section(learning_curves, languages))
    parts.append(_inventory_section(inventory))
    parts.append(_config_section(config))
    parts.append("</main>")
    parts.append("<footer>Written by cltm-pipeline. Figures are interactive (zoom, hover); the camera icon "
                 "saves a figure as SVG.</footer>")
    parts += ["</body>", "</html>", ""]
    write_text(Path(out_path), "\n".join(parts))
