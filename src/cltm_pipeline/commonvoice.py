"""Reading a local Mozilla Common Voice release: TSV parsing, gender vocabulary, split membership.

A release is ``<root>/<locale>/`` with ``clips/*.mp3``, ``validated.tsv``, ``train.tsv``, ``dev.tsv``,
``test.tsv`` and ``clip_durations.tsv``. Nothing here downloads: releases are gated, so the user
points the config at a directory they already have.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl

from .io import stable_hash

__all__ = [
    "GENDERS",
    "CORE_COLUMNS",
    "CorpusError",
    "normalise_gender",
    "read_tsv",
    "read_tsv_chunks",
    "LocaleScan",
    "scan_locale",
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
    """Map a CV gender label of either generation to female / male / other / unknown."""
    key = (raw or "").strip().lower()
    return _GENDER_MAP.get(key, "other" if key else "unknown")


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
    except pl.exceptions.ComputeError as exc:  # ragged rows, bad UTF-8
        raise CorpusError(f"{path}: cannot parse as a Common Voice TSV: {str(exc).splitlines()[0]}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(df.columns)})")
    # Older releases say `accent` and lack sentence_id; give every release the same columns.
    if "accents" not in df.columns and "accent" in df.columns:
        df = df.rename({"accent": "accents"})
    for col in ("sentence_id", "age", "accents", "locale"):
        if col not in df.columns:
            df = df.with_columns(pl.lit("").alias(col))
    return df.with_columns(pl.col(c).fill_null("") for c in df.columns)


#: Rows per chunk when a TSV is read in pieces (a 1.8 M-row validated.tsv is never held whole).
CHUNK_ROWS = 50_000


def read_tsv_chunks(
    path: Path, required: tuple[str, ...] = CORE_COLUMNS, chunk_rows: int = CHUNK_ROWS
) -> Iterator[tuple[int, pl.DataFrame]]:
    """Read a CV TSV in chunks of ``chunk_rows`` rows, as :func:`read_tsv` would (quoting disabled, all text).

    Yields ``(start, chunk)``, ``start`` the 0-based index of the chunk's first data row. Quoting is disabled,
    so one line is one row and the file can be cut at line ends.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    with open(path, "rb") as fh:
        header = fh.readline()
        start = 0
        while True:
            lines = list(islice(fh, chunk_rows))
            if not lines and start:
                return
            try:
                df = pl.read_csv(
                    io.BytesIO(header + b"".join(lines)), separator="\t", quote_char=None, infer_schema=False,
                    empty_string_is_null=False, encoding="utf8",
                )
            except pl.exceptions.ComputeError as exc:
                raise CorpusError(
                    f"{path}: cannot parse rows {start + 2}-{start + 1 + len(lines)} as a Common Voice TSV: "
                    f"{str(exc).splitlines()[0]}"
                ) from exc
            missing = [c for c in required if c not in df.columns]
            if missing:
                raise CorpusError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(df.columns)})")
            if "accents" not in df.columns and "accent" in df.columns:
                df = df.rename({"accent": "accents"})
            for col in ("sentence_id", "age", "accents", "locale"):
                if col not in df.columns:
                    df = df.with_columns(pl.lit("").alias(col))
            yield start, df.with_columns(pl.col(c).fill_null("") for c in df.columns)
            start += len(lines)
            if not lines:
                return


def read_clip_durations(path: Path, paths: pl.Series | None = None) -> pl.DataFrame:
    """Read ``clip_durations.tsv`` (``clip``, ``duration[ms]``) as clip path -> seconds; with ``paths``, only
    those clips, the file read in chunks."""
    required = ("clip", "duration[ms]")
    if paths is None:
        df = read_tsv(path, required=required).with_row_index("row", offset=2)
    else:
        df = _paths_in(path, paths, required)
    bad = df.filter(pl.col("duration[ms]").str.strip_chars().cast(pl.Int64, strict=False).is_null())
    if bad.height:
        r = bad.row(0, named=True)
        raise CorpusError(f"{path}: row {r['row']}: duration[ms] {r['duration[ms]']!r} is not an integer")
    return df.select(
        pl.col("clip").alias("path"),
        (pl.col("duration[ms]").str.strip_chars().cast(pl.Int64) / 1000.0).alias("cv_duration_s"),
    ).unique("path", keep="first", maintain_order=True)


@dataclass(frozen=True)
class LocaleScan:
    """The whole of one locale's ``validated.tsv`` in a few bytes per row: what choosing clips needs.

    Arrays in file order: ``row`` (file row, header = 1), ``speaker`` (an id per client_id, equal ids for
    equal client_ids), ``gender`` (index into :data:`GENDERS`), ``evaluation`` (listed in CV's test.tsv
    or dev.tsv) and ``cap_hash`` / ``pool_hash`` (keyed hashes of the utterance id, in which order clips are
    kept under the per-speaker cap and sampled into the training pool).
    """

    locale: str
    row: np.ndarray
    speaker: np.ndarray
    gender: np.ndarray
    evaluation: np.ndarray
    cap_hash: np.ndarray
    pool_hash: np.ndarray

    @property
    def rows(self) -> int:
        """Validated rows of the locale."""
        return len(self.row)


