"""How the report shows languages and numbers: family order and colours, and the formatting of values.

Shared by the figures and the HTML, so that a language has one colour and a number one spelling everywhere.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from cltm_pipeline.data.languages import UNKNOWN_FAMILY

__all__ = ["PALETTE", "FLAG_COLOR", "FONT", "Lang", "slugify", "family_key",
           "display_languages", "fmt", "num", "esc", "pct", "pc"]

# Qualitative palette for families: strong hues first so that neighbouring families (which are adjacent
# in the sorted order) differ, then light and dark variants. Grey is left out: it means "missing".
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#393b79", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
    "#9edae5", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
    "#636363",
)
FLAG_COLOR = "#b45309"  # amber: ill-conditioned rows
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


@dataclass(frozen=True)
class Lang:
    """A language as drawn: its code, name, family and the family's colours."""

    code: str
    name: str
    family: str
    color: str  # the family's colour (strip, legend)
    text_color: str  # the same hue, dark enough to read on white (tick labels)


def slugify(text: str) -> str:
    """An HTML id from free text ("gender · tiny" -> "gender-tiny")."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "matrix"


def family_key(family: str) -> tuple[bool, str]:
    """Sort key of a family: alphabetical, the unknown family last."""
    return (family == UNKNOWN_FAMILY, family.casefold())


def _sheet(languages: pl.DataFrame | None) -> dict[str, tuple[str, str]]:
    """locale -> (name, family) from the languages sheet."""
    if languages is None or languages.height == 0:
        return {}
    out: dict[str, tuple[str, str]] = {}
    for row in languages.select(["locale", "name", "family"]).iter_rows():
        locale, name, family = (str(x).strip() if x is not None else "" for x in row)
        out[locale] = (name or locale, family or UNKNOWN_FAMILY)
    return out


def _family_colors(families: Sequence[str]) -> dict[str, str]:
    """Colour per family, assigned in sorted family order (stable across the matrices of one report)."""
    ordered = sorted(set(families), key=family_key)
    return {fam: PALETTE[k % len(PALETTE)] for k, fam in enumerate(ordered)}


def display_languages(codes: Sequence[str], languages: pl.DataFrame | None) -> list[Lang]:
    """Display order of ``codes``: by family, then name, then code; with colours."""
    sheet = _sheet(languages)
    families = [fam for _, fam in sheet.values()]
    info = {code: sheet.get(code, (code, UNKNOWN_FAMILY)) for code in codes}
    colors = _family_colors([*families, *(fam for _, fam in info.values())])
    ordered = sorted(codes, key=lambda c: (*family_key(info[c][1]), info[c][0].casefold(), c))
    out = []
    for code in ordered:
        name, family = info[code]
        color = colors[family] if family != UNKNOWN_FAMILY else "#888888"
        out.append(Lang(code, name, family, color, _readable(color)))
    return out


# --------------------------------------------------------------------------------------------------
# Small formatting helpers
# --------------------------------------------------------------------------------------------------


def _rgb(color: str) -> tuple[int, int, int]:
    """(r, g, b) of a #rrggbb colour."""
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG relative luminance of an sRGB colour."""

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


def fmt(x: float, fmt: str = ".2f", nan: str = "–") -> str:
    """Format a float; NaN as an en dash, infinities spelled out."""
    x = float(x)
    if math.isnan(x):
        return nan
    if math.isinf(x):
        return "+∞" if x > 0 else "−∞"
    return format(x, fmt).replace("-", "−")


def num(x: float, digits: int = 4) -> float | None:
    """A JSON-friendly, rounded float (None for NaN/inf) so that figures stay small and byte-stable."""
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def esc(x: Any) -> str:
    """HTML-escaped text (quotes too)."""
    return html.escape(str(x), quote=True)


def pct(x: float) -> str:
    """A level as a percentage number (0.95 -> "95")."""
    return f"{x * 100:g}"



def pc(x: float) -> str:
    """A share as a whole percentage ("15 %"), or an en dash when undefined."""
    return f"{fmt(float(x) * 100, '.0f')} %" if math.isfinite(float(x)) else "–"
