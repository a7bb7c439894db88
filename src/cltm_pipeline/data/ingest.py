"""Ingestion of one Common Voice locale: metadata table, decoded audio cache, quarantine report.

Memory does not grow with the locale: one chunked pass over ``validated.tsv`` keeps a few bytes per row
(:class:`~cltm_pipeline.data.commonvoice.LocaleScan`); only the evaluation clips and a hash-ranked sample of the
training-eligible clips (the pool the grid can draw from, ``pool_clips``) are read in full and decoded, and
decoded clips go straight to the on-disk store in order, a bounded window of chunks in flight.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from collections import deque
from contextlib import contextmanager, nullcontext
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import polars as pl

from cltm_pipeline.data.audio import SAMPLE_RATE, decode_clips, decode_clips_to_file, read_spool
from cltm_pipeline.data.commonvoice import GENDERS, LocaleScan, read_locale, scan_locale
from cltm_pipeline.errors import CorpusError
from cltm_pipeline.io import NpyAppender, write_json, write_parquet, write_tsv
from cltm_pipeline.progress import Progress

__all__ = ["IngestResult", "capped", "pool_sample", "decode_stream", "ingest_locale"]

#: Clips one worker decodes per task: large enough to amortise inter-process transfer, small enough that
#: workers x window x chunk of decoded audio stays a few hundred MB at most.
CHUNK_CLIPS = 32


@dataclass(frozen=True)
class IngestResult:
    """What one locale's ingestion kept and quarantined."""

    locale: str
    kept: int
    quarantined: int
    audio_seconds: float
    pool: int


def capped(scan: LocaleScan, max_clips_per_speaker: int | None) -> np.ndarray:
    """Mask of clips kept under the per-speaker cap (CV has speakers with thousands of clips); evaluation
    clips stay whole. A speaker's kept clips are the first in a fixed hash order, so the cap is deterministic
    and does not favour early recordings."""
    keep = np.ones(scan.rows, dtype=bool)
    if not max_clips_per_speaker or scan.rows == 0:
        return keep
    order = np.lexsort((scan.row, scan.cap_hash, scan.speaker))  # by speaker, then hash, then file order
    spk = scan.speaker[order]
    first = np.r_[0, np.flatnonzero(spk[1:] != spk[:-1]) + 1]
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    keep[order] = rank < max_clips_per_speaker
    return keep | scan.evaluation


def pool_sample(scan: LocaleScan, eligible: np.ndarray, pool_clips: int | None) -> np.ndarray:
    """Mask of the training pool: the shortest prefix, in a keyed hash order, of the ``eligible`` clips
    (outside CV's test/dev) that holds at least ``pool_clips`` clips of each binary gender and in all (or
    every such clip the locale has). A prefix of a random order is a uniform random sample, per gender too,
    so draws from the pool are draws from the locale. ``None``: every eligible clip."""
    idx = np.flatnonzero(eligible)
    if pool_clips is None or len(idx) <= pool_clips:
        return eligible.copy()
    order = idx[np.lexsort((scan.row[idx], scan.pool_hash[idx]))]
    need = min(pool_clips, len(order))
    for g in ("female", "male"):
        is_g = scan.gender[order] == GENDERS.index(g)
        k = min(pool_clips, int(is_g.sum()))
        if k:
            need = max(need, int(np.flatnonzero(is_g)[k - 1]) + 1)
    keep = np.zeros(scan.rows, dtype=bool)
    keep[order[:need]] = True
    return keep


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start worker processes without re-running the main script in each (what spawn and forkserver do):
    ``cltm``'s imports the whole CLI (polars and more), seconds per worker; the workers need only
    ``cltm_pipeline.data.audio``."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update(saved)


