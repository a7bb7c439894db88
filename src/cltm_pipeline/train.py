"""One CLTM cell end to end: fine-tune on the cell's training rows, select on dev, score on the target's test.

:func:`run_cell` is the single entry point for the laptop demo and the cluster; only the prepared model
directory and the hyper-parameters differ. Everything random is a function of the seed: the torch seed
(head initialisation, dropout), the numpy generators of data order and crops, and numpy's global state
(used by Hugging Face's SpecAugment masks). On CPU two runs with the same inputs give identical metrics.

Paired seeds: the cells of one target at one seed start from the same head initialisation and the same
generator states, so their differences (the CLTM's numerator and denominator) are not inflated by
initialisation noise that has nothing to do with the training data.

Resume: with ``checkpoint_every`` set, a cell writes ``checkpoint.pt`` beside its metrics.json every so
many steps (model, optimiser, scheduler, position in the epoch's permutation, best-so-far state, curves
and every RNG state). A rerun of a killed cell continues from it and ends with the metrics an
uninterrupted run would have had; a checkpoint written for other inputs is discarded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import polars as pl

from .audio import SAMPLE_RATE, AudioCache
from .config import ConfigError
from .io import read_manifest, write_json
from .probe import probe_model
from .subsets import SINGLE, cell_kind, cell_manifest

__all__ = [
    "HPARAM_DEFAULTS", "check_hparams", "hparam_extras", "run_cell", "add_train_parser", "add_prepare_parser",
    "Clips", "data_hash", "versions", "resolve_device", "device_description", "model_provenance", "seed_everything",
    "lr_factor",
]

#: Hyper-parameters a config may set, and their defaults (the study's where it had one: 1 epoch, lr 1e-5,
#: best checkpoint by dev macro-F1). ``eval_every``: evaluate dev every so many optimiser steps (None:
#: after each epoch; the last step is always evaluated). ``threads``: torch intra-op threads (1 lets two
#: cells share two cores). ``lr_schedule``: "linear" decay to 0 after ``warmup_ratio`` of the steps
#: (Hugging Face Trainer's default), or "constant". ``checkpoint_every``: write ``checkpoint.pt`` beside
#: metrics.json every so many optimiser steps (atomically), so a cell killed mid-training (time limit,
#: preemption, node failure) resumes there with the same final metrics as an uninterrupted run; None: no
#: checkpoints. It does not change the results; the checkpoint is deleted once metrics.json is written.
#: ``probe_clips``: clips per language of the held-out probe set (``cltm_pipeline.probe``) on which the
#: trained model's pooled embeddings are probed for language identity; 0: no probe.
HPARAM_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "lr": 1e-5,
    "batch_size": 8,
    "max_seconds": 5.0,
    "weight_decay": 0.0,
    "freeze_feature_encoder": True,
    "eval_every": None,
    "threads": 1,
    "max_grad_norm": 1.0,
    "lr_schedule": "linear",
    "warmup_ratio": 0.0,
    "eval_batch_size": 32,
    "checkpoint_every": None,
    "probe_clips": 0,
}


def check_hparams(hparams: Mapping[str, Any] | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults filled in; a misspelt or out-of-range key is a one-line ConfigError, not a silent default.

    ``extra``: the keys (with defaults) a task or architecture adds to :data:`HPARAM_DEFAULTS`."""
    hp = dict(hparams or {})
    defaults = {**HPARAM_DEFAULTS, **(extra or {})}
    unknown = sorted(set(hp) - set(defaults))
    if unknown:
        raise ConfigError(f"hparams: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(defaults))})")
    hp = {**defaults, **hp}
    positive = ("epochs", "lr", "batch_size", "max_seconds", "threads", "eval_batch_size")
    for key in positive:
        if not isinstance(hp[key], (int, float)) or isinstance(hp[key], bool) or hp[key] <= 0:
            raise ConfigError(f"hparams.{key}: must be a positive number, got {hp[key]!r}")
    for key in ("epochs", "batch_size", "threads", "eval_batch_size"):
        if int(hp[key]) != hp[key]:
            raise ConfigError(f"hparams.{key}: must be an integer, got {hp[key]!r}")
        hp[key] = int(hp[key])
    if hp["eval_every"] is not None and (not isinstance(hp["eval_every"], int) or hp["eval_every"] <= 0):
        raise ConfigError(f"hparams.eval_every: must be a positive integer or null, got {hp['eval_every']!r}")
    ce = hp["checkpoint_every"]
    if ce is not None and (not isinstance(ce, int) or isinstance(ce, bool) or ce <= 0):
        raise ConfigError(f"hparams.checkpoint_every: must be a positive integer or null, got {ce!r}")
    if hp["lr_schedule"] not in ("linear", "constant"):
        raise ConfigError(f"hparams.lr_schedule: must be 'linear' or 'constant', got {hp['lr_schedule']!r}")
    if not isinstance(hp["probe_clips"], int) or isinstance(hp["probe_clips"], bool) or hp["probe_clips"] < 0:
        raise ConfigError(f"hparams.probe_clips: must be a whole number >= 0, got {hp['probe_clips']!r}")
    if not 0 <= hp["warmup_ratio"] < 1:
        raise ConfigError(f"hparams.warmup_ratio: must be in [0, 1), got {hp['warmup_ratio']!r}")
    return hp


