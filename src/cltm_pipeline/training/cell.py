"""One CLTM cell end to end: read its data, train through the one loop, select on dev, score on the test set.

:func:`run_cell` is the single entry point for the laptop demo and the cluster, for every task; only the
prepared model directory and the hyper-parameters differ. Everything random is a function of the seed: the
torch seed (head initialisation, dropout), the numpy generators of data order and crops, and numpy's global
state (used by Hugging Face's SpecAugment masks). On CPU two runs with the same inputs give identical metrics.

Paired seeds: the cells of one target at one seed start from the same head initialisation and the same
generator states, so their differences (the CLTM's numerator and denominator) are not inflated by
initialisation noise that has nothing to do with the training data.

Resume: see :mod:`cltm_pipeline.training.loop`. The checkpoint is resumed only if it was written for the
same cell, data, hparams (but ``RESULT_NEUTRAL`` ones, which do not change results), config hash, model,
versions and device; it is deleted once metrics.json is written.
"""

from __future__ import annotations

import hashlib
import os
import platform
import random
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import polars as pl
import torch
import transformers

from cltm_pipeline import __version__
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.io import read_manifest, write_json
from cltm_pipeline.data.subsets import cell_manifest
from cltm_pipeline.protocol import CellSpec
from cltm_pipeline.models import model_provenance
from cltm_pipeline.tasks import CellData, get_task
from cltm_pipeline.training.checkpoint import CHECKPOINT_NAME, Checkpoints
from cltm_pipeline.training.footprint import snapshot, write_footprint
from cltm_pipeline.training.hparams import check_hparams, hparam_extras, result_hparams
from cltm_pipeline.training.loop import fit
from cltm_pipeline.training.probe import probe_model

__all__ = ["run_cell", "read_cell_data", "cell_record", "data_hash", "versions", "resolve_device",
           "device_description", "seed_everything"]


def run_cell(spec: CellSpec) -> dict[str, Any]:
    """Train and evaluate one cell; write its ``metrics.json`` atomically at ``spec.out_path`` and return it.

    If ``checkpoint.pt`` beside it was written for the same inputs, training continues from it
    (``resumed_from_step`` in the result; timing then covers the resumed part only)."""
    t_start = time.perf_counter()
    task = get_task(spec.task)
    hp = check_hparams(spec.hparams, hparam_extras(spec.task, spec.arch))
    if task.check_hparams is not None:
        task.check_hparams(hp)
    if spec.threads is not None:
        hp["threads"] = int(spec.threads)
    device = _torch_setup(hp, spec.device)
    data = read_cell_data(spec)
    cell = task.make_cell(spec, hp, data, device)
    device_desc = device_description(device, hp["threads"]) + cell.device_note()
    checkpoints = Checkpoints(spec.out_path.parent / CHECKPOINT_NAME, _identity(spec, hp, data, device, device_desc),
                              spec.where)
    checkpoint = checkpoints.load()
    rng = seed_everything(spec.seed)  # everything random from here on is a function of the seed
    cell.build(rng)
    # a single cell's footprint needs the initial encoder state (a function of the seed, also on resume)
    footprint_on = hp["footprint_top"] > 0 and spec.kind == "single"
    t_fp = time.perf_counter()
    initial = snapshot(cell.model) if footprint_on else None
    footprint_s = time.perf_counter() - t_fp
    state = fit(cell, hp, rng, checkpoints, checkpoint)
    del checkpoint
    fields = cell.test(state.best_extra)
    if initial is not None:
        t_fp = time.perf_counter()
        fields["footprint"] = write_footprint(cell.model, initial, hp["footprint_top"], spec.out_path, spec.where)
        footprint_s += time.perf_counter() - t_fp
        del initial
    compute_s = time.perf_counter() - state.loop_started
    embed, max_len = cell.probe_input()
    probe = probe_model(embed, spec.probe_path if embed is not None else None, spec.ingest_root, hp["probe_clips"],
                        max_len, hp["eval_batch_size"], device, spec.seed)
    result = cell_record(spec, cell.train_rows, hp,
                         timing={"setup_s": round(state.loop_started - t_start, 3), "compute_s": round(compute_s, 3),
                                 **({"footprint_s": round(footprint_s, 3)} if footprint_on else {}), **cell.timing()},
                         device=device_desc, identity=checkpoints.identity, probe=probe,
                         **fields, training={**cell.training_info(), **state.training()},
                         resumed_from_step=state.resumed_from)
    if spec.predictions_out is not None:
        cell.write_predictions(spec.predictions_out)
    write_json(spec.out_path, result)
    checkpoints.remove()
    return result