def decode_stream(
    paths: Sequence[str], expected_s: Sequence[float | None], workers: int = 1, sample_rate: int = SAMPLE_RATE,
    chunk: int = CHUNK_CLIPS,
) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """Decode clips in order, yielding (int16 samples or None, reason) one clip at a time; with ``workers`` > 1
    in that many processes, at most ``2 x workers`` chunks of ``chunk`` clips in flight."""
    jobs = ((list(paths[i : i + chunk]), list(expected_s[i : i + chunk]), sample_rate) for i in range(0, len(paths), chunk))
    if workers <= 1:
        for job in jobs:
            yield from decode_clips(job)
        return
    # forkserver: a forked copy of a process running polars' thread pool can deadlock; workers fork from a
    # server that has imported only the decoder, so they start in milliseconds and stay small
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["cltm_pipeline.data.audio"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool, tempfile.TemporaryDirectory(prefix="cltm-decode-") as spool:
        window: deque = deque()

        def drain() -> Iterator[tuple[np.ndarray | None, str | None]]:
            path, future = window.popleft()
            return iter(read_spool(path, future.result()))

        for k, job in enumerate(jobs):
            path = os.path.join(spool, f"{k}.i16")
            with _main_module_hidden() if k < 2 * workers else nullcontext():  # workers start on demand
                window.append((path, pool.submit(decode_clips_to_file, job, path)))
            if len(window) >= 2 * workers:
                yield from drain()
        while window:
            yield from drain()


def ingest_locale(
    locale_path: Path,
    locale: str,
    out_dir: Path,
    *,
    workers: int = 1,
    min_clips: int = 1,
    max_clips_per_speaker: int | None = None,
    pool_clips: int | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> IngestResult:
    """Ingest one locale directory into ``out_dir`` (utterances.parquet, audio.npy, quarantine.tsv, ingest.json).

    Every evaluation clip (CV test/dev) is kept; of the other clips, after ``max_clips_per_speaker``, the
    hash-ranked pool of ``pool_clips`` per binary gender (:func:`pool_sample`; None: all). Unusable clips are
    quarantined with file, TSV row and reason, and the locale continues; a locale left with fewer than
    ``min_clips`` usable clips raises :class:`CorpusError` naming it. The quarantine report is written first,
    so it survives that error.
    """
    locale_path, out_dir = Path(locale_path), Path(out_dir)
    scan = scan_locale(locale_path, locale, cap_hash=bool(max_clips_per_speaker))
    eligible = capped(scan, max_clips_per_speaker) & ~scan.evaluation
    pool = pool_sample(scan, eligible, pool_clips)
    chosen = pool | scan.evaluation
    print(
        f"ingest {locale}: {scan.rows:,} validated rows, {int(scan.evaluation.sum()):,} evaluation clips, "
        f"training pool {int(pool.sum()):,} of {int(eligible.sum()):,} eligible (pool_clips {pool_clips})",
        file=sys.stderr, flush=True,
    )
    unmapped = scan.unmapped
    if unmapped:  # not an error (a new CV label must not fail a locale), but never silent: counted and logged
        print(f"ingest {locale}: {sum(unmapped.values())} clip(s) with a gender label of neither CV vocabulary, "
              f"taken as unknown (out of the gender task): {unmapped}", file=sys.stderr)
    df = read_locale(locale_path, locale, rows=scan.row[chosen])
    del scan
    kept, lengths, bad = _decode_locale(df, locale_path, locale, out_dir, workers, min_clips, sample_rate)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    table = kept.with_columns(
        pl.Series("offset", offsets),
        pl.Series("num_samples", lengths),
        pl.Series("duration_s", lengths / sample_rate),
    )
    write_parquet(out_dir / "utterances.parquet", table)
    n_pool = int(pool.sum())
    result = IngestResult(locale, kept.height, bad.height, float(lengths.sum() / sample_rate), n_pool)
    summary_json = {
        "locale": locale,
        "source": str(locale_path),
        "sample_rate": sample_rate,
        "kept": result.kept,
        "quarantined": result.quarantined,
        "audio_seconds": round(result.audio_seconds, 3),
        "max_clips_per_speaker": max_clips_per_speaker,
        "gender_unmapped": unmapped,
    }
    if n_pool < int(eligible.sum()):  # only for a proper sample: a whole-locale pool leaves ingest.json as before
        summary_json["pool"] = {
            "pool_clips": pool_clips, "validated_rows": int(len(chosen)), "eligible": int(eligible.sum()),
            "sampled": n_pool, "evaluation": int((chosen & ~pool).sum()),
        }
    write_json(out_dir / "ingest.json", summary_json)
    if bad.height:
        print(f"ingest {locale}: quarantined {bad.height} clip(s), see {out_dir / 'quarantine.tsv'}", file=sys.stderr)
    return result


def _decode_locale(df: pl.DataFrame, locale_path: Path, locale: str, out_dir: Path, workers: int, min_clips: int,
                   sample_rate: int) -> tuple[pl.DataFrame, np.ndarray, pl.DataFrame]:
    """Decode the chosen clips into ``audio.npy`` and write ``quarantine.tsv``; (kept rows, their sample
    counts, quarantined rows). Too few usable clips is a CorpusError (after the quarantine report)."""
    clips_dir = locale_path / "clips"
    ok = np.zeros(df.height, dtype=bool)
    lengths = np.zeros(df.height, dtype=np.int64)
    reasons: list[str] = []
    progress = Progress(f"ingest {locale}: decode", df.height, "clips")
    with NpyAppender(out_dir / "audio.npy", np.int16) as store:
        stream = decode_stream(
            [str(clips_dir / p) for p in df["path"]], df["cv_duration_s"].to_list(), workers=workers,
            sample_rate=sample_rate,
        )
        for i, (samples, reason) in enumerate(stream):
            if samples is None:
                reasons.append(reason or "")
            else:
                ok[i], lengths[i] = True, len(samples)
                store.append(samples)
            progress.update()
        progress.finish()
        bad = df.filter(pl.Series(~ok)).select(
            (pl.lit(str(clips_dir) + "/") + pl.col("path")).alias("file"),
            pl.col("row"),
            pl.Series("reason", reasons, dtype=pl.String),
        )
        write_tsv(out_dir / "quarantine.tsv", bad)
        kept = df.filter(pl.Series(ok))
        if kept.height < min_clips:
            reasons_n = bad.group_by("reason").len().sort("len", descending=True)
            summary = "; ".join(f"{r['len']}× {r['reason']}" for r in reasons_n.head(3).iter_rows(named=True))
            hint = f" ({clips_dir} does not exist)" if not clips_dir.is_dir() else ""
            raise CorpusError(
                f"locale {locale}: {kept.height} usable clips of {df.height} in {locale_path / 'validated.tsv'}, "
                f"need at least {min_clips}; quarantined: {summary}{hint}; see {out_dir / 'quarantine.tsv'}"
            )
    return kept, lengths[ok], bad
