"""Compare two results trees of the same config: what a refactor must not change.

Usage: python bench/compare_results.py OLD_RESULTS NEW_RESULTS   (e.g. .../results/demo in two clones)

Prints, per matrix, whether every matrix file is byte-identical, and for every cell whether its
metrics.json is identical in every value except ``timing`` (wall and CPU seconds differ run to run).
Exit status 1 if anything differs or is missing on one side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MATRIX_FILES = ("cltm.tsv", "m.tsv", "se.tsv", "cells.tsv", "self_gain.tsv", "missing.tsv", "summary.json",
                "analysis.json")


def _matrices(old: Path, new: Path) -> int:
    bad = 0
    for d in sorted(p.parent for p in (old / "matrices").glob("*/*/cltm.tsv")):
        rel = d.relative_to(old)
        differ = [f for f in MATRIX_FILES if (d / f).exists() and (not (new / rel / f).exists()
                                                                  or (d / f).read_bytes() != (new / rel / f).read_bytes())]
        present = [f for f in MATRIX_FILES if (d / f).exists()]
        print(f"{rel}: {len(present) - len(differ)}/{len(present)} files byte-identical"
              + (f"; DIFFER: {', '.join(differ)}" if differ else ""))
        bad += bool(differ)
    return bad


def _cells(old: Path, new: Path) -> int:
    olds = sorted((old / "runs").glob("*/*/*/*/seed*/metrics.json"))
    bad, keys = 0, set()
    for p in olds:
        q = new / p.relative_to(old)
        if not q.is_file():
            print(f"missing in new: {p.relative_to(old)}")
            bad += 1
            continue
        a, b = json.loads(p.read_text()), json.loads(q.read_text())
        diff = sorted(k for k in set(a) | set(b) if k != "timing" and a.get(k) != b.get(k))
        keys |= set(a) - {"timing"}
        if diff:
            print(f"{p.relative_to(old)}: differs in {diff}")
            bad += 1
    news = len(list((new / "runs").glob("*/*/*/*/seed*/metrics.json")))
    print(f"metrics.json: {len(olds) - bad}/{len(olds)} identical in all {len(keys)} keys but timing "
          f"({news} in the new tree)")
    return bad + (news != len(olds))


if __name__ == "__main__":
    old, new = Path(sys.argv[1]), Path(sys.argv[2])
    sys.exit(1 if _matrices(old, new) + _cells(old, new) else 0)
