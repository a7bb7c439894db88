"""The SpeechLLM SV grid of the demo with and without the frozen-encoder embedding cache.

    .venv/bin/python bench/speechllm_cache.py [--encoder demo|tiny-hubert|small-hubert] [--seeds 0 1 2 3]

Needs the demo's SV subsets and trials (`snakemake --cores 2 results/demo/matrices/sv/speechllm/cltm.tsv`,
or just the subsets). Runs every cell (single, self, duals) of every target and the given seeds in this
process, as the workers do, twice:

- cached: one `cltm embed` pass per locale (the workflow's embed rule: each utterance the task uses,
  once), then every cell reads the caches and trains only its pair MLP;
- uncached: every cell embeds its own training clips, dev and test sets with the frozen encoder.

Prints the wall time of each (the cached one including building the caches), their ratio, and the encoder
forward passes (utterances through the encoder) of each. ``--encoder demo`` uses the demo's model
(log-mel statistics, almost free to compute, so the cache saves little); ``tiny-hubert`` a random tiny
HuBERT (a real transformer encoder, still ~10^4 times smaller than the study's 2B model), where the
encoder's cost, which the cache removes, dominates as it does on the cluster; ``small-hubert`` a random
HuBERT of ~3M parameters (width 256, 4 layers), closer to that regime.

The cache cannot save more than its forward ratio: cells x clips per cell / distinct clips, 10x on the
demo's 4 seeds (the seeds' draws overlap in the small demo pools). Seeds beyond the demo's (``--seeds 0 1
... 9``) are drawn here with the protocol's own draw (``subsets.draw_seed``) into a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cltm_pipeline.protocol import CellSpec  # noqa: E402
from cltm_pipeline.training.worker import run_cells  # noqa: E402
from cltm_pipeline.models.embeddings import cache_spec, update_cache  # noqa: E402
from cltm_pipeline.config import load_config  # noqa: E402
from cltm_pipeline.io import read_manifest, write_tsv  # noqa: E402
from cltm_pipeline.models import get_architecture  # noqa: E402
from cltm_pipeline.models.speechllm import FORWARDS  # noqa: E402
from cltm_pipeline.data.subsets import draw_seed  # noqa: E402
from cltm_pipeline.tasks.sv import DEV_TRIALS, TRIALS  # noqa: E402
from cltm_pipeline.training.hparams import check_hparams, hparam_extras

REPO = Path(__file__).resolve().parents[1]


def grid(results: Path, tables: dict, languages: list[str], seeds: list[int], hp: dict, runs: Path,
         caches: dict[str, Path] | None, model_dir: Path) -> int:
    """Every cell of the grid; returns the number of cells trained."""
    n = 0
    for target in languages:
        d = results / "subsets" / "sv" / target
        arts = {TRIALS: d / TRIALS, DEV_TRIALS: d / DEV_TRIALS, **{f"emb:{k}": v for k, v in (caches or {}).items()}}
        for seed in seeds:
            cell = CellSpec(task="sv", arch="speechllm", model_dir=model_dir, seed_table_path=tables[target, seed],
                            test_path=d / "test.tsv", dev_path=d / "dev.tsv", ingest_root=results / "ingest",
                            target=target, donor=None, seed=seed, hparams=hp, out_path=runs, device="cpu", threads=1,
                            artifacts=arts)
            out = run_cells(cell, [None, *languages], runs, log=open(os.devnull, "w"))
            assert not out["failed"], out
            n += len(out["trained"])
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    p.add_argument("--encoder", choices=("demo", "tiny-hubert", "small-hubert"), default="demo")
    p.add_argument("--seeds", type=int, nargs="+", help="default: the demo's SV seeds")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    cfg = yaml.safe_load(Path(args.config).read_text())
    results = REPO / cfg["results"]
    sv = cfg["tasks"]["sv"]
    block = sv["architectures"]["speechllm"]
    languages = sv["languages"]
    seeds = args.seeds or list(range(sv["seeds"]) if isinstance(sv["seeds"], int) else sv["seeds"])
    hp = check_hparams(block["hparams"], hparam_extras("sv", "speechllm"))
    work = Path(tempfile.mkdtemp(prefix="speechllm-cache-"))
    arch = get_architecture("speechllm")
    if args.encoder == "demo":
        model_dir = REPO / "resources" / "models" / block["model"]
    elif args.encoder == "tiny-hubert":
        model_dir = arch.prepare("tiny", work / "tiny-hubert")
    else:
        model_dir = arch.prepare("tiny", work / "small-hubert", tiny={
            "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024,
            "conv_dim": [256, 256, 256, 256]})
    # the seed tables: the demo's, and any further seed drawn here exactly as the subsets rule would
    tables = {}
    spec = load_config(Path(args.config), root=REPO).subset_spec("sv")
    utterances = {loc: pl.read_parquet(results / "ingest" / loc / "utterances.parquet") for loc in languages}
    for t in languages:
        d = results / "subsets" / "sv" / t
        for seed in seeds:
            tables[t, seed] = d / f"seed{seed}.tsv"
            if not tables[t, seed].is_file():
                tables[t, seed] = work / "subsets" / t / f"seed{seed}.tsv"
                write_tsv(tables[t, seed], draw_seed(spec, t, seed, utterances, read_manifest(d / "test.tsv"),
                                                     read_manifest(d / "dev.tsv")))
    try:
        # cached: build the caches the way the embed rule does (each locale's rows of the eval sets and seed tables)
        t0 = time.perf_counter()
        f0 = FORWARDS["utterances"]
        embed = arch.embedder(model_dir, torch.device("cpu"))
        rows = pl.concat([read_manifest(q) for t in languages for q in
                          [results / "subsets" / "sv" / t / "test.tsv", results / "subsets" / "sv" / t / "dev.tsv",
                           *(tables[t, s] for s in seeds)]])
        caches = {}
        for loc in languages:
            caches[loc] = work / "emb" / f"{loc}.json"
            spec = cache_spec("speechllm", model_dir, loc, hp["max_seconds"], results / "ingest")
            update_cache(caches[loc], spec, rows.filter(pl.col("locale") == loc), embed, results / "ingest",
                         hp["eval_batch_size"], torch.device("cpu"))
        t_embed = time.perf_counter() - t0
        cells = grid(results, tables, languages, seeds, hp, work / "runs-cached", caches, model_dir)
        t_cached, f_cached = time.perf_counter() - t0, FORWARDS["utterances"] - f0

        t0, f0 = time.perf_counter(), FORWARDS["utterances"]
        grid(results, tables, languages, seeds, hp, work / "runs-uncached", None, model_dir)
        t_uncached, f_uncached = time.perf_counter() - t0, FORWARDS["utterances"] - f0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"speechllm SV grid, demo: {len(languages)} targets x {len(seeds)} seeds = {cells} cells; encoder {args.encoder} "
          f"({model_dir.name}), max_seconds {hp['max_seconds']}, 1 thread")
    print(f"  with cache:    {t_cached:7.1f} s wall (building the caches {t_embed:.1f} s), {f_cached:6d} encoder forwards")
    print(f"  without cache: {t_uncached:7.1f} s wall, {f_uncached:6d} encoder forwards")
    print(f"  ratio: {t_uncached / t_cached:.1f}x less wall time, {f_uncached / max(f_cached, 1):.1f}x fewer forwards with the cache")


if __name__ == "__main__":
    main()
