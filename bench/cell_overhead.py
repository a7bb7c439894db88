"""Per-cell overhead with and without grouping: one process per cell versus one worker per (target, seed).

Trains the same cells twice, side by side in one run: (a) one `cltm train` process per cell, as one
SLURM job per cell would; (b) one `cltm train-cells` process for all of them. Prints wall time, summed
compute time (from each metrics.json) and the overhead fraction 1 - compute / wall for both.

    .venv/bin/python bench/cell_overhead.py [--results results/demo] [--target es] [--seed 0] [--repeats 2]

Needs a finished demo run for its ingested audio, subsets and tiny model (`snakemake --cores 2`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--target", default="es")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    cfg = yaml.safe_load(Path(args.config).read_text())
    results = Path(cfg["results"])
    task = "gender"
    t = cfg["tasks"][task]
    arch, block = next(iter(t["architectures"].items()))
    model_dir = Path("resources/models") / block["model"]
    hparams = json.dumps(block.get("hparams", {}))
    sub = results / "subsets" / task / args.target
    if not (sub / f"seed{args.seed}.tsv").is_file() or not model_dir.is_dir():
        sys.exit(f"run the demo first (snakemake --cores 2): {sub / f'seed{args.seed}.tsv'} or {model_dir} missing")
    donors = ["-", *t["languages"]]
    common = ["--task", task, "--arch", arch, "--model-dir", str(model_dir), "--seed-table", str(sub / f"seed{args.seed}.tsv"),
              "--test", str(sub / "test.tsv"), "--dev", str(sub / "dev.tsv"), "--ingest-root", str(results / "ingest"),
              "--target", args.target, "--seed", str(args.seed), "--hparams", hparams, "--threads", "1"]
    cltm = [sys.executable, "-m", "cltm_pipeline.cli"]

    def compute(runs_dir: Path) -> float:
        return sum(json.loads(p.read_text())["timing"]["compute_s"] for p in runs_dir.rglob("metrics.json"))

    rows: dict[str, list[tuple[float, float]]] = {"one process per cell": [], "one worker per (target, seed)": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            per_cell, grouped = Path(tmp) / "a", Path(tmp) / "b"
            t0 = time.perf_counter()
            for d in donors:
                out = per_cell / args.target / d / f"seed{args.seed}" / "metrics.json"
                subprocess.run([*cltm, "train", *common, "--donor", d, "--out", str(out)], check=True, capture_output=True)
            rows["one process per cell"].append((time.perf_counter() - t0, compute(per_cell)))
            t0 = time.perf_counter()
            subprocess.run([*cltm, "train-cells", *common, "--donors", *donors, "--runs-dir", str(grouped),
                            "--flag", str(Path(tmp) / "flag.json")], check=True, capture_output=True)
            rows["one worker per (target, seed)"].append((time.perf_counter() - t0, compute(grouped)))

    print(f"{len(donors)} cells of {task}/{arch}/{args.target}/seed{args.seed} (demo tiny model, 1 thread), "
          f"median of {args.repeats}")
    print(f"{'variant':<32} {'wall s':>8} {'compute s':>10} {'overhead':>9} {'s/cell overhead':>16}")
    for name, vals in rows.items():
        wall = statistics.median(v[0] for v in vals)
        comp = statistics.median(v[1] for v in vals)
        print(f"{name:<32} {wall:8.1f} {comp:10.1f} {1 - comp / wall:9.0%} {(wall - comp) / len(donors):16.2f}")
    print("overhead = start-up, imports, model and data loading, evaluation-set preparation, writing results")


if __name__ == "__main__":
    main()