def hparam_extras(task: str, arch: str) -> dict[str, Any]:
    """The hyper-parameters (with defaults) a task and an architecture add to :data:`HPARAM_DEFAULTS`."""
    from .models import get_architecture
    from .tasks import get_task

    return {**get_task(task).hparams, **get_architecture(arch).hparams}


def _tsv_bytes(df: pl.DataFrame) -> bytes:
    return df.write_csv(separator="\t", quote_style="never", line_terminator="\n").encode("utf-8")


def data_hash(train: pl.DataFrame, test_path: Path, dev_path: Path, artifacts: Mapping[str, Path] | None = None) -> str:
    """SHA-256 over the cell's training rows, the test and dev manifests and the task's artifacts (what the
    metrics depend on)."""
    h = hashlib.sha256()
    parts = [("train", _tsv_bytes(train)), ("test", Path(test_path).read_bytes()), ("dev", Path(dev_path).read_bytes())]
    parts += [(f"artifact:{name}", Path(path).read_bytes()) for name, path in sorted((artifacts or {}).items())]
    for name, blob in parts:
        h.update(f"{name}\x1f{len(blob)}\x1f".encode())
        h.update(blob)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of what a cell's numbers depend on, recorded in every metrics.json."""
    import torch
    import transformers

    from . import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "cltm_pipeline": __version__,
    }


class Clips:
    """Audio of a manifest's rows, read through the per-locale caches, cropped or padded to a fixed length."""

    def __init__(self, rows: pl.DataFrame, ingest_root: Path):
        self.caches = {loc: AudioCache.open(str(Path(ingest_root) / loc / "audio.npy")) for loc in rows["locale"].unique().to_list()}
        self.locale = rows["locale"].to_list()
        self.offset = rows["offset"].to_list()
        self.length = rows["num_samples"].to_list()

    def batch(self, idx: np.ndarray, max_len: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """Clips ``idx`` as ``[B, max_len]`` float32 (zero-padded at the end) and their valid lengths.

        A clip longer than ``max_len`` is cropped: at a random start when ``rng`` is given (training),
        at the centre otherwise (evaluation, deterministic).
        """
        out = np.zeros((len(idx), max_len), dtype=np.float32)
        lengths = np.zeros(len(idx), dtype=np.int64)
        for k, i in enumerate(idx):
            n = self.length[i]
            if n > max_len:
                start = int(rng.integers(0, n - max_len + 1)) if rng is not None else (n - max_len) // 2
                n = max_len
            else:
                start = 0
            out[k, :n] = self.caches[self.locale[i]].get(self.offset[i] + start, n)
            lengths[k] = n
        return out, lengths


def _labels(rows: pl.DataFrame, column: str, labels: tuple[str, ...], what: str) -> np.ndarray:
    index = {lab: k for k, lab in enumerate(labels)}
    values = rows[column].to_list()
    bad = sorted({v for v in values if v not in index})
    if bad:
        raise ConfigError(f"{what}: {column} value(s) {bad[:3]} are not among the task's labels {list(labels)}")
    return np.array([index[v] for v in values], dtype=np.int64)


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when available, else CPU; anything else is taken as given."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def device_description(dev_t: Any, threads: int) -> str:
    """What metrics.json records as the device: the GPU's name, or the CPU thread count."""
    import torch

    if dev_t.type == "cuda":
        return f"{dev_t} ({torch.cuda.get_device_name(dev_t)})"
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch, numpy's global state (Hugging Face's SpecAugment) and ``random``; return the cell's
    own generator of data order and crops."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return np.random.default_rng([seed, 0x5EED])


