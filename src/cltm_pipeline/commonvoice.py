"""Reading a local Mozilla Common Voice release: TSV parsing, gender vocabulary, split membership.

A release is ``<root>/<locale>/`` with ``clips/*.mp3``, ``validated.tsv``, ``train.tsv``, ``dev.tsv``,
``test.tsv`` and ``clip_durations.tsv``. Nothing here downloads: releases are gated, so the user
points the config at a directory they already have.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

__all__ = [
    "GENDERS",
    "CORE_COLUMNS",
    "CorpusError",
    "normalise_gender",
    "unmapped_genders",
    "read_tsv",
    "read_validated",
    "read_clip_durations",
    "read_locale",
    "locale_dir",
]

#: The one gender vocabulary every release maps to.
GENDERS = ("female", "male", "other", "unknown")

#: Columns the pipeline needs; the rest of a release's columns are carried but optional.
CORE_COLUMNS = ("client_id", "path", "sentence", "gender")

# Both label generations: CV < 17.0 used male/female/other, 17.0+ uses the self-described set.
_GENDER_MAP = {
    "female": "female",
    "female_feminine": "female",
    "male": "male",
    "male_masculine": "male",
    "other": "other",
    "transgender": "other",
    "non-binary": "other",
    "intersex": "other",
    "do_not_wish_to_say": "unknown",
    "": "unknown",
}

#: CV's own speaker-disjoint split files, in the order membership is assigned.
SPLIT_FILES = ("test", "dev", "train")


class CorpusError(ValueError):
    """Bad or missing corpus input; the message is one line naming the file and what is wrong."""


def normalise_gender(raw: str | None) -> str:
    """Map a CV gender label of either generation to female / male / other / unknown.

    A label of neither generation (``F``, ``woman``, a typo) is ``unknown``, not ``other``: nothing says the
    speaker described themselves outside female/male. :func:`unmapped_genders` counts such labels."""
    return _GENDER_MAP.get((raw or "").strip().lower(), "unknown")


def unmapped_genders(df: pl.DataFrame) -> dict[str, int]:
    """Raw gender labels of a :func:`read_locale` table that neither CV vocabulary knows, with their counts."""
    raw = df["gender_raw"].fill_null("")
    bad = df.filter(~raw.str.strip_chars().str.to_lowercase().is_in(list(_GENDER_MAP)))
    return {str(k): int(n) for k, n in bad.group_by("gender_raw").len().sort("gender_raw").iter_rows()}


def row_width_error(path: Path, width: int, comment_prefix: str | None = None) -> str | None:
    """"row N: K fields, the header has W" for the first row whose field count is not the header's (polars pads
    a short row with empty strings, silently), else None. Rows are file lines, the header being row 1."""
    lines = pl.read_csv(path, separator="\x00", has_header=False, quote_char=None, infer_schema=False,
                        new_columns=["line"], empty_string_is_null=False).with_row_index("row", offset=1)
    if comment_prefix:
        lines = lines.filter(~pl.col("line").str.starts_with(comment_prefix))
    fields = lines["line"].str.count_matches("\t", literal=True) + 1
    bad = (fields != width).arg_true()
    if not len(bad):
        return None
    return f"row {lines['row'][int(bad[0])]}: {fields[int(bad[0])]} fields, the header has {width}"


def _check_width(path: Path, width: int) -> None:
    """Refuse a TSV with a ragged row, naming it."""
    if (where := row_width_error(path, width)) is not None:
        raise CorpusError(f"{path}: cannot parse as a Common Voice TSV: {where}")


def first_bad_row(path: Path) -> str:
    """Where a TSV that polars refused goes wrong: the first row that is not UTF-8 or has the wrong field count."""
    try:
        with open(path, "rb") as fh:
            header = fh.readline()
            if not header.strip():
                return "empty file (no header line)"
            width = header.count(b"\t") + 1
            for row, line in enumerate(fh, start=2):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return f"row {row}: not UTF-8 (byte {line[exc.start]:#04x} at column {exc.start + 1})"
                fields = line.rstrip(b"\r\n").count(b"\t") + 1
                if line.strip() and fields != width:
                    return f"row {row}: {fields} fields, the header has {width}"
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    return ""


def locale_dir(release: Path, locale: str) -> Path:
    """The directory of one locale inside a release, with a clear error if it is absent."""
    d = Path(release) / locale
    if not d.is_dir():
        raise CorpusError(f"{d}: locale {locale!r} not found in Common Voice release {release}")
    return d


def read_tsv(path: Path, required: tuple[str, ...] = CORE_COLUMNS) -> pl.DataFrame:
    """Read a CV TSV with quoting disabled (CV sentences carry unbalanced quotes), all columns as text."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    try:
        df = pl.read_csv(
            path,
            separator="\t",
            quote_char=None,
            infer_schema=False,  # every column as String: ids and votes must round-trip exactly
            empty_string_is_null=False,
            encoding="utf8",
        )
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:  # ragged rows, bad UTF-8, empty file
        where = first_bad_row(path) or str(exc).splitlines()[0]
        raise CorpusError(f"{path}: cannot parse as a Common Voice TSV: {where}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(df.columns)})")
    _check_width(path, len(df.columns))
    # Older releases say `accent` and lack sentence_id; give every release the same columns.
    if "accents" not in df.columns and "accent" in df.columns:
        df = df.rename({"accent": "accents"})
    for col in ("sentence_id", "age", "accents", "locale"):
        if col not in df.columns:
            df = df.with_columns(pl.lit("").alias(col))
    return df.with_columns(pl.col(c).fill_null("") for c in df.columns)


