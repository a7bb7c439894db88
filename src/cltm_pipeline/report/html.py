"""The HTML report: the cross-task summary, then per matrix its heatmaps, self gains, missing cells and
analyses; the learning curves, the run inventory, the config and the package versions, in one offline file.

plotly.js is embedded inline exactly once (the cluster and CI have no network), the style sheet is the
package file ``report/style.css``, and every plot div has a fixed id, so the same inputs give the same bytes.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml
from plotly.offline import get_plotlyjs

from cltm_pipeline.analysis.inference import ALPHA
from cltm_pipeline.analysis.matrix import CLTMResult
from cltm_pipeline.io import write_text
from cltm_pipeline.protocol import cell_kind
from cltm_pipeline.report.completion import CompletedMatrix, completion_section
from cltm_pipeline.report.data import Analysis, LearningCurve, MatrixEntry, Typology, read_learning_curves
from cltm_pipeline.report.display import FONT, Lang, display_languages, esc, fmt, pc, pct
from cltm_pipeline.report.figures import (
    C_CLIP, curve_figure, display_order, figure_div, figures, m_range, map_figure, projection_figure,
    strength_figure, summary_figure,
)
from cltm_pipeline.analysis.typology import DISTANCES
from cltm_pipeline.report.interference import interference_sections

__all__ = ["render_report"]

_MAX_LISTED = 2000  # rows in a "missing" list before it is cut, with a count of the rest


def _lang_cell(lang: Lang, flagged: bool = False) -> str:
    """A table cell naming a language with its family's swatch (⚠ when flagged)."""
    flag = '<span class="flag" title="ill-conditioned row">⚠</span> ' if flagged else ""
    return (f'{flag}<span class="swatch" style="background:{lang.color}"></span>{esc(lang.name)} '
            f'<span class="code">{esc(lang.code)}</span>')


def _self_gain_table(entry: MatrixEntry, langs: Sequence[Lang], perm: Sequence[int]) -> str:
    """Per target: b, c, the self gain with its SE and z, seed counts and the flag."""
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
            f'<td class="fam">{esc(lang.family)}</td>'
            f'<td class="num">{fmt(r.baseline[i], ".4f")}</td><td class="num">{fmt(r.mu[i, i], ".4f")}</td>'
            f'<td class="num">{fmt(gain, "+.4f")} ± {fmt(se, ".4f")}</td><td class="num">{fmt(z, ".1f")}</td>'
            f'<td class="num">{int(r.n_single[i])} / {int(r.n_seeds[i, i])}</td>'
            f'<td>{"<span class=flag>" + esc(flag) + "</span>" if ill else esc(flag)}</td></tr>'
        )
    head = (
        "<tr><th>target <i>i</i></th><th>family</th><th class=num>b (single)</th><th class=num>c (self)</th>"
        "<th class=num>c − b ± SE</th><th class=num>(c − b) / SE</th><th class=num>seeds b / c</th>"
        "<th>flag</th></tr>"
    )
    return f"<table class=\"selfgain\">\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _missing_list(entry: MatrixEntry, langs: Sequence[Lang]) -> str:
    """The cells without runs, collapsed (cut at _MAX_LISTED)."""
    r = entry.result
    if not r.missing:
        return "<p class=meta>No missing cells: every single, self and dual cell has runs.</p>"
    name = {lang.code: lang.name for lang in langs}
    items = []
    for t, d in r.missing[:_MAX_LISTED]:
        kind = cell_kind(t, d)
        cell = f"{t}" if d is None else f"{t}+{d}"
        donor = "–" if d is None else f"{esc(name.get(d, d))} <span class=code>{esc(d)}</span>"
        items.append(f"<tr><td class=code>{esc(cell)}</td><td>{kind}</td>"
                     f"<td>{esc(name.get(t, t))} <span class=code>{esc(t)}</span></td><td>{donor}</td></tr>")
    more = len(r.missing) - _MAX_LISTED
    tail = f"<p class=meta>… and {more} more (see missing.tsv).</p>" if more > 0 else ""
    return (
        f"<details><summary>Missing cells ({len(r.missing)}): NaN in the matrices, never imputed</summary>"
        "<div class=scroll><table><thead><tr><th>cell</th><th>kind</th><th>target</th><th>donor</th></tr></thead>"
        "<tbody>" + "".join(items) + "</tbody></table></div>" + tail + "</details>"
    )