def lr_factor(step: int, total_steps: int, warmup: int, schedule: str) -> float:
    """Multiplier of the learning rate at optimiser step ``step`` (from 0): linear warm-up over ``warmup``
    steps, then constant or linear decay to 0 at ``total_steps`` (Hugging Face Trainer's default)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


_versions, _resolve_device = versions, resolve_device  # former private names


# ------------------------------------------------------------------------------ checkpoints
#
# A checkpoint holds only tensors and plain Python values (no numpy objects), so it loads with
# ``torch.load(weights_only=True)``: no pickled code runs when a file left by a killed job is read.

#: Name of a cell's checkpoint, in the directory of its metrics.json (one cell per directory).
CHECKPOINT_NAME = "checkpoint.pt"
_CHECKPOINT_FORMAT = 1

#: Test hook: called with the step number after each optimiser step (and its evaluation and checkpoint).
_STEP_HOOK = None


def _rng_states(cuda: bool) -> dict[str, Any]:
    """Every random state training draws from: torch (CPU, CUDA), numpy's global state, python's ``random``."""
    import torch

    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda else None,
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])}},
        "python": random.getstate(),
    }


def _set_rng_states(states: Mapping[str, Any]) -> None:
    import torch

    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None:
        torch.cuda.set_rng_state_all(states["cuda"])
    np_state = dict(states["numpy"])
    np_state["state"] = {"key": np.array(np_state["state"]["key"], dtype=np.uint32), "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    random.setstate(states["python"])


def _save_checkpoint(path: Path, checkpoint: Mapping[str, Any]) -> None:
    """Write atomically and durably: a kill or node failure leaves the previous checkpoint or this one."""
    import torch

    from .io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(checkpoint, fh)
            fh.flush()
            os.fsync(fh.fileno())


def _load_checkpoint(path: Path, identity: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it exists and was written for ``identity``; else None (a stale or
    unreadable one is deleted, with a line on stderr)."""
    import torch

    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"not a format-{_CHECKPOINT_FORMAT} cell checkpoint")
    except Exception as exc:  # truncated by a failing disk, another torch version, not a checkpoint at all
        why = f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    else:
        theirs = checkpoint.get("identity") or {}
        differ = sorted(k for k in set(identity) | set(theirs) if identity.get(k) != theirs.get(k))
        if not differ:
            return checkpoint
        why = f"written for other inputs ({', '.join(differ)} differ)"
    print(f"{where}: {path}: {why}; discarded, training from the start", file=sys.stderr, flush=True)
    path.unlink(missing_ok=True)
    return None


