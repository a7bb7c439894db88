"""Ingestion at scale: peak memory and time of the metadata pass and of `cltm ingest` against locale size.

Builds generated Common Voice-layout locales of 10k, 50k and 200k validated rows (demo.scale_locale: real
demo mp3s hard-linked under new names, so decoding is real and the disk holds only links), then, each in a
fresh process, measures:

- the metadata pass (chunked scan of validated.tsv, per-speaker cap, pool sample, full rows of the chosen
  clips): wall time, peak RSS;
- the full ingestion with the same --pool-clips at every size: wall time, peak RSS of the main process and
  of its decode workers (summed, sampled every 50 ms), clips decoded, pool size.

Peak RSS should not grow with the locale (the issue's goal: 200k <= 1.2 x 10k). Then decode throughput
of 2 workers against a one-process loop on the same clips, side by side, with the CPU seconds each spent
per clip: on a loaded machine the wall ratio says what share of the CPU the session got (Linux groups a
session's processes for scheduling), the CPU ratio what 2 free cores would give.

    .venv/bin/python bench/ingest_scale.py [--source DIR/es] [--rows 10000 50000 200000] [--pool-clips 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that across fork and exec, so a child
    would report its parent's size (here: the parent that generated a 200k-row locale)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _watch_children(peak: list[float], stop: threading.Event) -> None:
    """Track the largest summed RSS of this process's descendants (the decode workers and their server)."""
    me = psutil.Process()
    while not stop.wait(0.05):
        total = 0
        for c in me.children(recursive=True):
            try:
                total += c.memory_info().rss
            except psutil.Error:
                pass
        peak[0] = max(peak[0], total / 2**20)


def _child(mode: str, locale_dir: Path, out: Path, pool_clips: int, workers: int) -> None:
    """Run one measured step in this (fresh) process and print its figures as JSON."""
    peak, stop = [0.0], threading.Event()
    watcher = threading.Thread(target=_watch_children, args=(peak, stop), daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    if mode == "metadata":
        from cltm_pipeline.data.commonvoice import read_locale, scan_locale
        from cltm_pipeline.data.ingest import capped, pool_sample

        scan = scan_locale(locale_dir, "es", cap_hash=False)  # as `cltm ingest` without a per-speaker cap
        eligible = capped(scan, None) & ~scan.evaluation
        pool = pool_sample(scan, eligible, pool_clips)
        table = read_locale(locale_dir, "es", rows=scan.row[pool | scan.evaluation])
        figures = {"rows": scan.rows, "pool": int(pool.sum()), "decoded": 0, "table_rows": table.height}
    else:
        from cltm_pipeline.data.ingest import ingest_locale

        res = ingest_locale(locale_dir, "es", out, workers=workers, pool_clips=pool_clips)
        figures = {"pool": res.pool, "decoded": res.kept + res.quarantined}
    figures["wall_s"] = time.perf_counter() - t0
    figures["rss_mb"] = _peak_rss_mb()
    stop.set()
    watcher.join()
    figures["workers_rss_mb"] = peak[0]
    print(json.dumps(figures))


def _measure(mode: str, locale_dir: Path, out: Path, pool_clips: int, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--locale-dir", str(locale_dir), "--out", str(out),
           "--pool-clips", str(pool_clips), "--workers", str(workers)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _throughput(locale_dir: Path, clips: int, repeats: int) -> dict[int, tuple[float, float]]:
    """Per worker count (1, 2): the best clips/s of ``repeats`` alternating runs on the same clips, and the CPU
    seconds per clip spent by this process and its descendants (sampled), which contention does not inflate."""
    from cltm_pipeline.data.commonvoice import read_tsv
    from cltm_pipeline.data.ingest import decode_stream

    v = read_tsv(locale_dir / "validated.tsv").head(clips)
    paths = [str(locale_dir / "clips" / p) for p in v["path"]]
    me = psutil.Process()
    out: dict[int, tuple[float, float]] = {}
    for _ in range(repeats):
        for w in (1, 2):
            cpu: dict[int, float] = {}
            stop = threading.Event()

            def watch() -> None:
                while not stop.wait(0.05):
                    for c in me.children(recursive=True):
                        try:
                            t = c.cpu_times()
                            cpu[c.pid] = t.user + t.system
                        except psutil.Error:
                            pass

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            t0, c0 = time.perf_counter(), me.cpu_times()
            n = sum(1 for _ in decode_stream(paths, [None] * len(paths), workers=w))
            dt, c1 = time.perf_counter() - t0, me.cpu_times()
            stop.set()
            watcher.join()
            cpu_s = (c1.user + c1.system - c0.user - c0.system) + sum(cpu.values())
            rate = n / dt
            if w not in out or rate > out[w][0]:
                out[w] = (rate, cpu_s / n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, help="a demo locale directory to scale (default: build the demo's es)")
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    ap.add_argument("--pool-clips", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--throughput-clips", type=int, default=4000)  # a real pool is >= 30k clips; 600 measured worker start-up
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", choices=["metadata", "ingest"], help=argparse.SUPPRESS)
    ap.add_argument("--locale-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.locale_dir, args.out, args.pool_clips, args.workers)
        return

    from cltm_pipeline.data.demo import DEFAULT_LANGUAGES, build_demo_corpus, scale_locale

    with tempfile.TemporaryDirectory() as tmp:
        source = args.source
        if source is None:
            langs = tuple(lang for lang in DEFAULT_LANGUAGES if lang.locale == "es")
            source = build_demo_corpus(Path(tmp) / "cv", languages=langs, speakers_per_gender=12, clips_per_speaker=10, seed=0) / "es"
        print(f"pool_clips {args.pool_clips} per binary gender, {args.workers} decode workers")
        print(f"{'rows':>8} {'step':<9} {'wall s':>7} {'peak RSS MB':>11} {'workers MB':>10} {'decoded':>8} {'pool':>6}")
        figures = {}
        for rows in args.rows:
            d = Path(tmp) / f"r{rows}" / "es"
            scale_locale(source, d, rows)
            for mode in ("metadata", "ingest"):
                f = _measure(mode, d, Path(tmp) / f"out{rows}", args.pool_clips, args.workers)
                figures[rows, mode] = f
                workers = f"{f['workers_rss_mb']:.0f}" if mode == "ingest" else "-"
                print(f"{rows:>8,} {mode:<9} {f['wall_s']:>7.1f} {f['rss_mb']:>11.0f} {workers:>10} {f['decoded']:>8,} {f['pool']:>6,}",
                      flush=True)
        lo, hi = min(args.rows), max(args.rows)
        for mode in ("metadata", "ingest"):
            print(f"peak RSS {mode}: {hi:,} rows / {lo:,} rows = {figures[hi, mode]['rss_mb'] / figures[lo, mode]['rss_mb']:.2f}x")
        tp = _throughput(Path(tmp) / f"r{lo}" / "es", args.throughput_clips, args.repeats)
        (one, cpu1), (two, cpu2) = tp[1], tp[2]
        print(f"decode throughput: 1 process {one:.1f} clips/s, 2 workers {two:.1f} clips/s, ratio {two / one:.2f}x "
              f"({args.throughput_clips} clips, best of {args.repeats})")
        print(f"decode CPU per clip: 1 process {1000 * cpu1:.2f} ms, 2 workers {1000 * cpu2:.2f} ms in all; on 2 free "
              f"cores 2 workers would reach {cpu1 / cpu2 * 2:.2f}x (the wall ratio above holds only on an idle machine)")


if __name__ == "__main__":
    main()