def _cltm_caption(entry: MatrixEntry, values_printed: bool = True) -> str:
    """What the CLTM heatmap shows, its colours and marks, and its ill-conditioned rows."""
    r = entry.result
    n = len(r.languages)
    finite = int(np.isfinite(r.C).sum())
    n_ill = int(np.sum(r.ill_conditioned))
    flag = (
        f'<span class="flag">⚠ {n_ill} row{"s" if n_ill != 1 else ""} ill-conditioned</span> (amber box, ⚠ on '
        f"the label): the target's self gain c − b is not significantly positive (paired t-test over its seeds, "
        f"{pct(r.ci)} % two-sided, or undefined), so the denominator of C is within seed noise: every interval in "
        "that row is unbounded and its C values are unreliable. Such rows are shown, never hidden; see the "
        "self-gain table."
        if n_ill else f"No row is ill-conditioned: every self gain c − b is significantly positive (paired t, "
                      f"{pct(r.ci)} %), so every interval of C is bounded."
    )
    values = "" if values_printed else \
        " Cells are too small for printed values at this size: hover for them."
    return (
        f"<p><b>C[i, j] = (a − b) / (c − b)</b> with P = <b>{esc(entry.metric_name)}</b> (higher is "
        "better): a = P of target <i>i</i> trained on N units of <i>i</i> plus N units of donor <i>j</i>, "
        "b = P on the N units of <i>i</i> alone (single), c = P on 2N units of <i>i</i> (self). "
        "<b>C = 1</b>: the donor's data is worth as much as the same amount of extra target data; "
        "<b>C = 0</b>: no effect; <b>C &lt; 0</b>: interference; C &gt; 1: worth more than in-language "
        f"data. Seeds aggregated by policy <b>{esc(r.policy)}</b>; <b>{finite} / {n * n}</b> cells finite.</p>"
        f"<p>Colours are centred on 0 and saturate at ±{C_CLIP:g}; printed values are not clipped.{values} "
        "Grey “–”: missing runs or undefined C (hover says which). Dashed boxes: language families "
        "(solid: a family split into sub-families); outlined diagonal: self cells, C = 1 by construction. "
        f"Hover a cell for the SE (delta method), the {pct(r.ci)} % Fieller interval of the ratio of paired-seed "
        "means (two rays or the whole line when the self gain is not clearly positive), the seed counts and M.</p>"
        f"{_marks_caption(r)}<p>{flag}</p>"
    )


def _marks_caption(r: CLTMResult) -> str:
    """What the ● and ◆ marks on the CLTM mean, or why there are none."""
    if not np.isfinite(r.p_zero).any():
        return ("<p>No per-cell significance marks: this matrix was written without per-cell p-values "
                "(older cltm matrix output, or fewer than 2 paired seeds per cell).</p>")
    test = ("paired t-tests" if r.test == "t" else "exact sign-flip permutation tests" if r.test == "signflip"
            else f"{esc(r.test)} tests")
    off = ~np.eye(len(r.languages), dtype=bool) & np.isfinite(r.p_zero)
    untestable = int((off & ~r.testable()).sum())
    warn = (f' <span class="flag">{untestable} of {int(off.sum())} cells cannot reach p &lt; {ALPHA:g} with their '
            f"seeds at all (smallest attainable p ≥ {ALPHA:g}): for them no mark means too few seeds, not no "
            "effect.</span>" if untestable else "")
    return (
        f"<p><b>●</b> (top right of a cell): C differs from 0 and <b>◆</b> (top left): C differs from 1, each at "
        f"a Benjamini–Hochberg false-discovery rate of {ALPHA:g} over the off-diagonal cells of this matrix, from "
        f"two-sided {test} on the paired seed differences a − b (C = 0) and a − c (C = 1); a cell is marked "
        f"exactly when its {pct(r.ci)} % interval excludes the value, before the BH adjustment (hover for p and q). "
        f"No mark: the seeds cannot tell the cell from that value.{warn}</p>"
    )


def _m_caption(entry: MatrixEntry) -> str:
    """What the M heatmap shows and its colour range."""
    r = entry.result
    n = len(r.languages)
    finite = int(np.isfinite(r.M).sum())
    return (
        f"<p><b>M[i, j] = (a − b) / b</b> in %, the raw relative gain of target <i>i</i> when donor <i>j</i>'s "
        "N units are added to its own N, over the single baseline b; on the diagonal, the relative self gain "
        "(c − b) / b. Unlike C it is not normalised by what more target data would give, so rows with a "
        f"high baseline have small M. P = <b>{esc(entry.metric_name)}</b>, aggregation "
        f"<b>{esc(r.policy)}</b>, <b>{finite} / {n * n}</b> cells finite. Colour range symmetric around 0 "
        f"(±{fmt(m_range(r.M) * 100, 'g')} %, the 98th percentile of |M|); grey “–”: missing or undefined.</p>"
    )