def run_cell(
    task: str,
    arch: str,
    model_dir: Path,
    seed_table_path: Path,
    test_path: Path,
    dev_path: Path,
    ingest_root: Path,
    target: str,
    donor: str | None,
    seed: int,
    hparams: Mapping[str, Any],
    out_path: Path,
    device: str = "auto",
    config_hash: str = "",
    threads: int | None = None,
    predictions_out: Path | None = None,
    artifacts: Mapping[str, Path] | None = None,
    probe_path: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one cell; write ``metrics.json`` atomically at ``out_path`` and return its content.

    A task with its own runner (``Task.run``) gets every argument and does the same; ``artifacts`` are the
    task's declared artifacts by name (part of the data hash). ``probe_path``: the task's probe set, on
    which the trained model is probed for language identity when ``hparams.probe_clips`` > 0.

    ``donor`` None is the single cell, ``donor == target`` the self cell, any other locale a dual cell.
    ``threads`` overrides ``hparams["threads"]``. ``predictions_out``, if given, receives the test set's
    per-clip predictions as a TSV (utt_id, client_id, label, prediction) for error analysis.

    If ``checkpoint.pt`` in ``out_path``'s directory was written for the same cell, data, hparams (but
    ``checkpoint_every``), config hash, model, versions and device, training continues from it
    (``resumed_from_step`` in the result); it is deleted once metrics.json is written. One cell per directory.
    """
    t_start = time.perf_counter()
    import torch

    from .models import get_architecture
    from .tasks import get_task

    spec = get_task(task)
    architecture = get_architecture(arch)
    if spec.run is not None:
        return spec.run(
            task=task, arch=arch, model_dir=model_dir, seed_table_path=seed_table_path, test_path=test_path,
            dev_path=dev_path, ingest_root=ingest_root, target=target, donor=donor, seed=seed, hparams=hparams,
            out_path=out_path, device=device, config_hash=config_hash, threads=threads,
            predictions_out=predictions_out, artifacts=dict(artifacts or {}), probe_path=probe_path,
        )
    hp = check_hparams(hparams, hparam_extras(task, arch))
    if threads is not None:
        hp["threads"] = int(threads)
    where = f"{task}/{arch}/{target}/{donor or '-'}/seed{seed}"

    torch.set_num_threads(hp["threads"])
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, read at CUDA start
    torch.use_deterministic_algorithms(True, warn_only=True)
    dev_name = resolve_device(device)
    dev_t = torch.device(dev_name)

    # Data: the cell's training rows and the target's fixed evaluation sets.
    seed_table = read_manifest(Path(seed_table_path))
    train_rows = cell_manifest(seed_table, target, donor)
    test_rows, dev_rows = read_manifest(Path(test_path)), read_manifest(Path(dev_path))
    for name, rows in (("test", test_rows), ("dev", dev_rows)):
        if set(rows["locale"].unique().to_list()) != {target}:
            raise ConfigError(f"{where}: the {name} set holds clips of {sorted(rows['locale'].unique().to_list())}, not only {target}")
    y_train = _labels(train_rows, spec.label_column, spec.labels, f"{where} training rows")
    y_test = _labels(test_rows, spec.label_column, spec.labels, f"{where} test set")
    y_dev = _labels(dev_rows, spec.label_column, spec.labels, f"{where} dev set")
    train_clips = Clips(train_rows, ingest_root)
    max_len = int(round(hp["max_seconds"] * SAMPLE_RATE))

    def eval_tensors(rows: pl.DataFrame) -> list[tuple[Any, Any]]:
        clips = Clips(rows, ingest_root)
        out = []
        for lo in range(0, rows.height, hp["eval_batch_size"]):
            x, n = clips.batch(np.arange(lo, min(lo + hp["eval_batch_size"], rows.height)), max_len, None)
            out.append((torch.from_numpy(x), torch.from_numpy(n)))  # moved to the device batch by batch
        return out

    dev_batches, test_batches = eval_tensors(dev_rows), eval_tensors(test_rows)

    # A checkpoint is resumed only if it was written for exactly these inputs; checkpoint_every itself
    # does not change the results, so changing it keeps the checkpoint.
    device_desc = device_description(dev_t, hp["threads"])
    identity = {
        "task": task, "arch": arch, "target": target, "donor": donor, "seed": seed,
        "data_hash": data_hash(train_rows, Path(test_path), Path(dev_path), artifacts), "config_hash": config_hash,
        "hparams": {k: v for k, v in hp.items() if k != "checkpoint_every"},
        "model": model_provenance(Path(model_dir)), "versions": {k: str(v) for k, v in versions().items()},
        "device": device_desc if dev_t.type == "cuda" else "cpu",  # CPU threads are in hparams
    }
    ckpt_path = Path(out_path).parent / CHECKPOINT_NAME
    checkpoint = _load_checkpoint(ckpt_path, identity, where)

    # Everything random from here on is a function of the seed.
    rng = seed_everything(seed)
    model = architecture.load(Path(model_dir), len(spec.labels), freeze_feature_encoder=hp["freeze_feature_encoder"]).to(dev_t)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    steps_per_epoch = -(-len(y_train) // hp["batch_size"])
    total_steps = steps_per_epoch * hp["epochs"]
    warmup = int(hp["warmup_ratio"] * total_steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_factor(step, total_steps, warmup, hp["lr_schedule"]))
    loss_fn = torch.nn.CrossEntropyLoss()

    def predict(batches: list[tuple[Any, Any]]) -> np.ndarray:
        model.eval()
        preds = []
        with torch.no_grad():
            for x, n in batches:
                preds.append(model(x.to(dev_t), n.to(dev_t)).argmax(-1).cpu().numpy())
        model.train()
        return np.concatenate(preds)

    def score(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        names = np.array(spec.labels, dtype=object)
        return dict(spec.evaluate(names[y], names[pred]))

    def cpu_state() -> dict[str, Any]:
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    # Training state: step, position (epoch, permutation, next row) and what has been recorded so far.
    step, epoch, pos, order = 0, 0, 0, None
    losses: list[float] = []  # of the current epoch
    epoch_loss: list[float] = []
    best: dict[str, Any] = {"score": -np.inf, "step": 0, "state": None}
    curve: list[list[float]] = []
    resumed_from = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        t = checkpoint["training"]
        step, epoch, pos = t["step"], t["epoch"], t["pos"]
        order = None if t["order"] is None else t["order"].numpy()
        losses, epoch_loss, curve = list(t["losses"]), list(t["epoch_loss"]), [list(c) for c in t["curve"]]
        best_state = cpu_state() if t["best_is_current"] else t["best_state"]
        best = {"score": t["best_score"], "step": t["best_step"], "state": best_state}
        _set_rng_states(checkpoint["rng"])
        rng.bit_generator.state = checkpoint["rng"]["generator"]
        resumed_from = step
        del checkpoint, t
        print(f"{where}: resuming from {ckpt_path} at step {step} of {total_steps}", file=sys.stderr, flush=True)

    def save_checkpoint() -> None:
        # best["state"] is a copy of the model when dev was just evaluated: stored once, not twice
        best_is_current = best["state"] is not None and best["step"] == step
        _save_checkpoint(ckpt_path, {
            "format": _CHECKPOINT_FORMAT,
            "identity": identity,
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "training": {
                "step": step, "epoch": epoch, "pos": pos,
                "order": None if order is None else torch.from_numpy(order),
                "losses": list(losses), "epoch_loss": list(epoch_loss),
                "curve": [[int(s), float(v)] for s, v in curve],
                "best_score": float(best["score"]), "best_step": int(best["step"]),
                "best_state": None if best_is_current else best["state"], "best_is_current": best_is_current,
            },
            "rng": {**_rng_states(dev_t.type == "cuda"), "generator": rng.bit_generator.state},
        })

    def step_done() -> None:
        """Everything of ``step`` is done (its evaluation, its epoch's end): checkpoint if due."""
        if step and hp["checkpoint_every"] and step % hp["checkpoint_every"] == 0 and step < total_steps:
            save_checkpoint()
        if _STEP_HOOK is not None:
            _STEP_HOOK(step)

    setup_s = time.perf_counter() - t_start
    t_compute = time.perf_counter()
    model.train()

    def evaluate_dev(step: int) -> None:
        value = score(y_dev, predict(dev_batches))[spec.primary]
        curve.append([step, value])
        if value > best["score"]:  # strict: ties keep the earlier (less trained) state
            best.update(score=value, step=step, state=cpu_state())

    while epoch < hp["epochs"]:
        if order is None:
            order = rng.permutation(len(y_train))
            losses = []
        while pos < len(order):
            idx = order[pos : pos + hp["batch_size"]]
            x, n = train_clips.batch(idx, max_len, rng)
            logits = model(torch.from_numpy(x).to(dev_t), torch.from_numpy(n).to(dev_t))
            loss = loss_fn(logits, torch.from_numpy(y_train[idx]).to(dev_t))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if hp["max_grad_norm"]:
                torch.nn.utils.clip_grad_norm_(params, hp["max_grad_norm"])
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()) * len(idx))
            step += 1
            pos += hp["batch_size"]
            if hp["eval_every"] and step % hp["eval_every"] == 0 and step != total_steps:
                evaluate_dev(step)
            if pos < len(order):
                step_done()  # (an epoch's last step is done after the epoch's end below)
        epoch_loss.append(sum(losses) / len(order))
        if not hp["eval_every"] or step == total_steps:
            evaluate_dev(step)
        epoch, pos, order, losses = epoch + 1, 0, None, []
        step_done()

    model.load_state_dict(best["state"])
    test_pred = predict(test_batches)
    test_scores = score(y_test, test_pred)
    compute_s = time.perf_counter() - t_compute
    probe = probe_model(model.embed, probe_path, ingest_root, hp["probe_clips"], max_len, hp["eval_batch_size"], dev_t, seed)

    result = cell_record(
        task=task, arch=arch, target=target, donor=donor, seed=seed, train_rows=train_rows, hparams=hp,
        timing={"setup_s": round(setup_s, 3), "compute_s": round(compute_s, 3)}, device=device_desc,
        data_hash=identity["data_hash"], model=identity["model"], versions=identity["versions"],
        config_hash=config_hash, probe=probe,
        metrics={**test_scores, f"dev_{spec.primary}": float(best["score"])},
        primary_metric=spec.primary,
        n_test=len(y_test),
        n_dev=len(y_dev),
        training={"steps": step, "best_step": best["step"], "dev_curve": curve, "train_loss": epoch_loss},
        resumed_from_step=resumed_from,  # timing then covers the resumed part only
    )
    if predictions_out is not None:
        from .io import write_tsv

        names = np.array(spec.labels, dtype=object)
        write_tsv(Path(predictions_out), test_rows.select("utt_id", "client_id").with_columns(
            pl.Series("label", names[y_test].tolist()), pl.Series("prediction", names[test_pred].tolist())))
    write_json(Path(out_path), result)
    ckpt_path.unlink(missing_ok=True)  # only unfinished cells keep one
    return result


