"""Learning curve of the demo's gender task: is the demo in the regime where more target data still helps?

For each regime N (total training clips of a cell part, gender-balanced) it draws the protocol's subsets
with the library (fixed test/dev per target, nested single/extra per seed), trains the *single* cell
(N clips) and the *self* cell (2N clips) of every target and seed with ``run_cell``, and prints per
(N, target) the mean ± sd of test macro-F1 over seeds, the self gain c - b with its standard error
(unpaired, sqrt(v_b + v_c) as the CLTM's delta method uses, and paired over seeds), and seconds per run.

Needs an ingested demo corpus, e.g.::

    cltm demo-corpus --out /tmp/cv --languages es it de nl fi hu --speakers-per-gender 12 --clips-per-speaker 10
    for l in es it de nl fi hu; do cltm ingest --release /tmp/cv --locale $l --out /tmp/ing/$l --workers 2 --min-clips 50; done
    HF_HUB_OFFLINE=1 python bench/learning_curve.py --ingest-root /tmp/ing --targets es de fi --seeds 5

Runs ``--jobs`` cells side by side, one torch thread each (the demo's setting on a 2-core laptop).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from cltm_pipeline.io import write_tsv  # noqa: E402
from cltm_pipeline.subsets import SubsetSpec, check_invariants, draw_seed, eval_sets  # noqa: E402


def make_subsets(ingest_root: Path, work: Path, languages: tuple[str, ...], targets: list[str], n: int, seeds: int) -> None:
    tables = {loc: pl.read_parquet(ingest_root / loc / "utterances.parquet") for loc in languages}
    spec = SubsetSpec(task="gender", languages=languages, n=n, seeds=tuple(range(seeds)))
    for t in targets:
        test, dev = eval_sets(spec, t, tables[t])
        write_tsv(work / t / "test.tsv", test)
        write_tsv(work / t / "dev.tsv", dev)
        for s in range(seeds):
            table = draw_seed(spec, t, s, tables, test, dev)
            check_invariants(spec, t, table, test, dev)
            write_tsv(work / t / f"seed{s}.tsv", table)


def _job(args: tuple) -> dict:
    from cltm_pipeline.train import run_cell

    model_dir, sub, ingest_root, target, donor, seed, hparams, out = args
    return run_cell(
        "gender", "mhubert", model_dir, sub / target / f"seed{seed}.tsv", sub / target / "test.tsv", sub / target / "dev.tsv",
        ingest_root, target, donor, seed, hparams, out, device="cpu", threads=1,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ingest-root", type=Path, default=Path("/tmp/ing"))
    p.add_argument("--work", type=Path, default=Path("/tmp/lc"))
    p.add_argument("--languages", nargs="+", default=["es", "it", "de", "nl", "fi", "hu"])
    p.add_argument("--targets", nargs="+", default=["es", "it", "de", "nl", "fi", "hu"])
    p.add_argument("--ns", nargs="+", type=int, default=[8, 16, 32, 64])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--cells", nargs="+", default=["single", "self"], choices=["single", "self", "dual"])
    p.add_argument("--hparams", default='{"epochs": 12, "lr": 2e-3, "batch_size": 8, "max_seconds": 1.0, '
                   '"freeze_feature_encoder": false}', help="run_cell hyper-parameters (default: the demo's choice)")
    p.add_argument("--tiny", default=None, help="JSON overrides of the tiny model config")
    p.add_argument("--json", type=Path, help="also write all runs' results here")
    args = p.parse_args(argv)

    from cltm_pipeline.models import get_architecture

    hparams = json.loads(args.hparams)
    tiny = json.loads(args.tiny) if args.tiny else None
    model_dir = get_architecture("mhubert").prepare("tiny", args.work / "model", tiny=tiny)
    params = json.loads((model_dir / "cltm_model.json").read_text())["parameters"]
    languages = tuple(args.languages)
    jobs = []
    for n in args.ns:
        sub = args.work / f"n{n}"
        make_subsets(args.ingest_root, sub, languages, args.targets, n, args.seeds)
        for t in args.targets:
            donors = {"single": [None], "self": [t], "dual": [d for d in languages if d != t]}
            for cell in args.cells:
                for d in donors[cell]:
                    for s in range(args.seeds):
                        out = args.work / "runs" / f"n{n}" / t / (d or "-") / f"seed{s}.json"
                        jobs.append((n, (model_dir, sub, args.ingest_root, t, d, s, hparams, out)))
    t0 = time.perf_counter()
    # spawn, not fork: this process already started torch's thread pools (fork would deadlock them)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_job, [j for _, j in jobs]))
    wall = time.perf_counter() - t0
    rows = [{"n": n, **{k: r[k] for k in ("target", "donor", "cell", "seed", "n_train")},
             "f1": r["metrics"]["macro_f1"], "dev_f1": r["metrics"]["dev_macro_f1"], "compute_s": r["timing"]["compute_s"]}
            for (n, _), r in zip(jobs, results)]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))

    print(f"tiny HuBERT {params} parameters; hparams {json.dumps(hparams, sort_keys=True)}; tiny {args.tiny or 'default'}")
    print(f"{len(rows)} runs, {args.jobs} in parallel, wall {wall:.0f} s; test macro-F1 mean ± sd over {args.seeds} seeds")
    print(f"{'N':>4} {'target':>6} {'single b':>14} {'self c (2N)':>14} {'gain c-b':>8} {'SE':>6} {'gain/SE':>7} "
          f"{'pairedSE':>8} {'s/run b':>7} {'s/run c':>7}")
    df = pl.DataFrame(rows)
    summary = []
    for n in args.ns:
        for t in args.targets:
            b = df.filter((pl.col("n") == n) & (pl.col("target") == t) & (pl.col("cell") == "single")).sort("seed")
            c = df.filter((pl.col("n") == n) & (pl.col("target") == t) & (pl.col("cell") == "self")).sort("seed")
            if not b.height or not c.height:
                continue
            fb, fc = b["f1"].to_numpy(), c["f1"].to_numpy()
            gain = fc.mean() - fb.mean()
            se = np.sqrt(fb.var(ddof=1) / len(fb) + fc.var(ddof=1) / len(fc))
            pse = np.std(fc - fb, ddof=1) / np.sqrt(len(fb))
            summary.append((n, t, gain, se))
            print(f"{n:>4} {t:>6} {fb.mean():>6.3f} ± {fb.std(ddof=1):.3f} {fc.mean():>6.3f} ± {fc.std(ddof=1):.3f} "
                  f"{gain:>+8.3f} {se:>6.3f} {gain / se if se else float('inf'):>7.1f} {pse:>8.3f} "
                  f"{b['compute_s'].mean():>7.2f} {c['compute_s'].mean():>7.2f}")
    if "dual" in args.cells:
        d = df.filter(pl.col("cell") == "dual")
        print(f"dual cells: mean test macro-F1 {d['f1'].mean():.3f}, {d['compute_s'].mean():.2f} s/run")
    print(f"mean compute per run: {df['compute_s'].mean():.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