def _facts(entry: MatrixEntry) -> str:
    """One line of facts about a matrix: task, architecture, P, policy, sizes and flags."""
    r = entry.result
    n = len(r.languages)
    seeds = sorted({int(x) for x in np.asarray(r.n_seeds).ravel() if x > 0} | {int(x) for x in r.n_single if x > 0})
    seed_text = "–" if not seeds else (str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}")
    n_ill = int(np.sum(r.ill_conditioned))
    return (
        f"<p class=facts>task <b>{esc(entry.task)}</b> · architecture <b>{esc(entry.arch)}</b> · "
        f"P = <b>{esc(entry.metric_name)}</b> · policy <b>{esc(r.policy)}</b> · "
        f"<b>{n}</b> languages · seeds per cell <b>{seed_text}</b> · "
        f"finite C cells <b>{int(np.isfinite(r.C).sum())} / {n * n}</b> · missing cells "
        f"<b>{len(r.missing)}</b> · ill-conditioned rows "
        f"<b{' class=flag' if n_ill else ''}>{n_ill}</b></p>"
    )


def _matrix_section(entry: MatrixEntry, slug: str, languages: pl.DataFrame | None) -> str:
    """One matrix: facts, both heatmaps with captions, self gains, missing cells, analyses."""
    langs, perm = display_order(entry, languages)
    figs = figures(entry, languages)
    return "\n".join([
        f'<section id="{slug}">',
        f"<h2>{esc(entry.label)}</h2>",
        _facts(entry),
        f'<figure><div class="bleed"><div class="plot">{figure_div(figs["cltm"], f"{slug}-cltm")}</div></div>',
        f"<figcaption>{_cltm_caption(entry, figs['cltm'].layout.meta['values_printed'])}</figcaption></figure>",
        f'<figure><div class="bleed"><div class="plot">{figure_div(figs["m"], f"{slug}-m")}</div></div>',
        f"<figcaption>{_m_caption(entry)}</figcaption></figure>",
        f'<h3 id="{slug}-self-gain">Self gain</h3>',
        "<p>The denominator of every C in a row: b is P of the single cell (N units of the target), c of the "
        "self cell (2N units), both on the seeds they share; SE = sd(c<sub>s</sub> − b<sub>s</sub>) / √n over "
        "those paired seeds. A row is flagged unless the self gain is significantly positive (paired t-test, "
        f"{pct(entry.result.ci)} % two-sided): exactly the rows whose Fieller intervals are bounded.</p>",
        _self_gain_table(entry, langs, perm),
        _missing_list(entry, langs),
        _analysis_sections(entry, langs, slug),
        "</section>",
    ])


def _summary_numbers(a: Analysis | None) -> dict[str, Any]:
    """The numbers of one summary row; all undefined ("–") when the matrix has no analysis."""
    nan = math.nan
    if a is None:
        return {"mean": nan, "lo": nan, "hi": nan, "pos": nan, "neg": nan, "above": nan, "fam": nan, "uni": nan,
                "asym": nan, "counts": ("–", "–", "–"), "stress": nan, "best": None, "probe": nan, "chance": nan}
    p, mean = a.properties, a.properties.mean_offdiag_C
    self_probe = a.probes.by_kind.get("self")  # no run of a self cell carries a probe: none
    return {
        "mean": mean.mean, "lo": mean.ci_low, "hi": mean.ci_high, "pos": p.shares.positive,
        "neg": p.shares.negative, "above": p.shares.above_one, "fam": p.intra_family_share.value,
        "uni": p.intra_family_share.uniform, "asym": p.asymmetry.value,
        "counts": (a.significance.above_zero, a.significance.below_zero, a.significance.tested),
        "stress": a.map.stress, "best": a.best_mantel(),
        "probe": self_probe.accuracy if self_probe else nan, "chance": self_probe.chance if self_probe else nan,
    }


