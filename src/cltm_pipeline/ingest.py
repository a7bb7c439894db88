"""Ingestion of one Common Voice locale: metadata table, decoded audio cache, quarantine report."""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from .audio import SAMPLE_RATE, Decoded, decode_clip
from .commonvoice import CorpusError, read_locale, unmapped_genders
from .io import stable_hash, write_json, write_npy, write_parquet, write_tsv

__all__ = ["IngestResult", "select_clips", "decode_all", "ingest_locale"]


@dataclass(frozen=True)
class IngestResult:
    """What one locale's ingestion kept and quarantined."""

    locale: str
    kept: int
    quarantined: int
    audio_seconds: float


def select_clips(df: pl.DataFrame, max_clips_per_speaker: int | None) -> pl.DataFrame:
    """Cap training-pool clips per speaker (CV has speakers with thousands of clips); splits stay whole.

    The kept clips per speaker are the first in a fixed hash order, so the cap is deterministic and
    does not favour early recordings.
    """
    if not max_clips_per_speaker:
        return df
    ranked = df.with_columns(
        pl.col("utt_id").map_elements(lambda u: stable_hash("cap", u), return_dtype=pl.UInt64).alias("_h")
    ).with_columns(pl.col("_h").rank("ordinal").over("client_id").alias("_r"))
    keep = (pl.col("cv_split").is_in(["dev", "test"])) | (pl.col("_r") <= max_clips_per_speaker)
    return ranked.filter(keep).drop("_h", "_r")


def _decode_job(args: tuple[str, float | None, int]) -> Decoded:
    path, expected, sr = args
    return decode_clip(Path(path), sr, expected)


def decode_all(paths: list[Path], expected_s: list[float | None], workers: int = 1, sample_rate: int = SAMPLE_RATE) -> list[Decoded]:
    """Decode clips in order, in ``workers`` processes (decoding is CPU-bound and per-file)."""
    jobs = [(str(p), e, sample_rate) for p, e in zip(paths, expected_s)]
    if workers <= 1 or len(jobs) < 32:
        return [_decode_job(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_decode_job, jobs, chunksize=max(1, min(64, len(jobs) // (workers * 8)))))


def ingest_locale(
    locale_path: Path,
    locale: str,
    out_dir: Path,
    *,
    workers: int = 1,
    min_clips: int = 1,
    max_clips_per_speaker: int | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> IngestResult:
    """Ingest one locale directory into ``out_dir`` (utterances.parquet, audio.npy, quarantine.tsv, ingest.json).

    Unusable clips are quarantined with file, TSV row and reason, and the locale continues; a locale left
    with fewer than ``min_clips`` usable clips raises :class:`CorpusError` naming it. The quarantine
    report is written first, so it survives that error.
    """
    locale_path, out_dir = Path(locale_path), Path(out_dir)
    df = select_clips(read_locale(locale_path, locale), max_clips_per_speaker)
    unmapped = unmapped_genders(df)
    if unmapped:  # not an error (a new CV label must not fail a locale), but never silent: counted and logged
        print(f"ingest {locale}: {sum(unmapped.values())} clip(s) with a gender label of neither CV vocabulary, "
              f"taken as unknown (out of the gender task): {unmapped}", file=sys.stderr)
    clips_dir = locale_path / "clips"
    decoded = decode_all(
        [clips_dir / p for p in df["path"]], df["cv_duration_s"].to_list(), workers=workers, sample_rate=sample_rate
    )
    ok = np.array([d.samples is not None for d in decoded], dtype=bool)
    bad = df.filter(pl.Series(~ok)).select(
        (pl.lit(str(clips_dir) + "/") + pl.col("path")).alias("file"),
        pl.col("row"),
        pl.Series("reason", [d.reason for d in decoded if d.samples is None], dtype=pl.String),
    )
    write_tsv(out_dir / "quarantine.tsv", bad)

    kept = df.filter(pl.Series(ok))
    if kept.height < min_clips:
        reasons = bad.group_by("reason").len().sort("len", descending=True)
        summary = "; ".join(f"{r['len']}× {r['reason']}" for r in reasons.head(3).iter_rows(named=True))
        hint = f" ({clips_dir} does not exist)" if not clips_dir.is_dir() else ""
        raise CorpusError(
            f"locale {locale}: {kept.height} usable clips of {df.height} in {locale_path / 'validated.tsv'}, "
            f"need at least {min_clips}; quarantined: {summary}{hint}; see {out_dir / 'quarantine.tsv'}"
        )

    clips = [d.samples for d in decoded if d.samples is not None]
    lengths = np.fromiter((len(c) for c in clips), dtype=np.int64, count=len(clips))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    audio = np.concatenate(clips) if clips else np.zeros(0, dtype=np.int16)
    table = kept.with_columns(
        pl.Series("offset", offsets),
        pl.Series("num_samples", lengths),
        pl.Series("duration_s", lengths / sample_rate),
    )
    write_npy(out_dir / "audio.npy", audio)
    write_parquet(out_dir / "utterances.parquet", table)
    result = IngestResult(locale, kept.height, bad.height, float(lengths.sum() / sample_rate))
    write_json(
        out_dir / "ingest.json",
        {
            "locale": locale,
            "source": str(locale_path),
            "sample_rate": sample_rate,
            "kept": result.kept,
            "quarantined": result.quarantined,
            "audio_seconds": round(result.audio_seconds, 3),
            "max_clips_per_speaker": max_clips_per_speaker,
            "gender_unmapped": unmapped,
        },
    )
    if bad.height:
        print(f"ingest {locale}: quarantined {bad.height} clip(s), see {out_dir / 'quarantine.tsv'}", file=sys.stderr)
    return result
