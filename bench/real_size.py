"""The study's models at their real size: setup, compute and memory per model, and a projected GPU budget
for config/paper.yaml.

    .venv/bin/python bench/real_size.py [--models mhubert147 ecapa siamese speechllm-2b] [--batch 4] [--repeats 2]
                                        [--device cpu|cuda] [--amp none|fp16|bf16] [--json out.json]

Each model is measured in its own process (so peak memory is its own), from random weights of the real
shapes in the hub's layout (tests/synthetic_models.py), through the same ``prepare`` and loading code a
cell uses:

- prepare: ``cltm prepare-model`` from the hub layout (speechllm-2b: reads only the audio encoder and
  connector; the bytes read and the checkpoint's size are printed);
- load: a cell's setup, the prepared directory into the task model (mHuBERT's classifier, the SV models,
  the frozen speechllm embedder);
- compute: a batch of ``--batch`` clips of 2 s: forward + backward + optimiser step for the models that
  train (mHuBERT-147, ECAPA, Siamese), forward without gradients for the frozen speechllm encoder; median
  of ``--repeats`` after one warm-up, and its FLOPs (torch's FlopCounterMode);
- peak RSS of the process.

The projection of GPU-hours for config/paper.yaml is arithmetic on the measured FLOPs per second of audio
and on stated assumptions (mean clip length, evaluation-set sizes, a sustained GPU throughput): a
projection, not a measurement. See ``project`` for every assumption; each is a flag.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

MODELS = ("mhubert147", "ecapa", "siamese", "speechllm-2b")
ARCH = {"mhubert147": "mhubert", "ecapa": "ecapa", "siamese": "siamese", "speechllm-2b": "speechllm"}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def measure(name: str, work: Path, batch: int, repeats: int, device: str, amp: str) -> dict:
    """One model's figures (run in a child process)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cltm_pipeline.models import get_architecture
    from synthetic_models import write_mhubert147, write_speechllm_2b

    torch.manual_seed(0)
    arch = get_architecture(ARCH[name])
    out: dict = {"model": name}
    t0 = time.perf_counter()
    if name == "mhubert147":
        source = str(write_mhubert147(work / "hub"))
    elif name == "speechllm-2b":
        hub = write_speechllm_2b(work / "hub")
        index = json.loads((hub / "model.safetensors.index.json").read_text())
        (hub / sorted(set(index["weight_map"].values()))[-1]).unlink()  # the LLM-only shard: never needed
        source = str(hub)
    else:
        source = "scratch"
    out["write_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model_dir = arch.prepare(source, work / "prepared")
    out["prepare_s"] = time.perf_counter() - t0
    info = json.loads((model_dir / "cltm_model.json").read_text())
    out["parameters"] = info["parameters"]
    if "read" in info:
        out["bytes_read"], out["checkpoint_bytes"] = info["read"]["bytes"], info["read"]["checkpoint_bytes"]

    dev = torch.device(device)
    t0 = time.perf_counter()
    if name == "speechllm-2b":
        embed = arch.embedder(model_dir, dev)
        model = None
    elif name == "mhubert147":
        model = arch.load(model_dir, 2).to(dev)
    else:
        model = arch.load_sv(model_dir, 8, {**arch.hparams}).to(dev)
    if device == "cuda":
        torch.cuda.synchronize()
    out["load_s"] = time.perf_counter() - t0

    waves = torch.randn(batch, 32000, device=dev) * 0.1
    lengths = torch.full((batch,), 32000, device=dev)
    labels = torch.arange(batch, device=dev) % 2
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5) if model is not None else None
    scaler = torch.amp.GradScaler(device, enabled=amp == "fp16") if model is not None else None

    def step() -> None:
        with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if model is None:
                embed(waves, lengths)
                return
            if name == "mhubert147":
                loss = torch.nn.functional.cross_entropy(model(waves, lengths), labels)
            elif model.objective == "speaker":
                loss = model.speaker_loss(waves, lengths, labels)
            else:
                e = model.embed(waves, lengths)
                loss = model.pair_loss(e[: batch // 2], e[batch // 2:], (labels[: batch // 2] == 0).float())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if not torch.isfinite(loss):
            raise RuntimeError(f"{name}: loss {loss.item()} with amp {amp}")

    def timed() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    counter = FlopCounterMode(display=False)
    with counter:
        step()  # the warm-up, counted
    out["flops"] = counter.get_total_flops()
    out["step_s"] = _median([timed() for _ in range(repeats)])
    out["audio_s"] = batch * 2.0
    out["trains"] = model is not None
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def project(figures: dict[str, dict], args: argparse.Namespace) -> list[dict]:
    """GPU-hours of config/paper.yaml from FLOPs per audio second and the assumptions in ``args``."""
    import yaml

    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    rows = []
    for task, block in paper["tasks"].items():
        langs, seeds = len(block["languages"]), int(block["seeds"])
        cells = langs * (langs + 1) * seeds  # per target: single, self, a dual per other locale
        for arch_key, a in block["architectures"].items():
            name = next((m for m, ar in ARCH.items() if ar == arch_key), None)
            fig = figures.get(name)
            if fig is None:
                continue
            hp = a.get("hparams", {})
            clip = min(args.clip_seconds, float(hp.get("max_seconds", hp.get("max_clip_seconds", args.clip_seconds))))
            # training audio per (target, seed): single n, self 2n, each dual n + n
            unit = block["regime"]["unit"]
            n = float(block["regime"]["n"]) * (3600.0 if unit == "hours" else clip)
            train_audio = seeds * langs * (n + 2 * n + (langs - 1) * 2 * n)
            epochs = int(hp.get("epochs", 1))
            eval_audio_per_cell = 2 * args.eval_clips * clip
            if task == "gender" and hp.get("eval_every"):  # dev every eval_every steps, test once
                steps = math.ceil(2 * float(block["regime"]["n"]) / int(hp.get("batch_size", 8)))
                evals = steps // int(hp["eval_every"]) + 1
                eval_audio_per_cell = args.eval_clips * clip * (1 + evals)
            elif task in ("sv", "asr"):  # dev after each epoch, test once
                eval_audio_per_cell = args.eval_clips * clip * (1 + epochs)
            flops_per_s = fig["flops"] / fig["audio_s"]
            if fig["trains"]:
                fwd_per_s = flops_per_s / 3  # backward ~ 2x forward
                total = train_audio * epochs * flops_per_s + cells * eval_audio_per_cell * fwd_per_s
            else:  # frozen encoder: each distinct utterance embedded once (rule embed); cells train an MLP
                utts = langs * (2 * args.eval_clips + min(args.pool_clips, seeds * 2 * float(block["regime"]["n"])))
                train_audio, total = utts * clip, utts * clip * flops_per_s
            throughput = args.tflops_fp16 if hp.get("fp16") else args.tflops
            compute_h = total / (throughput * 1e12) / 3600
            setup_h = cells * (fig["load_s"] + args.job_overhead_s) / 3600 if fig["trains"] else 0.0
            rows.append({"task": task, "arch": arch_key, "cells": cells, "train_audio_h": train_audio * (epochs if fig["trains"] else 1) / 3600,
                         "pflop": total / 1e15, "compute_gpu_h": compute_h, "setup_gpu_h": setup_h,
                         "gpu_h": compute_h + setup_h})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the figures and the projection here")
    ap.add_argument("--from-json", type=Path, help="skip the measurements; project from this file's figures")
    # projection assumptions
    ap.add_argument("--clip-seconds", type=float, default=5.0, help="mean Common Voice clip, before max_seconds crops")
    ap.add_argument("--eval-clips", type=int, default=2000, help="clips per test and per dev set of a target")
    ap.add_argument("--pool-clips", type=int, default=10000, help="most distinct training clips per locale the embed rule sees")
    ap.add_argument("--tflops", type=float, default=25.0, help="sustained fp32/TF32 TFLOP/s of one GPU on these models (~16 %% of an A100 peak)")
    ap.add_argument("--tflops-fp16", type=float, default=50.0, help="the same with fp16 autocast")
    ap.add_argument("--job-overhead-s", type=float, default=5.0, help="per-cell start-up beyond the model load")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:  # child: one model
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.one, args.work, args.batch, args.repeats, args.device, args.amp)))
        return

    if args.from_json:
        figures = json.loads(args.from_json.read_text())["figures"]
    else:
        figures = {}
        for name in args.models:
            work = Path(tempfile.mkdtemp(prefix=f"real-size-{name}-"))
            try:
                cmd = [sys.executable, __file__, "--one", name, "--work", str(work), "--batch", str(args.batch),
                       "--repeats", str(args.repeats), "--device", args.device, "--amp", args.amp,
                       "--threads", str(args.threads)]
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
                res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if res.returncode:
                    sys.exit(f"{name}: failed\n{res.stderr[-3000:]}")
                figures[name] = json.loads(res.stdout.strip().splitlines()[-1])
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(f"measured {name}", file=sys.stderr, flush=True)

    print(f"Real-size models on {args.device} ({args.threads} threads, amp {args.amp}); a batch: {args.batch} clips of 2 s\n")
    print(f"{'model':14} {'params':>8} {'prepare s':>9} {'load s':>7} {'step s':>7} {'s per audio s':>13} "
          f"{'GFLOP/audio s':>13} {'peak RSS GB':>11}  step")
    for name, f in figures.items():
        print(f"{name:14} {f['parameters'] / 1e6:7.1f}M {f['prepare_s']:9.1f} {f['load_s']:7.1f} {f['step_s']:7.2f} "
              f"{f['step_s'] / f['audio_s']:13.3f} {f['flops'] / f['audio_s'] / 1e9:13.1f} {f['peak_rss_mb'] / 1024:11.2f}  "
              + ("forward+backward+AdamW" if f["trains"] else "forward, no gradients (frozen)"))
        if "bytes_read" in f:
            print(f"{'':14} read {f['bytes_read'] / 1e9:.2f} GB of the {f['checkpoint_bytes'] / 1e9:.2f} GB checkpoint "
                  f"({100 * f['bytes_read'] / f['checkpoint_bytes']:.1f} %)")

    rows = project(figures, args)
    print(f"\nProjected GPU-hours for config/paper.yaml (a projection, not a measurement): FLOPs per audio second as "
          f"measured above; mean clip {args.clip_seconds} s (cropped to max_seconds); {args.eval_clips} clips per test "
          f"and dev set; dev evaluated as the hparams say; {args.tflops:.0f} TFLOP/s sustained ({args.tflops_fp16:.0f} "
          f"with fp16); per cell the measured load plus {args.job_overhead_s:.0f} s; speechllm: each distinct clip "
          f"(at most {args.pool_clips} training clips per locale) embedded once.\n")
    print(f"{'task':7} {'arch':10} {'cells':>7} {'train audio h':>13} {'PFLOP':>9} {'compute GPU-h':>13} {'setup GPU-h':>11} {'GPU-h':>8}")
    for r in rows:
        print(f"{r['task']:7} {r['arch']:10} {r['cells']:7d} {r['train_audio_h']:13.0f} {r['pflop']:9.0f} "
              f"{r['compute_gpu_h']:13.0f} {r['setup_gpu_h']:11.0f} {r['gpu_h']:8.0f}")
    total = sum(r["gpu_h"] for r in rows)
    print(f"{'total':7} {'':10} {sum(r['cells'] for r in rows):7d} {'':13} {sum(r['pflop'] for r in rows):9.0f} "
          f"{sum(r['compute_gpu_h'] for r in rows):13.0f} {sum(r['setup_gpu_h'] for r in rows):11.0f} {total:8.0f}")
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "projection": rows, "assumptions": {
            k: getattr(args, k) for k in ("clip_seconds", "eval_clips", "pool_clips", "tflops", "tflops_fp16", "job_overhead_s")}},
            indent=2) + "\n")


if __name__ == "__main__":
    main()
