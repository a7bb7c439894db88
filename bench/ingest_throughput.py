"""Ingestion throughput: `cltm ingest` against a plain per-file decode loop on the same clips.

Prints clips/s and audio seconds/s for each, measured side by side in one run, and their ratio
(machines are shared and noisy: trust the ratio more than the absolute numbers).

    .venv/bin/python bench/ingest_throughput.py [--release DIR] [--locale es] [--repeats 3]

Without --release it builds the default demo corpus in a temporary directory first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from cltm_pipeline.data.commonvoice import read_locale
from cltm_pipeline.data.ingest import ingest_locale


def plain_loop(clips_dir: Path, paths: list[str]) -> tuple[int, float]:
    """What a first script does: read each MP3, average channels, resample with scipy, keep a list."""
    kept, seconds = 0, 0.0
    out = []
    for p in paths:
        try:
            x, sr = sf.read(clips_dir / p, dtype="float32", always_2d=True)
        except Exception:
            continue
        x = x.mean(axis=1)
        g = gcd(sr, 16000)
        y = resample_poly(x, 16000 // g, sr // g).astype(np.float32)
        out.append(y)
        kept += 1
        seconds += len(y) / 16000
    return kept, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", type=Path)
    ap.add_argument("--locale", default="es")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        release = args.release
        if release is None:
            from cltm_pipeline.data.demo import DEFAULT_LANGUAGES, build_demo_corpus

            release = Path(tmp) / "cv"
            langs = tuple(lang for lang in DEFAULT_LANGUAGES if lang.locale == args.locale)
            t0 = time.perf_counter()
            build_demo_corpus(release, languages=langs, speakers_per_gender=12, clips_per_speaker=10)
            print(f"built demo locale {args.locale} in {time.perf_counter() - t0:.1f} s")
        locale_path = release / args.locale
        paths = read_locale(locale_path, args.locale)["path"].to_list()
        print(f"locale {args.locale}: {len(paths)} validated rows")

        rows: dict[str, list[float]] = {"plain loop (1 process)": [], "cltm ingest workers=1": [], "cltm ingest workers=2": []}
        stats: dict[str, tuple[int, float]] = {}
        for rep in range(args.repeats):
            # interleave the variants so background load hits them alike
            t0 = time.perf_counter()
            stats["plain loop (1 process)"] = plain_loop(locale_path / "clips", paths)
            rows["plain loop (1 process)"].append(time.perf_counter() - t0)
            for w in (1, 2):
                key = f"cltm ingest workers={w}"
                t0 = time.perf_counter()
                res = ingest_locale(locale_path, args.locale, Path(tmp) / f"ing{w}-{rep}", workers=w)
                rows[key].append(time.perf_counter() - t0)
                stats[key] = (res.kept, res.audio_seconds)

        base = statistics.median(rows["plain loop (1 process)"])
        print(f"\n{'variant':<26} {'median s':>9} {'clips/s':>9} {'audio s/s':>10} {'vs plain':>9}   (n={args.repeats})")
        for key, times in rows.items():
            med = statistics.median(times)
            kept, secs = stats[key]
            print(f"{key:<26} {med:9.2f} {kept / med:9.1f} {secs / med:10.1f} {base / med:8.2f}x")
        # What training pays per epoch: clips from the cache versus decoding the MP3s again.
        import polars as pl

        from cltm_pipeline.data.audio import AudioCache, decode_clip

        table = pl.read_parquet(Path(tmp) / "ing2-0" / "utterances.parquet")
        cache = AudioCache(Path(tmp) / "ing2-0" / "audio.npy")
        t0 = time.perf_counter()
        for r in table.iter_rows(named=True):
            cache.get(r["offset"], r["num_samples"])
        t_cache = time.perf_counter() - t0
        t0 = time.perf_counter()
        for p in table["path"]:
            decode_clip(locale_path / "clips" / p)
        t_mp3 = time.perf_counter() - t0
        print(f"\ntraining-time load of {table.height} clips: cache {t_cache * 1e3:.1f} ms, "
              f"MP3 decode {t_mp3 * 1e3:.1f} ms ({t_mp3 / t_cache:.0f}x)")
        print("\ncltm ingest also parses the TSVs, quarantines bad clips and writes audio.npy + parquet;"
              " the plain loop only decodes into memory.")


if __name__ == "__main__":
    main()