def _utt_hash(key: str, paths: pl.Series) -> np.ndarray:
    return (
        paths.str.replace(r"\.[A-Za-z0-9]+$", "")
        .map_elements(lambda u: stable_hash(key, u), return_dtype=pl.UInt64)
        .to_numpy()
    )


def scan_locale(d: Path, locale: str, chunk_rows: int = CHUNK_ROWS) -> LocaleScan:
    """One pass over a locale's ``validated.tsv`` in chunks, keeping :class:`LocaleScan`'s columns only."""
    d = Path(d)
    path = d / "validated.tsv"
    evaluation: set[str] = set()
    for name in ("test", "dev"):
        p = d / f"{name}.tsv"
        if p.is_file():
            evaluation.update(read_tsv(p, required=("path",))["path"].to_list())
    members = pl.Series(sorted(evaluation), dtype=pl.String).implode()
    speakers: dict[str, int] = {}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("row", "speaker", "gender", "evaluation", "cap_hash", "pool_hash")}
    codes = {g: i for i, g in enumerate(GENDERS)}
    for start, df in read_tsv_chunks(path, chunk_rows=chunk_rows):
        empty = df.with_row_index("row", offset=start + 2).filter((pl.col("client_id") == "") | (pl.col("path") == ""))
        if empty.height:
            raise CorpusError(f"{path}: row {empty['row'][0]}: empty client_id or path")
        parts["row"].append(np.arange(start + 2, start + 2 + df.height, dtype=np.uint32))
        parts["speaker"].append(
            np.fromiter((speakers.setdefault(c, len(speakers)) for c in df["client_id"]), dtype=np.uint32, count=df.height)
        )
        parts["gender"].append(
            np.fromiter((codes[normalise_gender(g)] for g in df["gender"]), dtype=np.uint8, count=df.height)
        )
        parts["evaluation"].append(df["path"].is_in(members).to_numpy())
        parts["cap_hash"].append(_utt_hash("cap", df["path"]))
        parts["pool_hash"].append(_utt_hash("pool", df["path"]))
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    return LocaleScan(locale, **cat)


def read_validated(locale_path: Path) -> pl.DataFrame:
    """Read a locale's ``validated.tsv`` with a 1-based file ``row`` number (header = row 1)."""
    path = Path(locale_path) / "validated.tsv"
    df = read_tsv(path).with_row_index("row", offset=2)
    empty = df.filter((pl.col("client_id") == "") | (pl.col("path") == ""))
    if empty.height:
        raise CorpusError(f"{path}: row {empty['row'][0]}: empty client_id or path")
    return df


def _select_rows(path: Path, rows: np.ndarray, required: tuple[str, ...] = CORE_COLUMNS) -> pl.DataFrame:
    """The data rows of a TSV whose file row numbers (header = 1) are in ``rows``, read chunk by chunk."""
    want = np.asarray(rows, dtype=np.int64)
    out = []
    for start, df in read_tsv_chunks(path, required):
        lo, hi = np.searchsorted(want, [start + 2, start + 2 + df.height])
        if hi > lo:
            out.append(df.with_row_index("row", offset=start + 2)[want[lo:hi] - start - 2])
        elif not out and start == 0:
            out.append(df.with_row_index("row", offset=2).head(0))
    return pl.concat(out)


def _paths_in(path: Path, paths: pl.Series, required: tuple[str, ...]) -> pl.DataFrame:
    """Rows (with their file ``row``) of a large TSV whose first required column is one of ``paths``, read
    chunk by chunk."""
    keep = paths.implode()
    return pl.concat(
        [df.with_row_index("row", offset=start + 2).filter(pl.col(required[0]).is_in(keep))
         for start, df in read_tsv_chunks(path, required)]
    )


def read_locale(d: Path, locale: str, rows: np.ndarray | None = None) -> pl.DataFrame:
    """One locale directory's validated utterances with normalised gender, CV split and CV duration.

    Columns: row, utt_id, locale, client_id, path, sentence_id, sentence, age, gender, gender_raw,
    accents, cv_split (train/dev/test/none), cv_duration_s (null without clip_durations.tsv).
    With ``rows`` (sorted file row numbers), only those rows, and the TSVs are read in chunks: memory
    grows with ``rows``, not with the locale.
    """
    d = Path(d)
    df = read_validated(d) if rows is None else _select_rows(d / "validated.tsv", rows)
    split = pl.lit("none")
    for name in reversed(SPLIT_FILES):  # test wins if a clip were listed twice
        p = d / f"{name}.tsv"
        if p.is_file():
            members = (read_tsv(p, required=("path",)) if rows is None else _paths_in(p, df["path"], ("path",)))["path"]
            split = pl.when(pl.col("path").is_in(members.implode())).then(pl.lit(name)).otherwise(split)
    durations = d / "clip_durations.tsv"
    if durations.is_file():
        cv = read_clip_durations(durations, None if rows is None else df["path"])
        df = df.join(cv, on="path", how="left", maintain_order="left")
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
