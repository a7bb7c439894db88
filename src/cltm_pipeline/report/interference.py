"""The report's interference section: significant negative transfer, who receives and who causes it, and
the sub-network overlap of the single cells' fine-tuning footprints against C (heatmap, Mantel, layers)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cltm_pipeline.analysis.inference import ALPHA
from cltm_pipeline.analysis.matrix import CLTMResult
from cltm_pipeline.analysis.properties import symmetrised
from cltm_pipeline.report.data import MatrixEntry
from cltm_pipeline.report.display import FONT, Lang, esc, fmt, num
from cltm_pipeline.report.figures import figure_div

__all__ = ["interference_cells", "interference_sections", "overlap_figure", "profile_figure"]

_FIG = {"font": {"family": FONT, "size": 12}, "paper_bgcolor": "white", "plot_bgcolor": "white"}


def interference_cells(r: CLTMResult, alpha: float = ALPHA) -> list[tuple[int, int]]:
    """Off-diagonal cells where donor data significantly hurts: a < b with BH q (test of C = 0) below ``alpha``.

    Stated on a − b rather than on the sign of C, so an ill-conditioned row (c − b not positive, where C's
    sign flips) is not misread; in a well-conditioned row it is exactly "C < 0, significant"."""
    if r.q_zero is None:
        return []
    L = len(r.languages)
    out = []
    for i in range(L):
        for j in range(L):
            q, a, b = r.q_zero[i, j], r.mu[i, j], r.baseline[i]
            if i != j and math.isfinite(q) and q < alpha and math.isfinite(a) and math.isfinite(b) and a < b:
                out.append((i, j))
    return out


def _cells_table(r: CLTMResult, cells: Sequence[tuple[int, int]], names: Mapping[str, str]) -> str:
    rows = []
    for i, j in sorted(cells, key=lambda c: (r.C[c], c)):
        t, d = r.languages[i], r.languages[j]
        flag = " ⚠" if r.ill_conditioned[i] else ""
        rows.append(f"<tr><td>{esc(names.get(t, t))}{flag}</td><td>{esc(names.get(d, d))}</td><td class=num>{fmt(r.C[i, j])}"
                    f"</td><td class=num>{fmt(r.mu[i, j] - r.baseline[i], '.3f')}</td><td class=num>{fmt(r.q_zero[i, j], '.3g')}"
                    f"</td><td class=num>{int(r.n_paired[i, j])}</td></tr>")
    return ("<table class=props><thead><tr><th>target (receives)</th><th>donor (causes)</th><th class=num>C</th>"
            "<th class=num>a − b</th><th class=num>q (C = 0)</th><th class=num>seeds</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _tally(r: CLTMResult, cells: Sequence[tuple[int, int]], langs: Sequence[Lang]) -> str:
    """Per language: interference cells it receives (as target) and causes (as donor)."""
    recv = {t: 0 for t in r.languages}
    cause = dict(recv)
    for i, j in cells:
        recv[r.languages[i]] += 1
        cause[r.languages[j]] += 1
    rows = "".join(f"<tr><td>{esc(lang.name)}</td><td class=num>{recv.get(lang.code, 0)}</td>"
                   f"<td class=num>{cause.get(lang.code, 0)}</td></tr>" for lang in langs
                   if recv.get(lang.code) or cause.get(lang.code))
    return ("<table class=props><thead><tr><th>language</th><th class=num>receives (as target)</th>"
            f"<th class=num>causes (as donor)</th></tr></thead><tbody>{rows}</tbody></table>")


def _matrix(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.array([[np.nan if x is None else x for x in row] for row in rows], dtype=float)


def overlap_figure(fp: Mapping[str, Any], langs: Sequence[Lang], C_sym: np.ndarray, slug: str) -> go.Figure:
    """Heatmaps of the mean Jaccard overlap, languages in the CLTM's family order: at the same seed (left;
    the diagonal, a language with itself, is blank) and across seeds (right; the diagonal is a language's own
    footprint at another seed)."""
    pos = {t: k for k, t in enumerate(fp["languages"])}
    perm = [pos[lang.code] for lang in langs if lang.code in pos]
    shown = [lang for lang in langs if lang.code in pos]
    ov, sd, n = _matrix(fp["overlap"]), _matrix(fp["overlap_sd"]), np.array(fp["overlap_n"])
    np.fill_diagonal(ov, np.nan)
    cross = _matrix(fp["overlap_cross_seed"]) if "overlap_cross_seed" in fp else np.full_like(ov, np.nan)
    top = max(0.05, float(np.nanmax([np.nanmax(m) if np.isfinite(m).any() else 0 for m in (ov, cross)])))
    names = [lang.name for lang in shown]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("same seed", "across seeds (each seed with the next)"))
    for col, (m, label) in enumerate(((ov, "same seed"), (cross, "across seeds")), start=1):
        hover = [[f"{esc(shown[x].name)} × {esc(shown[y].name)}<br>Jaccard {fmt(m[a, b], '.3f')} ({label})"
                  + (f" ± {fmt(sd[a, b], '.3f')} sd over {int(n[a, b])} seeds" if col == 1 and a != b else "")
                  + (f"<br>symmetrised C {fmt(C_sym[a, b])}" if a != b else "")
                  for y, b in enumerate(perm)] for x, a in enumerate(perm)]
        fig.add_trace(go.Heatmap(z=[[num(m[a, b]) for b in perm] for a in perm], x=names, y=names, text=hover,
                                 hoverinfo="text", colorscale="Viridis", zmin=0, zmax=top, showscale=col == 2,
                                 colorbar={"title": {"text": "Jaccard"}}), row=1, col=col)
    size = 140 + 40 * len(shown)
    fig.update_layout(**_FIG, width=2 * size + 200, height=size + 60, margin={"l": 110, "r": 20, "t": 50, "b": 110},
                      meta={"cltm_figure": f"{slug}-overlap"})
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=-40)
    return fig


def profile_figure(fp: Mapping[str, Any], slug: str) -> go.Figure:
    """Mean Jaccard overlap per layer (group) over language pairs and seeds, ± sd, with the chance level."""
    prof = fp["profile"]
    x = [p["group"] for p in prof]
    fig = go.Figure(go.Bar(x=x, y=[num(p["jaccard"]) for p in prof], marker_color="#2a5db0",
                           error_y={"type": "data", "array": [num(p["sd"]) if p["sd"] is not None else None for p in prof]},
                           name="other language, same seed",
                           customdata=[[p["params"], p["pairs"], fmt(p.get("relative_update", math.nan), ".3g")] for p in prof],
                           hovertemplate="%{x}: %{y:.3f} (%{customdata[0]} parameters, %{customdata[1]} pair-seeds; "
                                         "moved ||Δθ|| / ||θ₀|| = %{customdata[2]})<extra>same seed</extra>"))
    for key, label, color in (("cross_seed_same_language", "same language, other seed", "#d6604d"),
                              ("cross_seed_other_language", "other language, other seed", "#9e9e9e")):
        if any(key in p for p in prof):
            fig.add_trace(go.Bar(x=x, y=[num(p.get(key, math.nan)) for p in prof], name=label, marker_color=color,
                                 hovertemplate="%{x}: %{y:.3f}<extra>" + label + "</extra>"))
    fig.add_hline(y=fp["chance"], line_dash="dash", line_color="#888",
                  annotation_text=f"chance {fp['chance']:.3f}", annotation_position="top left")
    fig.update_layout(**_FIG, width=min(1000, 260 + 60 * len(x)), height=380, margin={"l": 60, "r": 20, "t": 60, "b": 120},
                      barmode="group", legend={"orientation": "h", "y": 1.18, "x": 0},
                      yaxis={"title": "Jaccard overlap", "gridcolor": "#eee"}, xaxis={"tickangle": -40},
                      meta={"cltm_figure": f"{slug}-overlap-profile"})
    return fig


def _overlap_part(entry: MatrixEntry, fp: Mapping[str, Any] | None, langs: Sequence[Lang], slug: str) -> list[str]:
    out = [f'<h4 id="{slug}-overlap-section">Do languages that transfer share sub-networks?</h4>']
    if not fp:
        return out + ["<p class=meta>No footprint analysis (cltm analyse without --runs-dir).</p>"]
    if not fp.get("available"):
        return out + [f"<p class=meta>No fine-tuning footprints: {esc(fp.get('reason', ''))}. "
                      f"{len(fp.get('cells_missing', []))} single cells missing.</p>"]
    r = entry.result
    pos = {t: k for k, t in enumerate(r.languages)}
    idx = [pos[t] for t in fp["languages"]]  # cltm analyse wrote the footprint in the matrix's languages
    sym = symmetrised(r.C)[np.ix_(idx, idx)]
    m = fp.get("mantel") or {}
    mantel = (f"Mantel r = <b>{fmt(m.get('r', math.nan))}</b>, p = <b>{fmt(m.get('p', math.nan), '.3g')}</b> "
              f"({'exact, ' if m.get('exact') else ''}{m.get('permutations', 0)} permutations; "
              f"{m.get('n_languages', 0)} languages, {m.get('n_pairs', 0)} pairs)") if m else "no Mantel test (no C)"
    out.append(f'<figure><div class="plot">{figure_div(overlap_figure(fp, langs, sym, slug), f"{slug}-overlap")}</div>'
               f"<figcaption>Jaccard overlap of the single cells' fine-tuning footprints (top {fmt(100 * fp['top'], '.3g')} % "
               "of |θ<sub>best</sub> − θ<sub>init</sub>| over the encoder's trainable parameters), per pair of languages at "
               "the same seed (left: same head initialisation; hover: sd over seeds), and across seeds (right: each "
               "seed with the next; the diagonal is a language with itself). Independent random masks would give "
               f"{fmt(fp['chance'], '.3f')}. Same-seed overlap against the symmetrised CLTM: {mantel}; positive r would mean that "
               "languages which transfer more also move the same parameters.</figcaption></figure>")
    xs, mx = fp.get("cross_seed"), fp.get("mantel_cross_seed") or {}
    if xs and xs.get("seed_pairs"):
        out.append(
            f"<p>Seed or language? Pairs at one seed share its head initialisation and data order. At different "
            f"seeds (each seed with the next, {len(xs['seed_pairs'])} seed pairs) a language's footprint overlaps its own "
            f"by <b>{fmt(xs['same_language'], '.3f')}</b> (sd {fmt(xs['same_language_sd'], '.3f')}) and other "
            f"languages' by <b>{fmt(xs['other_language'], '.3f')}</b> (sd {fmt(xs['other_language_sd'], '.3f')}), "
            f"against {fmt(fp['chance'], '.3f')} by chance: the first above the second is what the language itself "
            f"adds. Their overlap against the symmetrised C: Mantel r = {fmt(mx.get('r', math.nan))}, "
            f"p = {fmt(mx.get('p', math.nan), '.3g')}.</p>")
    out.append(f'<figure><div class="plot">{figure_div(profile_figure(fp, slug), f"{slug}-overlap-profile")}</div>'
               "<figcaption>Per-layer overlap: the mean Jaccard within each transformer layer (or module outside "
               "the layers) between languages at the same seed (± sd over pairs and seeds), and, at different "
               "seeds, of a language with itself and with other languages. A layer where the same language "
               "overlaps clearly more than other languages is language-specific; one where they are equal is shared. A group where no language selected anything has no bar. Hover: how far "
               "fine-tuning moved the group (‖Δθ‖ / ‖θ₀‖, mean over single cells).</figcaption></figure>")
    skipped = fp.get("cells_skipped") or {}
    if skipped or fp.get("cells_missing"):
        out.append(f"<p class=meta>Single cells without a footprint: {len(skipped)} skipped "
                   f"({esc('; '.join(sorted(set(skipped.values()))))}), {len(fp.get('cells_missing', []))} not run.</p>")
    return out


def interference_sections(entry: MatrixEntry, langs: Sequence[Lang], slug: str) -> list[str]:
    """Interference cells, their receivers and donors, and the footprint overlap against C."""
    r = entry.result
    names = {lang.code: lang.name for lang in langs}
    out = [f'<h3 id="{slug}-interference-section">Interference</h3>']
    if r.q_zero is None:
        out.append("<p class=meta>No per-cell tests in this matrix: interference cells cannot be named.</p>")
    else:
        cells = interference_cells(r)
        if cells:
            out.append(f"<p>{len(cells)} cell{'s' if len(cells) != 1 else ''} where donor data significantly hurts the "
                       f"target: a (target + donor) below b (target alone), paired test of C = 0 with BH q &lt; {ALPHA:g} "
                       "(the ● cells below 0 on the heatmap). ⚠: ill-conditioned row.</p>")
            out += [_cells_table(r, cells, names), _tally(r, cells, langs)]
        else:
            out.append(f"<p>No cell where donor data significantly hurts the target (paired test of C = 0, BH q &lt; "
                       f"{ALPHA:g}, a &lt; b).</p>")
    analysed = entry.analysed
    return out + _overlap_part(entry, analysed.footprint if analysed is not None else None, langs, slug)
