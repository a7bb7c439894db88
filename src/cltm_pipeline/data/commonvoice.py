"""Reading a local Mozilla Common Voice release: TSV parsing, gender vocabulary, split membership.

A release is ``<root>/<locale>/`` with ``clips/*.mp3``, ``validated.tsv``, ``train.tsv``, ``dev.tsv``,
``test.tsv`` and ``clip_durations.tsv``. Nothing here downloads: releases are gated, so the user
points the config at a directory they already have.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import polars as pl

from cltm_pipeline.errors import CorpusError
from cltm_pipeline.io import stable_hash

__all__ = [
    "GENDERS",
    "CORE_COLUMNS",
    "CorpusError",
    "normalise_gender",
    "read_tsv",
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

_EXTENSION = re.compile(r"\.[A-Za-z0-9]+$")
_EXTENSION_BYTES = re.compile(rb"\.[A-Za-z0-9]+$")

#: CV's own speaker-disjoint split files, in the order membership is assigned.
SPLIT_FILES = ("test", "dev", "train")



def normalise_gender(raw: str | None) -> str:
    """Map a CV gender label of either generation to female / male / other / unknown.

    A label of neither generation (``F``, ``woman``, a typo) is ``unknown``, not ``other``: nothing says the
    speaker described themselves outside female/male. :func:`scan_locale` counts such labels."""
    return _GENDER_MAP.get((raw or "").strip().lower(), "unknown")


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


def _parse(source: Path | io.BytesIO, path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    """Parse CV TSV text (quoting disabled, every column as text) and give every release the same columns."""
    try:
        df = pl.read_csv(
            source,
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
    if isinstance(source, Path):  # streamed reads check every line's width as they go (scan_locale)
        _check_width(path, len(df.columns))
    # Older releases say `accent` and lack sentence_id; give every release the same columns.
    if "accents" not in df.columns and "accent" in df.columns:
        df = df.rename({"accent": "accents"})
    for col in ("sentence_id", "age", "accents", "locale"):
        if col not in df.columns:
            df = df.with_columns(pl.lit("").alias(col))
    return df.with_columns(pl.col(c).fill_null("") for c in df.columns)


def read_tsv(path: Path, required: tuple[str, ...] = CORE_COLUMNS) -> pl.DataFrame:
    """Read a CV TSV with quoting disabled (CV sentences carry unbalanced quotes), all columns as text."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    return _parse(path, path, required)


#: Rows per block of :class:`LocaleScan` arrays built while streaming a TSV.
CHUNK_ROWS = 10_000


def _header(path: Path, required: tuple[str, ...]) -> tuple[bytes, list[str]]:
    """A TSV's header line and column names, checked for ``required``."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    with open(path, "rb") as fh:
        header = fh.readline().rstrip(b"\r\n")
    if not header.strip():
        raise CorpusError(f"{path}: cannot parse as a Common Voice TSV: empty file (no header line)")
    try:
        cols = header.decode("utf-8").split("\t")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: row 1: header is not UTF-8 ({exc.reason})") from None
    missing = [c for c in required if c not in cols]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(cols)})")
    return header, cols


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(file row, line without its line end) of every non-empty data line; the header is row 1. Quoting is
    disabled, so a line is a row: a TSV is streamed in constant memory."""
    with open(path, "rb") as fh:
        fh.readline()
        for row, line in enumerate(fh, start=2):
            line = line.rstrip(b"\r\n")
            if line:
                yield row, line


