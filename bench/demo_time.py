"""Where a workflow run's time went: job count, wall and CPU seconds per rule (training per task and
architecture), from the benchmark file every job writes (``<results>/benchmarks/<rule>/...tsv``).

Usage: python bench/demo_time.py [RESULTS] [SNAKEMAKE_LOG]     (RESULTS: results/demo by default)

With Snakemake's log (``.snakemake/log/*.snakemake.log``, or the captured stderr) it also prints the run's
wall time, first job start to last job end. CPU seconds are Snakemake's sampling of the job's process tree:
short-lived child processes (the demo corpus's renderers) can be missed, so the corpus's CPU is a floor.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path


def job_seconds(results: Path) -> dict[str, list[float]]:
    """Per stage (the benchmark directory: a rule or a group of rules; ``train/<task>/<arch>`` for training): [jobs, wall s, CPU s]."""
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    root = results / "benchmarks"
    for f in sorted(root.rglob("*.tsv")):
        rel = f.relative_to(root).parts
        key = "/".join(rel[:3]) if rel[0] == "train" else rel[0].removesuffix(".tsv")
        with f.open() as fh:
            row = list(csv.DictReader(fh, delimiter="\t"))[-1]
        acc = out[key]
        acc[0] += 1
        acc[1] += float(row["s"])
        acc[2] += float(row["cpu_time"] or 0)
    return dict(out)


def run_wall(log: Path) -> float | None:
    """Seconds from the first to the last timestamp Snakemake printed (``[Thu Dec  3 18:34:31 2026]``)."""
    stamps = [datetime.strptime(m, "%a %b %d %H:%M:%S %Y")
              for m in re.findall(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$", log.read_text(), re.M)]
    return (max(stamps) - min(stamps)).total_seconds() if stamps else None


def main(argv: list[str]) -> int:
    results = Path(argv[0]) if argv else Path("results/demo")
    rows = job_seconds(results)
    if not rows:
        print(f"{results}/benchmarks: no benchmark files (run the workflow first)")
        return 1
    print(f"{'stage (benchmark dir)':32s} {'jobs':>5s} {'wall s':>9s} {'CPU s':>9s}")
    for key in sorted(rows, key=lambda k: (k.startswith("train"), k)):
        n, wall, cpu = rows[key]
        print(f"{key:32s} {n:5d} {wall:9.1f} {cpu:9.1f}")
    tot = [sum(r[i] for r in rows.values()) for i in range(3)]
    train = [sum(r[i] for k, r in rows.items() if k.startswith("train")) for i in range(3)]
    print(f"{'training':32s} {train[0]:5.0f} {train[1]:9.1f} {train[2]:9.1f}")
    print(f"{'all jobs':32s} {tot[0]:5.0f} {tot[1]:9.1f} {tot[2]:9.1f}")
    if len(argv) > 1:
        wall = run_wall(Path(argv[1]))
        if wall is not None:
            print(f"run wall (first job start to last job end): {wall:.0f} s = {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