def _summary_row(e: MatrixEntry, slug: str) -> str:
    """One task and architecture in the cross-task table."""
    r = e.result
    v = _summary_numbers(e.analysed)
    best, probe, chance = v["best"], v["probe"], v["chance"]
    n_ill = int(np.sum(r.ill_conditioned))
    ci = f"[{fmt(v['lo'])}, {fmt(v['hi'])}]" if math.isfinite(v["lo"]) else ""
    return (
        f'<tr><td><a href="#{slug}">{esc(e.task)}</a></td><td>{esc(e.arch)}</td>'
        f"<td>{esc(e.metric_name)}</td><td class=num>{len(r.languages)}</td>"
        f"<td class=num><b>{fmt(v['mean'])}</b> <span class=meta>{ci}</span>"
        + (f' <span class=flag title="{n_ill} of {len(r.languages)} rows ill-conditioned: their C are '
           'unreliable">⚠</span>' if n_ill else "") + "</td>"
        f"<td class=num>{fmt(v['pos'] * 100, '.0f')} / {fmt(v['neg'] * 100, '.0f')} / "
        f"{fmt(v['above'] * 100, '.0f')}</td>"
        f"<td class=num>{pc(v['fam'])} <span class=meta>(uniform "
        f"{pc(v['uni'])})</span></td>"
        f"<td class=num>{fmt(v['asym'])}</td>"
        f"<td class=num>{v['counts'][0]} / {v['counts'][1]} / {v['counts'][2]}</td>"
        f"<td class=num>{fmt(v['stress'])}</td>"
        + (f"<td>{esc(best[0])}<br>r = {fmt(best[1])}, Holm p = {fmt(best[2], '.2g')}</td>" if best else "<td>–</td>")
        + f"<td class=num>{fmt(probe * 100, '.0f')}{'' if not math.isfinite(probe) else ' %'}"
        + ("" if not math.isfinite(chance) else f"<br><span class=meta>chance {pc(chance)}</span>") + "</td>"
        f"<td class=num>{'<span class=flag>' + str(n_ill) + '</span>' if n_ill else 0}</td></tr>"
    )


def _summary_section(matrices: Sequence[MatrixEntry], slugs: Sequence[str]) -> str:
    """The cross-task "language dependence" table: one row per task and architecture, first on the page."""
    rows = [_summary_row(e, slug) for e, slug in zip(matrices, slugs)]
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
    if not any(e.analysed for e in matrices):
        note += "<p class=meta>No analysis.json was given: run <code>cltm analyse</code> (rule analyse).</p>"
    fig = summary_figure(matrices)
    plot = (f'<figure><div class="plot">{figure_div(fig, "summary-plot")}</div><figcaption>Mean off-diagonal C '
            "per task and architecture with its paired-seed t interval (bars cut at the frame); amber ⚠: the "
            "matrix has ill-conditioned rows.</figcaption></figure>" if fig is not None else "")
    return (f'<section id="summary"><h2>Language dependence across tasks</h2><div class=scroll-x><table '
            f'class="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>{note}{plot}</section>')