def _torch_setup(hp: Mapping[str, Any], device: str) -> Any:
    """Threads, deterministic kernels and the device of a cell."""
    torch.set_num_threads(hp["threads"])
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, read at CUDA start
    torch.use_deterministic_algorithms(True, warn_only=True)  # CTC's CUDA backward has no deterministic kernel
    return torch.device(resolve_device(device))


def read_cell_data(spec: CellSpec) -> CellData:
    """The cell's training rows and the target's evaluation sets (which hold only the target's clips)."""
    train = cell_manifest(read_manifest(spec.seed_table_path), spec.target, spec.donor)
    test, dev = read_manifest(spec.test_path), read_manifest(spec.dev_path)
    for name, rows in (("test", test), ("dev", dev)):
        if set(rows["locale"].unique().to_list()) != {spec.target}:
            raise ConfigError(f"{spec.where}: the {name} set holds clips of {sorted(rows['locale'].unique().to_list())}, "
                              f"not only {spec.target}")
    return CellData(train=train, test=test, dev=dev)


def _identity(spec: CellSpec, hp: Mapping[str, Any], data: CellData, device: Any, device_desc: str) -> dict[str, Any]:
    """What a cell's results depend on: a checkpoint is resumed only if it was written for exactly this."""
    return {
        "task": spec.task, "arch": spec.arch, "target": spec.target, "donor": spec.donor, "seed": spec.seed,
        "data_hash": data_hash(data.train, spec.test_path, spec.dev_path, spec.artifacts), "config_hash": spec.config_hash,
        "hparams": result_hparams(hp),
        "model": model_provenance(spec.model_dir), "versions": {k: str(v) for k, v in versions().items()},
        "device": device_desc if device.type == "cuda" else "cpu",  # CPU threads are in hparams
    }


def cell_record(spec: CellSpec, train_rows: pl.DataFrame, hparams: Mapping[str, Any], *, timing: Mapping[str, Any],
                device: str, identity: Mapping[str, Any], probe: Mapping[str, Any] | None = None,
                **fields: Any) -> dict[str, Any]:
    """A cell's metrics.json: the keys every task writes (identity, training sizes, provenance; ``probe`` if
    there is one) plus the task's own ``fields`` (metrics, primary_metric, n_test, training, ...)."""
    record = {
        "task": spec.task, "arch": spec.arch, "target": spec.target, "donor": spec.donor,
        "cell": spec.kind, "seed": spec.seed, "n_train": train_rows.height,
        "n_train_by_locale": {k: int(v) for k, v in sorted(train_rows.group_by("locale").len().iter_rows())},
        "hparams": dict(hparams), "timing": dict(timing), "device": device, "data_hash": identity["data_hash"],
        "model": dict(identity["model"]), "versions": dict(identity["versions"]), "config_hash": spec.config_hash,
        **fields,
    }
    if probe is not None:
        record["probe"] = probe
    return record


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
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "cltm_pipeline": __version__,
    }


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when available, else CPU; anything else is taken as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def device_description(dev_t: Any, threads: int) -> str:
    """What metrics.json records as the device: the GPU's name, or the CPU thread count."""
    if dev_t.type == "cuda":
        return f"{dev_t} ({torch.cuda.get_device_name(dev_t)})"
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch, numpy's global state (Hugging Face's SpecAugment) and ``random``; return the cell's
    own generator of data order and crops."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return np.random.default_rng([seed, 0x5EED])
