"""Learning curve of the demo's gender task: is the demo in the regime where more target data still helps?

For each regime N (total training clips of a cell part, gender-balanced) it draws the protocol's subsets
with the library (fixed test/dev per target, nested single/extra per seed), trains the *single* cell
(N clips) and the *self* cell (2N clips) of every target and seed with ``run_cell``, and prints per
(N, target) the mean test macro-F1 over seeds, the self gain c - b with its standard error (unpaired,
sqrt(v_b + v_c) as the CLTM's delta method uses) and the recommended N. The protocol lives in
``cltm_pipeline.analysis.learning_curve`` and ``cltm_pipeline.training.learning_curve`` (the workflow's ``learning_curve`` rule runs the same code).

Needs an ingested demo corpus, e.g.::

    cltm demo-corpus --out /tmp/cv --languages es it de nl fi hu --speakers-per-gender 12 --clips-per-speaker 10
    for l in es it de nl fi hu; do cltm ingest --release /tmp/cv --locale $l --out /tmp/ing/$l --workers 2 --min-clips 50; done
    HF_HUB_OFFLINE=1 python bench/learning_curve.py --ingest-root /tmp/ing --targets es de fi --seeds 5

Runs ``--jobs`` cells side by side, one torch thread each (the demo's setting on a 2-core laptop).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl  # noqa: E402

from cltm_pipeline.analysis.learning_curve import draw_ladder, recommend  # noqa: E402
from cltm_pipeline.training.learning_curve import run_ladder  # noqa: E402
from cltm_pipeline.data.subsets import SubsetSpec  # noqa: E402


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
    seeds = list(range(args.seeds))
    tables = {loc: pl.read_parquet(args.ingest_root / loc / "utterances.parquet") for loc in args.languages}
    spec = SubsetSpec(task="gender", languages=tuple(args.languages), n=float(args.ns[0]), seeds=tuple(seeds))
    # the library draws only single/extra parts per target; dual cells need the donors' parts too
    if "dual" in args.cells:
        from cltm_pipeline.io import write_tsv
        from cltm_pipeline.data.subsets import draw_seed, eval_sets

        for n in args.ns:
            s = SubsetSpec(**{**spec.__dict__, "n": float(n)})
            for t in args.targets:
                sub = args.work / "subsets" / f"n{n:g}" / t
                test, dev = eval_sets(s, t, tables[t])
                write_tsv(sub / "test.tsv", test)
                write_tsv(sub / "dev.tsv", dev)
                for seed in seeds:
                    write_tsv(sub / f"seed{seed}.tsv", draw_seed(s, t, seed, tables, test, dev))
    else:
        draw_ladder(spec, tables, args.targets, args.ns, seeds, args.work)
    t0 = time.perf_counter()
    curve = run_ladder("gender", "mhubert", model_dir, args.ingest_root, args.targets, args.ns, seeds, hparams,
                       args.work, "macro_f1", jobs=args.jobs, cells=args.cells, donors=args.languages)
    wall = time.perf_counter() - t0
    if args.json:
        args.json.write_text(json.dumps(curve.to_dicts(), indent=1))

    print(f"tiny HuBERT {params} parameters; hparams {json.dumps(hparams, sort_keys=True)}; tiny {args.tiny or 'default'}")
    print(f"{curve.height} runs, {args.jobs} in parallel, wall {wall:.0f} s; test macro-F1 over {args.seeds} seeds")
    rec = recommend(curve)
    print(f"{'N':>4} {'target':>6} {'single b':>9} {'self c (2N)':>11} {'gain c-b':>9} {'SE':>6} {'gain/SE':>7} clear")
    for step in rec["steps"]:
        for t, v in step["targets"].items():
            z = v["gain"] / v["se"] if v["se"] else float("inf")
            print(f"{step['n']:>4g} {t:>6} {v['b']:>9.3f} {v['c']:>11.3f} {v['gain']:>+9.3f} {v['se']:>6.3f} {z:>7.1f} "
                  f"{'yes' if v['clear'] else 'no'}")
    if "dual" in args.cells:
        d = curve.filter(pl.col("cell") == "dual")
        print(f"dual cells: mean test macro-F1 {d['value'].mean():.3f}")
    print(f"recommended N (largest N whose doubling still clearly helps every target): {rec['recommended_n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