def read_clip_durations(path: Path) -> pl.DataFrame:
    """Read ``clip_durations.tsv`` (``clip``, ``duration[ms]``) as clip path -> seconds."""
    df = read_tsv(path, required=("clip", "duration[ms]"))
    bad = df.with_row_index("row", offset=2).filter(
        pl.col("duration[ms]").str.strip_chars().cast(pl.Int64, strict=False).is_null()
    )
    if bad.height:
        r = bad.row(0, named=True)
        raise CorpusError(f"{path}: row {r['row']}: duration[ms] {r['duration[ms]']!r} is not an integer")
    return df.select(
        pl.col("clip").alias("path"),
        (pl.col("duration[ms]").str.strip_chars().cast(pl.Int64) / 1000.0).alias("cv_duration_s"),
    ).unique("path", keep="first", maintain_order=True)


def read_validated(locale_path: Path) -> pl.DataFrame:
    """Read a locale's ``validated.tsv`` with a 1-based file ``row`` number (header = row 1)."""
    path = Path(locale_path) / "validated.tsv"
    df = read_tsv(path).with_row_index("row", offset=2)
    empty = df.filter((pl.col("client_id") == "") | (pl.col("path") == ""))
    if empty.height:
        raise CorpusError(f"{path}: row {empty['row'][0]}: empty client_id or path")
    # a clip listed twice would enter a test set twice or be drawn twice: refuse, naming both rows
    dup = df.filter(pl.col("path").is_duplicated())
    if dup.height:
        first = dup.filter(pl.col("path") == dup["path"][0])["row"].to_list()
        raise CorpusError(f"{path}: rows {first[0]} and {first[1]}: clip {dup['path'][0]} listed twice "
                          f"({dup.height} rows repeat a path; remove the duplicates)")
    return df


def read_locale(d: Path, locale: str) -> pl.DataFrame:
    """One locale directory's validated utterances with normalised gender, CV split and CV duration.

    Columns: row, utt_id, locale, client_id, path, sentence_id, sentence, age, gender, gender_raw,
    accents, cv_split (train/dev/test/none), cv_duration_s (null without clip_durations.tsv).
    """
    d = Path(d)
    df = read_validated(d)
    split = pl.lit("none")
    for name in reversed(SPLIT_FILES):  # test wins if a clip were listed twice
        p = d / f"{name}.tsv"
        if p.is_file():
            members = read_tsv(p, required=("path",))["path"]
            split = pl.when(pl.col("path").is_in(members.implode())).then(pl.lit(name)).otherwise(split)
    durations = d / "clip_durations.tsv"
    if durations.is_file():
        df = df.join(read_clip_durations(durations), on="path", how="left", maintain_order="left")
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias("cv_duration_s"))
    return df.select(
        "row",
        pl.col("path").str.replace(r"\.[A-Za-z0-9]+$", "").alias("utt_id"),
        pl.lit(locale).alias("locale"),
        "client_id",
        "path",
        "sentence_id",
        "sentence",
        "age",
        pl.col("gender").map_elements(normalise_gender, return_dtype=pl.String).alias("gender"),
        pl.col("gender").alias("gender_raw"),
        "accents",
        split.alias("cv_split"),
        "cv_duration_s",
    )
