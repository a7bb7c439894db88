"""Storage and time of fine-tuning footprints: per cell at the study's model sizes, and projected to a grid.

Measures the footprint step of a single cell (snapshot of the initial encoder, top-k mask, packing, index,
atomic write) on tensors of the study's shapes filled with random updates (the step's cost does not
depend on the values): mHuBERT-147 (HuBERT base: the Hugging Face default HubertConfig, built on the meta
device for its parameter names and shapes), and the from-scratch ECAPA-TDNN and Siamese networks through
their architectures' own loaders. Then counts the single cells of every (task, architecture) of a config
and projects the bytes stored. With ``--runs``, also reports what a finished run recorded per cell
(``footprint.bytes`` and ``timing.footprint_s`` against ``timing.compute_s`` in its metrics.json).

    PYTHONPATH=src .venv/bin/python bench/footprint_overhead.py [--config config/paper.yaml] [--runs results/demo/runs/gender/mhubert]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from cltm_pipeline.analysis.footprint import footprint_index, pack_masks, top_mask
from cltm_pipeline.io import write_bytes, write_json
from cltm_pipeline.models import get_architecture
from cltm_pipeline.training.footprint import ENCODER_PREFIXES, encoder_parameters
from cltm_pipeline.training.hparams import check_hparams, hparam_extras


def hubert_base_shapes(freeze_feature_encoder: bool) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of the trainable encoder parameters of a HuBERT-base classifier (mHuBERT-147's size)."""
    from transformers import HubertConfig, HubertModel  # local: only the mHuBERT shapes need transformers

    with torch.device("meta"):
        model = HubertModel(HubertConfig())
    return [(f"encoder.{n}", tuple(p.shape)) for n, p in model.named_parameters()
            if not (freeze_feature_encoder and n.startswith("feature_extractor."))]


def scratch_shapes(arch: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of the encoder parameters of a from-scratch SV architecture at its study size."""
    with tempfile.TemporaryDirectory() as tmp:
        a = get_architecture(arch)
        model_dir = a.prepare("scratch", Path(tmp) / arch)
        model = a.load_sv(model_dir, 100, check_hparams({}, hparam_extras("sv", arch)))
    return [(n, tuple(p.shape)) for n, p in encoder_parameters(model)]


def time_footprint(shapes: list[tuple[str, tuple[int, ...]]], top: float, repeats: int) -> dict[str, float]:
    """Seconds and bytes of the footprint step on random initial states and updates of these shapes."""
    rng = np.random.default_rng(0)
    names = [n for n, _ in shapes]
    init = [rng.standard_normal(s, dtype=np.float32) for _, s in shapes]
    final = [x + 1e-3 * rng.standard_normal(x.shape, dtype=np.float32) for x in init]
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            t0 = time.perf_counter()
            snap = [x.copy() for x in init]  # the snapshot before training
            deltas = [f - i for f, i in zip(final, snap)]
            masks = top_mask(deltas, top)
            bits = pack_masks(masks)
            index = footprint_index(names, snap, deltas, masks, top, bits)
            write_bytes(Path(tmp) / "footprint.bits", bits)
            write_json(Path(tmp) / "footprint.json", index)
            times.append(time.perf_counter() - t0)
            index_bytes = (Path(tmp) / "footprint.json").stat().st_size
    return {"params": sum(int(np.prod(s)) for _, s in shapes), "tensors": len(shapes), "bits_bytes": len(bits),
            "index_bytes": index_bytes, "seconds": statistics.median(times)}


def demo_record(runs: Path) -> dict[str, float]:
    """Per single cell of a finished run: footprint bytes, footprint seconds and training seconds."""
    recs = [json.loads(p.read_text()) for p in sorted(runs.glob("*/-/seed*/metrics.json"))]
    recs = [r for r in recs if "footprint" in r and "bytes" in r["footprint"]]
    if not recs:
        return {}
    fp = [r["timing"]["footprint_s"] for r in recs]
    comp = [r["timing"]["compute_s"] for r in recs]
    index = [(p.parent / "footprint.json").stat().st_size for p in sorted(runs.glob("*/-/seed*/metrics.json"))
             if (p.parent / "footprint.json").exists()]
    return {"cells": len(recs), "params": recs[0]["footprint"]["n_params"], "bits_bytes": recs[0]["footprint"]["bytes"],
            "index_bytes": statistics.median(index), "footprint_s": statistics.median(fp),
            "compute_s": statistics.median(comp), "overhead": statistics.median(f / c for f, c in zip(fp, comp))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/paper.yaml")
    ap.add_argument("--runs", help="a finished runs/<task>/<arch> directory to report per-cell figures from")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.runs:
        print("finished run", args.runs, json.dumps(demo_record(Path(args.runs))))
    cfg = yaml.safe_load(Path(args.config).read_text())
    per_arch: dict[tuple[str, bool], dict[str, float]] = {}
    total = 0
    print(f"encoder prefixes: {ENCODER_PREFIXES}")
    print("task\tarch\tsingle cells\tparams\tbits MB/cell\tindex KB/cell\tfootprint s/cell\tGB stored")
    for task, t in cfg["tasks"].items():
        cells = len(t["languages"]) * int(t["seeds"])
        for arch, a in t["architectures"].items():
            hp = check_hparams(a.get("hparams"), hparam_extras(task, arch))
            kind = cfg["models"][a["model"]]["arch"]
            if kind == "speechllm" or hp["footprint_top"] == 0:
                print(f"{task}\t{arch}\t{cells}\t-\tskipped (no fine-tuned encoder)" if kind == "speechllm" else
                      f"{task}\t{arch}\t{cells}\t-\tfootprint_top 0")
                continue
            key = (kind, bool(hp["freeze_feature_encoder"]))
            if key not in per_arch:
                shapes = hubert_base_shapes(key[1]) if kind == "mhubert" else scratch_shapes(kind)
                per_arch[key] = time_footprint(shapes, hp["footprint_top"], args.repeats)
            m = per_arch[key]
            stored = cells * (m["bits_bytes"] + m["index_bytes"])
            total += stored
            print(f"{task}\t{arch}\t{cells}\t{m['params']:,}\t{m['bits_bytes'] / 1e6:.2f}\t{m['index_bytes'] / 1e3:.1f}\t"
                  f"{m['seconds']:.2f}\t{stored / 1e9:.2f}")
    print(f"total stored: {total / 1e9:.2f} GB over the grid's single cells")


if __name__ == "__main__":
    main()