def cell_record(
    *, task: str, arch: str, target: str, donor: str | None, seed: int, train_rows: pl.DataFrame,
    hparams: Mapping[str, Any], timing: Mapping[str, Any], device: str, data_hash: str, model: Mapping[str, Any],
    versions: Mapping[str, str], config_hash: str, probe: Mapping[str, Any] | None = None, **fields: Any,
) -> dict[str, Any]:
    """A cell's metrics.json: the keys every task writes (identity, training sizes, provenance; ``probe`` if
    there is one) plus the task's own ``fields`` (metrics, primary_metric, n_test, training, ...)."""
    record = {
        "task": task, "arch": arch, "target": target, "donor": donor, "cell": cell_kind(target, donor), "seed": seed,
        "n_train": train_rows.height,
        "n_train_by_locale": {k: int(v) for k, v in sorted(train_rows.group_by("locale").len().iter_rows())},
        "hparams": dict(hparams), "timing": dict(timing), "device": device, "data_hash": data_hash,
        "model": dict(model), "versions": dict(versions), "config_hash": config_hash, **fields,
    }
    if probe is not None:
        record["probe"] = probe
    return record


def model_provenance(model_dir: Path) -> dict[str, Any]:
    """Source and weight hashes of the prepared model, as ``prepare`` recorded them."""
    path = model_dir / "cltm_model.json"
    if not path.is_file():
        return {"dir": str(model_dir)}
    info = json.loads(path.read_text(encoding="utf-8"))
    return {k: info[k] for k in ("arch", "source", "revision", "weights") if k in info}


