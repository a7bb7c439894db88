"""The languages sheet: one row per Common Voice locale with its name, family and ISO 639-3 code."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cltm_pipeline.data.commonvoice import first_bad_row, row_width_error
from cltm_pipeline.errors import ConfigError

__all__ = ["LANGUAGE_COLUMNS", "OPTIONAL_LANGUAGE_COLUMNS", "UNKNOWN_FAMILY", "read_languages"]

LANGUAGE_COLUMNS = ("locale", "name", "family", "iso639_3")
#: The family of a locale the sheet does not list (matrices and the report group it last).
UNKNOWN_FAMILY = "Unknown family"
#: Optional columns of the languages sheet: allowed values, the first being the default for an absent
#: column or an empty cell. ``asr_unit``: the unit of the ASR error P is built on, word (corpus WER) or
#: char (corpus CER, for scripts written without spaces between words).
OPTIONAL_LANGUAGE_COLUMNS: dict[str, tuple[str, ...]] = {"asr_unit": ("word", "char")}


def read_languages(path: Path) -> pl.DataFrame:
    """Read and check the languages sheet (locale, name, family, iso639_3; one row per CV locale)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: languages sheet not found")
    try:
        df = pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False, comment_prefix="#")
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:  # empty, ragged, not UTF-8
        where = first_bad_row(path) if path.stat().st_size else "empty file"
        raise ConfigError(f"{path}: cannot read the languages sheet: {where or str(exc).splitlines()[0]}") from None
    missing = [c for c in LANGUAGE_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
    if (where := row_width_error(path, len(df.columns), comment_prefix="#")) is not None:
        raise ConfigError(f"{path}: cannot read the languages sheet: {where}")
    df = df.with_row_index("row", offset=2)
    for r in df.iter_rows(named=True):
        for c in LANGUAGE_COLUMNS:
            if not (r[c] or "").strip():
                raise ConfigError(f"{path}: row {r['row']} ({r['locale']}): empty {c}")
    for c, allowed in OPTIONAL_LANGUAGE_COLUMNS.items():
        if c not in df.columns:
            df = df.with_columns(pl.lit(allowed[0]).alias(c))
            continue
        df = df.with_columns(pl.col(c).fill_null("").str.strip_chars().replace("", allowed[0]))
        for r in df.iter_rows(named=True):
            if r[c] not in allowed:
                raise ConfigError(f"{path}: row {r['row']} ({r['locale']}): {c} {r[c]!r} is not one of {', '.join(allowed)}")
    dup = df.group_by("locale").len().filter(pl.col("len") > 1)
    if dup.height:
        raise ConfigError(f"{path}: locale {dup['locale'][0]} listed more than once")
    return df.drop("row")
