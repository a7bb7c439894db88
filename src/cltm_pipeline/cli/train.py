"""``cltm prepare-model``, ``train``, ``train-cells`` and ``embed``: models and training."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

from cltm_pipeline.cli.common import add_cell_arguments, json_arg, parse_artifacts
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.io import read_manifest
from cltm_pipeline.protocol import SINGLE, CellSpec

__all__ = ["register"]


def cmd_prepare_model(args: argparse.Namespace) -> None:
    """Write a model directory (Hugging Face layout) from a hub id, a local directory or 'tiny'."""
    from cltm_pipeline.models import get_architecture  # torch: only the commands that train load it

    tiny = json_arg(args.tiny, "--tiny") if args.tiny else None
    if tiny is not None and not isinstance(tiny, dict):
        raise ConfigError("--tiny: must be a JSON object")
    t0 = time.perf_counter()
    out = get_architecture(args.arch).prepare(args.source, Path(args.out), tiny=tiny)
    info = json.loads((out / "cltm_model.json").read_text(encoding="utf-8"))
    print(f"prepare-model {args.arch}: {args.source} -> {out} ({info.get('parameters', '?')} parameters, "
          f"{time.perf_counter() - t0:.1f} s)")


def _hparams(args: argparse.Namespace) -> dict[str, Any]:
    hparams = json_arg(args.hparams, "--hparams")
    if not isinstance(hparams, dict):
        raise ConfigError("--hparams: must be a JSON object")
    return hparams


def cmd_train(args: argparse.Namespace) -> None:
    """Train and evaluate one CLTM cell; write its metrics.json."""
    from cltm_pipeline.training.cell import run_cell  # torch: only the commands that train load it

    res = run_cell(CellSpec(
        task=args.task, arch=args.arch, model_dir=args.model_dir, seed_table_path=args.seed_table, test_path=args.test,
        dev_path=args.dev, ingest_root=args.ingest_root, target=args.target,
        donor=None if args.donor in (SINGLE, "") else args.donor, seed=args.seed, hparams=_hparams(args),
        out_path=args.out, device=args.device, config_hash=args.config_hash, threads=args.threads,
        artifacts=parse_artifacts(args.artifact), probe_path=args.probe or None,
    ))
    print(
        f"{args.task}/{args.arch}/{args.target}/{args.donor}/seed{args.seed} ({res['cell']}, n_train {res['n_train']}): "
        + ", ".join(f"{k} {v:.4f}" for k, v in sorted(res["metrics"].items()))
        + f"; setup {res['timing']['setup_s']:.1f} s, compute {res['timing']['compute_s']:.1f} s on {res['device']}"
    )


def cmd_train_cells(args: argparse.Namespace) -> None:
    """Train every cell of one (task, arch, target) for each listed seed in one process; skip cells already current."""
    from cltm_pipeline.training.worker import run_cells, write_flag  # torch: only the commands that train load it

    hparams = _hparams(args)
    if len(args.seed_tables) != len(args.seeds):
        raise ConfigError(f"--seed-tables: {len(args.seed_tables)} table(s) for {len(args.seeds)} seed(s) in --seeds; "
                          "give one per seed, in the same order")
    donors = [None if d == SINGLE else d for d in args.donors]
    t0 = time.perf_counter()
    outcome: dict[str, list[str]] = {"trained": [], "skipped": [], "failed": []}
    for seed, seed_table in zip(args.seeds, args.seed_tables):
        template = CellSpec(
            task=args.task, arch=args.arch, model_dir=args.model_dir, seed_table_path=seed_table, test_path=args.test,
            dev_path=args.dev, ingest_root=args.ingest_root, target=args.target, donor=None, seed=seed, hparams=hparams,
            out_path=args.runs_dir, device=args.device, config_hash=args.config_hash, threads=args.threads,
            artifacts=parse_artifacts(args.artifact), probe_path=args.probe or None,
        )
        done = run_cells(template, donors, Path(args.runs_dir), log=sys.stdout)
        for k, v in done.items():
            outcome[k] += v
    summary = {k: len(v) for k, v in outcome.items()}
    print(f"train-cells {args.task}/{args.arch}/{args.target}/seed{'+'.join(map(str, args.seeds))}: {summary} "
          f"in {time.perf_counter() - t0:.1f} s")
    if outcome["failed"]:
        # the finished cells are on disk; failing the job makes Snakemake retry (only) the failed ones
        print(f"cltm train-cells: error: {len(outcome['failed'])} cell(s) failed: {', '.join(outcome['failed'])} "
              f"(tracebacks in their failed.json)", file=sys.stderr)
        raise SystemExit(1)
    write_flag(Path(args.flag), Path(args.runs_dir), args.target, donors, args.seeds,
               outcome["trained"] + outcome["skipped"], args.config_hash)


def cmd_embed(args: argparse.Namespace) -> None:
    """Cache a frozen encoder's embeddings of one locale's utterances that the task uses (once per clip)."""
    # torch: only the commands that train or embed load it
    import torch

    from cltm_pipeline.models import get_architecture
    from cltm_pipeline.models.embeddings import cache_spec, update_cache
    from cltm_pipeline.training.cell import resolve_device
    from cltm_pipeline.training.hparams import check_hparams, hparam_extras

    hp = check_hparams(json.loads(args.hparams), hparam_extras(args.task, args.arch))
    torch.set_num_threads(args.threads or hp["threads"])
    architecture = get_architecture(args.arch)
    rows = pl.concat([read_manifest(Path(p)) for p in args.manifests]).filter(pl.col("locale") == args.locale)
    device = torch.device(resolve_device(args.device))
    spec = cache_spec(args.arch, Path(args.model_dir), args.locale, hp["max_seconds"], Path(args.ingest_root))
    t0 = time.perf_counter()
    embed = architecture.embedder(Path(args.model_dir), device)
    counts = update_cache(Path(args.out), spec, rows, embed, Path(args.ingest_root), hp["eval_batch_size"], device)
    print(f"embed {args.task}/{args.arch}/{args.locale}: {counts} in {time.perf_counter() - t0:.1f} s")


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``cltm`` subparsers."""
    s = sub.add_parser("prepare-model", help=cmd_prepare_model.__doc__)
    s.add_argument("--arch", required=True, help="registered architecture, e.g. mhubert")
    s.add_argument("--source", required=True, help="Hugging Face id, local directory, or 'tiny'")
    s.add_argument("--out", required=True, help="model directory to write")
    s.add_argument("--tiny", help="JSON object overriding the tiny config (source 'tiny' only)")
    s.set_defaults(func=cmd_prepare_model)

    s = sub.add_parser("train", help=cmd_train.__doc__)
    add_cell_arguments(s)
    s.add_argument("--seed-table", required=True, help="the target's seed table (parts single, extra, donor:*)")
    s.add_argument("--donor", required=True, help='donor locale; the target itself for self; "-" for single')
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out", required=True, help="metrics.json to write")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("train-cells", help=cmd_train_cells.__doc__)
    add_cell_arguments(s)
    s.add_argument("--seed-tables", "--seed-table", nargs="+", required=True, help="the target's seed table of each seed")
    s.add_argument("--donors", nargs="+", required=True, help='"-" (single), the target (self), other locales (dual)')
    s.add_argument("--seeds", "--seed", type=int, nargs="+", required=True, help="seeds, one worker for all of them")
    s.add_argument("--runs-dir", required=True, help="results/runs/<task>/<arch>")
    s.add_argument("--flag", required=True, help="file written when every cell is done")
    s.set_defaults(func=cmd_train_cells)

    s = sub.add_parser("embed", help=cmd_embed.__doc__)
    s.add_argument("--task", required=True)
    s.add_argument("--arch", required=True, help="an architecture with embedding_cache (e.g. speechllm)")
    s.add_argument("--model-dir", required=True)
    s.add_argument("--locale", required=True)
    s.add_argument("--manifests", nargs="+", required=True, help="evaluation sets and seed tables; rows of --locale are embedded")
    s.add_argument("--ingest-root", required=True)
    s.add_argument("--hparams", required=True, help="the architecture's hyper-parameters as JSON (max_seconds, eval_batch_size)")
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int)
    s.add_argument("--out", required=True, help="the cache manifest <locale>.json (shards go to <locale>.store/)")
    s.set_defaults(func=cmd_embed)