# ----------------------------------------------------------------------------------------- CLI


def _json_arg(text: str, what: str) -> Any:
    """A JSON argument given inline or as ``@path``."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what}: not valid JSON ({exc})") from None


def _model_error_exit(command: str, exc: Exception) -> None:
    print(f"cltm {command}: error: {exc}", file=sys.stderr)
    raise SystemExit(2)


def cmd_train(args: argparse.Namespace) -> None:
    """Train and evaluate one CLTM cell; write its metrics.json."""
    from .models import ModelError

    from .batch import parse_artifacts

    hparams = _json_arg(args.hparams, "--hparams")
    if not isinstance(hparams, dict):
        raise ConfigError("--hparams: must be a JSON object")
    donor = None if args.donor in (SINGLE, "") else args.donor
    try:
        res = run_cell(
            task=args.task, arch=args.arch, model_dir=Path(args.model_dir), seed_table_path=Path(args.seed_table),
            test_path=Path(args.test), dev_path=Path(args.dev), ingest_root=Path(args.ingest_root),
            target=args.target, donor=donor, seed=args.seed, hparams=hparams, out_path=Path(args.out),
            device=args.device, config_hash=args.config_hash, threads=args.threads,
            artifacts=parse_artifacts(args.artifact), probe_path=Path(args.probe) if args.probe else None,
        )
    except ModelError as exc:
        _model_error_exit("train", exc)
    m = res["metrics"]
    print(
        f"{args.task}/{args.arch}/{args.target}/{args.donor}/seed{args.seed} ({res['cell']}, n_train {res['n_train']}): "
        + ", ".join(f"{k} {v:.4f}" for k, v in sorted(m.items()))
        + f"; setup {res['timing']['setup_s']:.1f} s, compute {res['timing']['compute_s']:.1f} s on {res['device']}"
    )


def cmd_prepare_model(args: argparse.Namespace) -> None:
    """Write a model directory (Hugging Face layout) from a hub id, a local directory or 'tiny'."""
    from .models import ModelError, get_architecture

    tiny = _json_arg(args.tiny, "--tiny") if args.tiny else None
    if tiny is not None and not isinstance(tiny, dict):
        raise ConfigError("--tiny: must be a JSON object")
    t0 = time.perf_counter()
    try:
        out = get_architecture(args.arch).prepare(args.source, Path(args.out), tiny=tiny)
    except ModelError as exc:
        _model_error_exit("prepare-model", exc)
    info = json.loads((out / "cltm_model.json").read_text(encoding="utf-8"))
    print(f"prepare-model {args.arch}: {args.source} -> {out} ({info.get('parameters', '?')} parameters, {time.perf_counter() - t0:.1f} s)")


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``cltm train`` to the ``cltm`` subparsers."""
    s = subparsers.add_parser("train", help=cmd_train.__doc__)
    s.add_argument("--task", required=True)
    s.add_argument("--arch", required=True)
    s.add_argument("--model-dir", required=True, help="directory written by `cltm prepare-model`")
    s.add_argument("--seed-table", required=True, help="the target's seed table (parts single, extra, donor:*)")
    s.add_argument("--test", required=True, help="the target's test manifest")
    s.add_argument("--dev", required=True, help="the target's dev manifest")
    s.add_argument("--ingest-root", required=True, help="directory holding <locale>/audio.npy")
    s.add_argument("--target", required=True)
    s.add_argument("--donor", required=True, help='donor locale; the target itself for self; "-" for single')
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--hparams", required=True, help="hyper-parameters as a JSON object (or @file.json)")
    s.add_argument("--config-hash", default="", help="hash of the config, recorded in metrics.json")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: %(default)s)")
    s.add_argument("--threads", type=int, help="torch threads (overrides hparams.threads)")
    s.add_argument("--artifact", action="append", default=[], metavar="NAME=PATH", help="a task artifact (repeatable)")
    s.add_argument("--probe", help="the task's probe set (used when hparams.probe_clips > 0)")
    s.add_argument("--out", required=True, help="metrics.json to write")
    s.set_defaults(func=cmd_train)
    return s


def add_prepare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``cltm prepare-model`` to the ``cltm`` subparsers."""
    s = subparsers.add_parser("prepare-model", help=cmd_prepare_model.__doc__)
    s.add_argument("--arch", required=True, help="registered architecture, e.g. mhubert")
    s.add_argument("--source", required=True, help="Hugging Face id, local directory, or 'tiny'")
    s.add_argument("--out", required=True, help="model directory to write")
    s.add_argument("--tiny", help="JSON object overriding the tiny config (source 'tiny' only)")
    s.set_defaults(func=cmd_prepare_model)
    return s