def _read_rows(path: Path, required: tuple[str, ...], keep: Callable[[int, bytes], bool]) -> pl.DataFrame:
    """The rows of a TSV for which ``keep(row, line)`` holds, with their file ``row``, parsed as :func:`read_tsv`
    would; the file is streamed and only the kept lines are parsed, so memory grows with them, not the file."""
    header, _ = _header(path, required)
    rows, lines = [], []
    for row, line in _lines(path):
        if keep(row, line):
            rows.append(row)
            lines.append(line)
    df = _parse(io.BytesIO(b"\n".join([header, *lines, b""])), path, required)
    return df.select(pl.Series("row", rows, dtype=pl.UInt32), *df.columns)


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
    #: raw gender labels of neither CV vocabulary, with their counts (taken as unknown)
    unmapped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Validated rows of the locale."""
        return len(self.row)


def scan_locale(d: Path, locale: str, chunk_rows: int = CHUNK_ROWS, cap_hash: bool = True) -> LocaleScan:
    """One streamed pass over a locale's ``validated.tsv`` keeping :class:`LocaleScan`'s columns only (no
    per-row Python objects outlive a block of ``chunk_rows`` rows); ``cap_hash=False`` leaves that column
    zero (no per-speaker cap to apply: one hash per row less)."""
    d = Path(d)
    path = d / "validated.tsv"
    _, cols = _header(path, CORE_COLUMNS)
    ic, ip, ig = (cols.index(c) for c in ("client_id", "path", "gender"))
    evaluation: set[bytes] = set()
    for name in ("test", "dev"):
        p = d / f"{name}.tsv"
        if p.is_file():
            evaluation.update(x.encode("utf-8") for x in read_tsv(p, required=("path",))["path"].to_list())
    speakers: dict[bytes, int] = {}
    genders: dict[bytes, int] = {}
    unmapped: dict[bytes, int] = {}
    dtypes = {"row": np.uint32, "speaker": np.uint32, "gender": np.uint8, "evaluation": bool}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (*dtypes, "cap_hash", "pool_hash")}
    block: dict[str, list] = {k: [] for k in dtypes}
    # the two hashes are stable_hash("cap" | "pool", utterance id), computed here on the bytes and converted per
    # block: the same values, at a third of the per-row cost of the generic function (1.8 M rows per locale)
    digests = {"cap_hash": bytearray(), "pool_hash": bytearray()}
    blake2b = hashlib.blake2b

    def flush() -> None:
        for k, v in block.items():
            parts[k].append(np.array(v, dtype=dtypes[k]))
            v.clear()
        for k, buf in digests.items():
            parts[k].append(np.frombuffer(bytes(buf), dtype=">u8").astype(np.uint64) if k == "pool_hash" or cap_hash
                            else np.zeros(len(parts["row"][-1]), dtype=np.uint64))
            buf.clear()

    for row, line in _lines(path):
        f = line.split(b"\t")
        if len(f) != len(cols):
            raise CorpusError(f"{path}: cannot parse as a Common Voice TSV: row {row}: {len(f)} fields, the header has {len(cols)}")
        client, clip, gender = f[ic], f[ip], f[ig]
        if not client or not clip:
            raise CorpusError(f"{path}: row {row}: empty client_id or path")
        try:
            clip.decode("utf-8")
            code = genders.get(gender)
            if code is None:
                label = gender.decode("utf-8")
                code = genders[gender] = GENDERS.index(normalise_gender(label))
                if label.strip().lower() not in _GENDER_MAP:
                    unmapped[gender] = 0
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{path}: cannot parse as a Common Voice TSV: row {row}: not UTF-8 ({exc.reason})") from None
        if gender in unmapped:
            unmapped[gender] += 1
        utt = _EXTENSION_BYTES.sub(b"", clip)
        block["row"].append(row)
        block["speaker"].append(speakers.setdefault(client, len(speakers)))
        block["gender"].append(code)
        block["evaluation"].append(clip in evaluation)
        if cap_hash:
            digests["cap_hash"] += blake2b(b"cap\x1f" + utt, digest_size=8).digest()
        digests["pool_hash"] += blake2b(b"pool\x1f" + utt, digest_size=8).digest()
        if len(block["row"]) >= chunk_rows:
            flush()
    flush()
    scan = LocaleScan(locale, **{k: np.concatenate(v) for k, v in parts.items()},
                      unmapped={k.decode("utf-8"): n for k, n in sorted(unmapped.items())})
    # a clip listed twice would enter a test set twice or be drawn twice: refuse, naming both rows
    order = np.argsort(scan.pool_hash, kind="stable")
    same = np.flatnonzero(scan.pool_hash[order][1:] == scan.pool_hash[order][:-1])
    if same.size:
        r1, r2 = sorted((int(scan.row[order][same[0]]), int(scan.row[order][same[0] + 1])))
        clip = next(line.split(b"\t")[ip].decode("utf-8") for row, line in _lines(path) if row == r1)
        raise CorpusError(f"{path}: rows {r1} and {r2}: clip {clip} listed twice ({same.size} extra row(s) repeat "
                          f"a clip; remove the duplicates)")
    return scan


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


def _select_rows(path: Path, rows: np.ndarray) -> pl.DataFrame:
    """The data rows of a TSV whose file row numbers (header = 1) are in ``rows``, the file streamed."""
    want = set(np.asarray(rows).tolist())
    return _read_rows(path, CORE_COLUMNS, lambda row, _: row in want)


def _paths_in(path: Path, paths: pl.Series, required: tuple[str, ...]) -> pl.DataFrame:
    """Rows (with their file ``row``) of a large TSV whose first required column is one of ``paths``, the file
    streamed."""
    k = _header(path, required)[1].index(required[0])
    want = {p.encode("utf-8") for p in paths.to_list()}
    return _read_rows(path, required, lambda _, line: line.split(b"\t", k + 1)[k] in want)


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