def _plain_table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "",
                 num: Sequence[int] | None = None) -> str:
    """An HTML table of already-escaped cells; columns in ``num`` (default: all but the first) right-aligned."""
    num = set(range(1, len(head)) if num is None else num)
    h = "".join(f"<th{' class=num' if k in num else ''}>{x}</th>" for k, x in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{' class=num' if k in num else ''}>{x}</td>" for k, x in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _analysis_sections(entry: MatrixEntry, langs: Sequence[Lang], slug: str) -> str:
    """Properties, map and clusters, typology, probes and training time of one matrix."""
    a = entry.analysed
    if a is None:
        return "<p class=meta>No analysis for this matrix (cltm analyse was not run).</p>"
    return "\n".join([
        *_properties_section(a, langs, slug), *_map_section(a, langs, slug), *_typology_section(a, slug),
        *interference_sections(entry, langs, slug),
        *_probes_section(a, langs, slug), *_training_time_section(a, langs, slug),
    ])


def _properties_section(a: Analysis, langs: Sequence[Lang], slug: str) -> list[str]:
    """Whole-matrix statistics and the donor and receiver strengths."""
    p, sig = a.properties, a.significance
    mean, sh = p.mean_offdiag_C, p.shares
    fam, top = p.intra_family_share, p.intra_top_family_share
    out = [f'<h3 id="{slug}-properties-section">Matrix properties</h3>']
    rows = [
        ["mean off-diagonal C", f"{fmt(mean.mean)} [{fmt(mean.ci_low)}, {fmt(mean.ci_high)}]",
         f"{mean.n} cells of {mean.rows_used} well-conditioned rows "
         f"({mean.cells_left_out} cells of {mean.rows_ill} ill-conditioned rows left out); "
         f"{pct(mean.ci)} % paired-seed t interval over {mean.n_seeds} seeds (delta method); "
         f"median {fmt(mean.median)}"],
        ["share of cells C &gt; 0 / C &lt; 0 / C &gt; 1",
         f"{pc(sh.positive)} / {pc(sh.negative)} / "
         f"{pc(sh.above_one)}", f"{sh.n} finite off-diagonal cells"],
        ["intra-family share of positive mass", f"{pc(fam.value)}",
         f"families as in the languages sheet; {pc(fam.uniform)} if mass were spread "
         f"evenly over cells; top-level families: {pc(top.value)} "
         f"(uniform {pc(top.uniform)})"],
        ["asymmetry ‖C − Cᵀ‖<sub>F</sub> / ‖C‖<sub>F</sub>", fmt(p.asymmetry.value),
         f"over {p.asymmetry.n} cells whose mirror is finite; 0 = symmetric"],
        [f"cells different from 0 (BH q &lt; {ALPHA:g})",
         f"{sig.above_zero} above, {sig.below_zero} below",
         f"of {sig.tested} tested; different from 1: {sig.above_one} above, "
         f"{sig.below_one} below (● and ◆ on the heatmap)"],
    ]
    out.append(_plain_table(["statistic", "value", "computed on"], rows, "props", num=[1]))
    fig = strength_figure(a, langs, slug)
    out.append(f'<figure><div class="plot">{figure_div(fig, f"{slug}-strength")}</div><figcaption>Donor strength '
               "of j: the sum over targets of its positive off-diagonal C[i, j] (how much it gives); receiver "
               "strength of i: the sum over donors of positive C[i, j] (how much it takes). Negative cells are "
               "not subtracted; hover for the number of finite cells behind each bar.</figcaption></figure>")
    return out


def _map_section(a: Analysis, langs: Sequence[Lang], slug: str) -> list[str]:
    """The MDS map of transfer profiles, with its clusters."""
    m = a.map
    out = [f'<h3 id="{slug}-map-section">Map of transfer profiles</h3>']
    fig = map_figure(a, langs, slug)
    if fig is None:
        out.append("<p class=meta>Fewer than three languages with comparable profiles: no map.</p>")
        return out
    dropped = sorted(set(a.languages) - set(m.languages))
    out.append(
        f'<figure><div class="plot">{figure_div(fig, f"{slug}-map")}</div><figcaption>Each language is placed '
        "by classical MDS of the distances between transfer profiles: the RMS difference of two languages' "
        "rows (what they receive) and columns (what they give) over every third language, their own cells "
        "left out; an ill-conditioned row (⚠) is left out of the profiles, so such a language is placed by "
        f"its column alone. Kruskal stress-1 <b>{fmt(m.stress)}</b> (0 = the 2-D map keeps every "
        "distance; above ~0.2 read it loosely). Symbols: average-linkage clusters on the same distances, "
        f"k = {m.k} chosen by silhouette ({fmt(m.silhouette)}). "
        + (f"Left out for undefined distances: {esc(', '.join(dropped))}." if dropped else "")
        + "</figcaption></figure>")
    return out


def _typology_section(a: Analysis, slug: str) -> list[str]:
    """Mantel tests of C against each URIEL+ distance."""
    out = [f'<h3 id="{slug}-typology-section">Typology: Mantel tests against URIEL+</h3>']
    if not a.mantel:
        out.append("<p class=meta>No typological distances (cltm analyse was run without --typology).</p>")
        return out
    typ = a.typology or Typology(None, [], [])  # analyse() called without a typology table
    mrows = []
    order = {k: n for n, k in enumerate(DISTANCES)}
    for kind, v in sorted(a.mantel.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
        left = [t for t in a.languages if t not in v.used]
        mrows.append([esc(kind), fmt(v.r), fmt(v.p, ".3g"), fmt(v.p_holm, ".3g"), f"{v.n_languages} / {v.n_pairs}",
                      ("exact, " if v.exact else "") + f"{v.permutations} permutations", esc(", ".join(left)) or "–"])
    out.append(_plain_table(["URIEL+ distance", "r", "p", "p (Holm)", "languages / pairs", "test",
                             "left out (no data)"], mrows, "mantel", num=[1, 2, 3, 4]))
    unknown, no_iso = typ.unknown_iso, typ.locales_without_iso
    out.append(
        "<p class=meta>Pearson r between the symmetrised CLTM, (C[i, j] + C[j, i]) / 2, and the URIEL+ "
        "distance over language pairs; p from permuting languages (two-sided; every permutation when there "
        "are few languages); p (Holm): adjusted for testing every distance against the same C, so the smallest "
        "adjusted p keeps “any typology link” at its nominal level. Negative r: closer languages transfer more. "
        "Distances from "
        f"{esc(typ.source or 'URIEL+')} on the languages sheet's ISO 639-3 codes; pairs without "
        "shared URIEL+ features are left out, never imputed."
        + (f" Codes URIEL+ does not know: {esc(', '.join(unknown))}." if unknown else "")
        + (f" Locales without an ISO 639-3 code: {esc(', '.join(no_iso))}." if no_iso else "") + "</p>")
    return out


def _probes_section(a: Analysis, langs: Sequence[Lang], slug: str) -> list[str]:
    """Language-ID probe accuracy by cell kind, and the probe-set projections."""
    pr = a.probes
    out = [f'<h3 id="{slug}-probes-section">Latent probes</h3>']
    if not pr.by_kind:
        out.append(f"<p class=meta>No run of this matrix carries a language-ID probe ({pr.runs} runs read; "
                   "set hparams.probe_clips &gt; 0 to probe).</p>")
        return out
    prow = [[k, f"{fmt(v.accuracy * 100, '.1f')} %", fmt(v.sd * 100, '.1f'),
             f"{fmt(v.chance * 100, '.1f')} %", str(v.n_runs)] for k, v in pr.by_kind.items()]
    out.append(_plain_table(["cell kind", "probe accuracy", "sd (pts)", "chance", "runs"], prow))
    out.append("<p class=meta>How separable the languages stay after fine-tuning: speaker-grouped "
               "cross-validated logistic regression of language identity on pooled final-layer embeddings of a "
               "held-out multilingual probe set, averaged over runs. "
               f"{pr.runs_without_probe} of {pr.runs} runs carry no probe.</p>")
    fig = projection_figure(a, langs, slug)
    if fig is not None:
        out.append(f'<figure><div class="plot">{figure_div(fig, f"{slug}-probe")}</div><figcaption>2-D PCA of '
                   "the probe-set embeddings of each target's self model (lowest seed), coloured by the clip's "
                   "language.</figcaption></figure>")
    return out


def _training_time_section(a: Analysis, langs: Sequence[Lang], slug: str) -> list[str]:
    """How much sooner self and dual runs reach the single run's best dev score."""
    tt = a.training_time
    out = [f'<h3 id="{slug}-training-time-section">Training-time transfer</h3>']
    if not tt.runs:
        out.append("<p class=meta>No dev curves in the runs' metrics.json.</p>")
        return out
    krow = [[k, fmt(v.mean_ratio), f"{v.reached} / {v.cells}"] for k, v in tt.by_kind.items()]
    name = {lang.code: lang.name for lang in langs}
    drow = [[f"{esc(name.get(d, d))} <span class=code>{esc(d)}</span>", fmt(v.mean_ratio),
             str(v.n), str(v.never)] for d, v in tt.by_donor.items()]
    out.append(
        "<p>For every self and dual run: the first step at which its dev score reaches the best dev score of "
        "the single run of the same target and seed, divided by the step at which the single run itself "
        "first got there. Below 1: the added data gets the model there sooner. Steps count batches, and a "
        "cell with 2N units runs twice the batches per epoch, so read the ratios against each other (dual "
        "against self) rather than against 1.</p>")
    out.append('<div class="cols">' + _plain_table(["cell kind", "mean steps ratio", "reached / runs"], krow)
               + _plain_table(["donor", "mean steps ratio", "runs", "never reached"], drow) + "</div>")
    return out


def _learning_curve_section(curves: Sequence[LearningCurve], languages: pl.DataFrame | None) -> str:
    """Choice of N: the learning curves and the per-N self gains behind the recommendation."""
    if not curves:
        return ""
    out = ['<section id="learning-curve">', "<h2>Choice of N: learning curves</h2>"]
    for k, lc in enumerate(curves):
        rec = lc.rec
        langs = display_languages(sorted(set(lc.curve["target"].to_list())), languages)
        fig = curve_figure(lc, langs, f"learning-curve-{k}")
        rec_n = rec.recommended_n
        out.append(f'<figure><div class="plot">{figure_div(fig, f"learning-curve-{k}")}</div><figcaption>'
                   f"Single (N units) and self (2N units) cells of {esc(', '.join(rec.languages))}, "
                   f"seeds {esc(', '.join(map(str, rec.seeds)))}; points are mean ± sd over seeds, dotted "
                   "lines the fit P = α + β·log₂(units). <b>Rule</b>: " + esc(rec.rule) + ". "
                   + (f"<b>Recommended N = {rec_n:g}</b> (dashed line)." if rec_n is not None else
                      "<span class=flag>No N on the ladder passes: doubling never clearly helps every target; "
                      "use more seeds, other N or a harder task regime.</span>") + "</figcaption></figure>")
        rows = []
        for step in rec.steps:
            for t, v in step.targets.items():
                rows.append([f"{step.n:g}", esc(t), fmt(v.b, ".3f"), fmt(v.c, ".3f"),
                             f"{fmt(v.gain, '+.3f')} ± {fmt(v.se, '.3f')}",
                             "yes" if v.clear else "<span class=flag>no</span>",
                             "<b>all</b>" if step.all_clear else ""])
        out.append(_plain_table(["N", "target", "b (N)", "c (2N)", "c − b ± SE", "clearly positive", ""], rows))
    out.append("</section>")
    return "\n".join(out)


def _inventory_section(inventory: pl.DataFrame | None) -> str:
    """Runs done, missing and failed per task and architecture, and the runs not done by cell."""
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
    out.append("<p>Every expected run (task, architecture, target, donor, seed) and whether its metrics file "
               "exists and reads back (a truncated or damaged file counts as missing). A missing or failed run "
               "leaves its cell's seed count short or the cell NaN; a plain <code>snakemake</code> rerun "
               "trains exactly those (README, Guarantees and recovery).</p>")
    out.append(_status_table(inv))
    out.append(_runs_not_done(inv.filter(pl.col("status") != "done")))
    out.append("</section>")
    return "\n".join(out)


def _status_table(inv: pl.DataFrame) -> str:
    """Runs per status (done, missing, failed, then any other) for each task and architecture."""
    statuses = ["done", "missing", "failed"]
    statuses += sorted(set(inv["status"].to_list()) - set(statuses))
    counts = inv.group_by(["task", "arch", "status"]).len().sort(["task", "arch", "status"])
    table: dict[tuple[str, str], dict[str, int]] = {}
    for task, arch, status, n in counts.iter_rows():
        table.setdefault((task, arch), {})[status] = n
    head = "<tr><th>task</th><th>arch</th>" + "".join(f"<th class=num>{esc(s)}</th>" for s in statuses) + \
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
        body.append(f"<tr><td>{esc(task)}</td><td>{esc(arch)}</td>{cells}<td class=num>{total}</td>"
                    f"<td class=num>{100 * done / total:.1f}</td></tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _runs_not_done(bad: pl.DataFrame) -> str:
    """The runs not done, one row per cell with their seeds (cut at _MAX_LISTED cells)."""
    if bad.height == 0:
        return "<p class=meta>All runs are done.</p>"
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
        rows.append(f"<tr><td>{esc(task)}</td><td>{esc(arch)}</td><td class=code>{esc(target)}</td>"
                    f"<td class=code>{esc(donor)}</td><td>{kind}</td><td><span class=flag>{esc(status)}"
                    f"</span></td><td class=num>{esc(seed_text)}</td></tr>")
    more = grouped.height - _MAX_LISTED
    tail = f"<p class=meta>… and {more} more cells.</p>" if more > 0 else ""
    return (
        f"<details><summary>Runs not done: {bad.height} run{'s' if bad.height != 1 else ''} in "
        f"{grouped.height} cell{'s' if grouped.height != 1 else ''}</summary><div class=scroll><table><thead>"
        "<tr><th>task</th><th>arch</th><th>target</th><th>donor</th><th>kind</th><th>status</th>"
        "<th class=num>seeds</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
        + tail + "</details>"
    )


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
    """(package, version) of Python and the packages the results depend on."""
    out = [("python", platform.python_version())]
    for dist in ("cltm-pipeline", "numpy", "polars", "plotly", "pyyaml", "snakemake", "torch"):
        try:
            out.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            out.append((dist, "not installed"))
    return out


def _config_section(config: Mapping | None) -> str:
    """The validated config as YAML, and the package versions."""
    dump = yaml.safe_dump(_plain(config or {}), sort_keys=False, allow_unicode=True, default_flow_style=None,
                          width=100)
    versions = "".join(f"<tr><td>{esc(k)}</td><td class=code>{esc(v)}</td></tr>" for k, v in _versions())
    return "\n".join([
        '<section id="config">', "<h2>Configuration and versions</h2>",
        "<details open><summary>Config (YAML, as validated)</summary>", f"<pre>{esc(dump)}</pre></details>",
        f"<table><thead><tr><th>package</th><th>version</th></tr></thead><tbody>{versions}</tbody></table>",
        "</section>",
    ])


_LEDE = (
    "Each matrix measures <b>cross-lingual transfer</b>: how much training data from a donor language "
    "<i>j</i> helps a target language <i>i</i>, relative to the same amount of extra data in <i>i</i> "
    "itself. Every cell is scored on the target's own test set, averaged over seeds. In the "
    "Cross-Lingual Transfer Matrix, <b>C = 1</b> means the donor's data is worth as much as target "
    "data, <b>0</b> no effect, <b>below 0</b> interference. Rows are targets, columns donors, languages "
    "grouped by family. Hover any cell for its uncertainty (delta-method SE and Fieller interval); "
    "rows whose own self gain is too small to divide by are flagged ⚠, never hidden."
)


def _css() -> str:
    """The page's style sheet (report/style.css, shipped as package data) with the font stack filled in."""
    css = resources.files(__package__).joinpath("style.css").read_text(encoding="utf-8")
    return "\n" + css.replace("__FONT__", FONT)


def _section_ids(matrices: Sequence[MatrixEntry]) -> list[str]:
    """One unique HTML id per matrix, never one of the page's fixed section ids."""
    slugs: list[str] = []
    for entry in matrices:
        slug, k = entry.slug, 2
        while slug in slugs or slug in ("inventory", "config", "summary", "learning-curve"):
            slug, k = f"{entry.slug}-{k}", k + 1
        slugs.append(slug)
    return slugs


def _page_head(title: str, n_matrices: int, generated: str | None) -> list[str]:
    """Doctype, head (style, plotly.js inline once) and the page header."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>", f"<style>{_css()}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head>", "<body>",
        "<header>", f"<h1>{esc(title)}</h1>", f'<p class="lede">{_LEDE}</p>',
    ]
    meta = [f"{n_matrices} matri{'ces' if n_matrices != 1 else 'x'}"]
    if generated:
        meta.append(f"generated {esc(generated)}")
    parts.append(f'<p class="meta">{" · ".join(meta)}</p>')
    parts.append("</header>")
    return parts


def _contents(matrices: Sequence[MatrixEntry], slugs: Sequence[str], curves: bool) -> str:
    """The table of contents (shown when the report has more than one matrix)."""
    toc = "".join(
        f'<li><a href="#{slug}">{esc(e.label)}</a> <span class=meta>({len(e.result.languages)} languages'
        f'{", " + str(int(np.sum(e.result.ill_conditioned))) + " ⚠" if np.any(e.result.ill_conditioned) else ""})'
        "</span></li>"
        for e, slug in zip(matrices, slugs)
    )
    if curves:
        toc += '<li><a href="#learning-curve">Choice of N: learning curves</a></li>'
    toc += '<li><a href="#inventory">Run inventory</a></li><li><a href="#config">Configuration</a></li>'
    return f'<nav class="toc"><b>Contents</b><ol>{toc}</ol></nav>'


def render_report(
    matrices: Sequence[MatrixEntry],
    languages: pl.DataFrame | None,
    inventory: pl.DataFrame | None,
    config: Mapping | None,
    out_path: Path,
    title: str = "Cross-Lingual Transfer Matrices",
    *,
    generated: str | None = None,
    learning_curves: Sequence[Mapping[str, Any] | LearningCurve] = (),
    completions: Sequence[CompletedMatrix] = (),
) -> None:
    """Write the report as ONE self-contained HTML file (plotly.js inline once), byte-stable for equal inputs.

    ``generated`` is an optional timestamp (or any text) printed under the title; nothing else depends on
    the clock. The cross-task summary comes first (it needs each entry's ``analysis``); ``learning_curves``
    are ``{"curve": curve.tsv as a DataFrame, "rec": recommendation.json}`` (cltm learning-curve);
    ``completions`` the completed matrices (``report.completion.read_completion`` of cltm complete outputs).
    """
    curves = read_learning_curves(learning_curves)  # a missing key fails here, before anything is rendered
    slugs = _section_ids(matrices)
    parts = _page_head(title, len(matrices), generated)
    if matrices:  # first screen: the cross-task summary, before the contents
        parts.append(f'<div class="top">{_summary_section(matrices, slugs)}</div>')
    if len(matrices) > 1:
        parts.append(_contents(matrices, slugs, bool(curves)))
    parts.append("<main>")
    if not matrices:
        parts.append("<p class=meta>No matrices to show.</p>")
    for entry, slug in zip(matrices, slugs):
        parts.append(_matrix_section(entry, slug, languages))
    parts.append(_learning_curve_section(curves, languages))
    if completions:  # cltm complete outputs (issue 17)
        parts.append(completion_section(completions, languages))
    parts.append(_inventory_section(inventory))
    parts.append(_config_section(config))
    parts.append("</main>")
    parts.append("<footer>Written by cltm-pipeline. Figures are interactive (zoom, hover); the camera icon "
                 "saves a figure as SVG.</footer>")
    parts += ["</body>", "</html>", ""]
    write_text(Path(out_path), "\n".join(parts))
