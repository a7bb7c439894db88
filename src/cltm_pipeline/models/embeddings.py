"""Per-utterance embedding cache of frozen encoders (architectures with ``embedding_cache = True``).

A frozen encoder's embedding of a clip depends on the clip, the prepared model and the crop length only,
never on the cell or seed, so the workflow computes it once per utterance (rule ``embed``, one job per
(task, arch, locale)) and every cell of every seed reads it back.

On disk, beside the manifest ``<locale>.json`` that the rule declares as its output, the store
``<locale>.store/`` holds append-only shards, each ``shard-NNNN.npy`` (``[rows, D]`` float32, memory-mapped
on read, so a cell reads only the rows it uses) with its index ``shard-NNNN.json`` (spec hash and utterance
ids, written last: a shard without its index is ignored), and ``stats.json`` (utterances held, encoder
forward passes per run). A rerun (a new seed, a new language
adding rows) embeds only the utterances no shard holds yet; a shard written for another model, crop or
ingest is ignored. The manifest holds only what the embeddings depend on (model provenance, crop,
pooling, the locale's ingest summary), so it stays byte-identical as the store grows: cells hash the
manifest into their data hash (a few hundred bytes), not gigabytes of vectors, and adding seeds does not
make finished cells stale.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl
import torch

from cltm_pipeline.data.audio import SAMPLE_RATE, Clips
from cltm_pipeline.models.registry import model_provenance
from cltm_pipeline.io import write_json, write_npy
from cltm_pipeline.progress import Progress

__all__ = ["cache_spec", "embed_rows", "update_cache", "load_cache", "store_dir"]

_FORMAT = 1
#: Clips embedded between progress lines.
_PROGRESS_BLOCK = 512


def store_dir(manifest: Path) -> Path:
    """The shard directory of a cache manifest."""
    return Path(manifest).with_suffix(".store")


def cache_spec(arch: str, model_dir: Path, locale: str, max_seconds: float, ingest_root: Path) -> dict[str, Any]:
    """What a locale's cached embeddings depend on (written as the manifest, hashed by every cell)."""
    summary = Path(ingest_root) / locale / "ingest.json"
    ingest = hashlib.sha256(summary.read_bytes()).hexdigest() if summary.is_file() else None
    return {"format": _FORMAT, "arch": arch, "model": model_provenance(Path(model_dir)), "locale": locale,
            "max_seconds": float(max_seconds), "pooling": "mean of the last hidden state over valid frames",
            "ingest": ingest}


def embed_rows(embed: Callable[..., Any], rows: pl.DataFrame, ingest_root: Path, max_seconds: float,
               batch_size: int, device: Any) -> np.ndarray:
    """Embeddings ``[rows, D]`` (float32) of ``rows`` by the frozen ``embed(waves, lengths)``; clips longer
    than ``max_seconds`` are centre-cropped (the evaluation crop of training)."""
    if rows.height == 0:
        return np.zeros((0, 0), dtype=np.float32)
    clips = Clips(rows, ingest_root)
    max_len = int(max_seconds * SAMPLE_RATE)
    out = []
    for lo in range(0, rows.height, batch_size):
        x, n = clips.batch(np.arange(lo, min(lo + batch_size, rows.height)), max_len, None)
        out.append(embed(torch.from_numpy(x).to(device), torch.from_numpy(n).to(device)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def _shards(manifest: Path, spec_hash: str) -> list[tuple[Path, list[str]]]:
    """The store's complete shards written for ``spec_hash``: (embedding .npy, its utterance ids)."""
    out = []
    for index in sorted(store_dir(manifest).glob("shard-*.json")):
        meta = json.loads(index.read_text(encoding="utf-8"))
        if meta["spec"] == spec_hash:
            out.append((index.with_suffix(".npy"), meta["utt_id"]))
    return out


def _spec_hash(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def update_cache(manifest: Path, spec: Mapping[str, Any], rows: pl.DataFrame, embed: Callable[..., Any],
                 ingest_root: Path, batch_size: int, device: Any) -> dict[str, int]:
    """Embed the rows of ``rows`` (one locale) that the store does not hold yet; write the manifest.
    Returns counts: requested, already cached, embedded now."""
    manifest = Path(manifest)
    sh = _spec_hash(spec)
    have: set[str] = set()
    for _, ids in _shards(manifest, sh):
        have.update(ids)
    rows = rows.unique("utt_id", keep="first").sort("utt_id")
    todo = rows.filter(~pl.col("utt_id").is_in(list(have)))
    if todo.height:
        d = store_dir(manifest)
        d.mkdir(parents=True, exist_ok=True)
        k = 1 + max((int(p.stem.split("-")[1]) for p in d.glob("shard-*.*")), default=-1)
        progress = Progress(f"embed {spec['locale']}", todo.height, "clips")
        parts, block = [], batch_size * max(1, _PROGRESS_BLOCK // batch_size)  # whole batches: same bytes as one call
        for lo in range(0, todo.height, block):
            parts.append(embed_rows(embed, todo.slice(lo, block), ingest_root, spec["max_seconds"], batch_size, device))
            progress.update(min(block, todo.height - lo))
        progress.finish()
        write_npy(d / f"shard-{k:04d}.npy", np.concatenate(parts).astype(np.float32))
        write_json(d / f"shard-{k:04d}.json", {"spec": sh, "utt_id": todo["utt_id"].to_list()})  # last: marks it complete
    counts = {"requested": rows.height, "cached": rows.height - todo.height, "embedded": todo.height,
              "held": len(have) + todo.height}
    stats_path = store_dir(manifest) / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {"runs": []}
    stats["runs"].append(counts)
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(stats_path, stats)
    write_json(manifest, dict(spec))
    return counts


def load_cache(manifests: Sequence[Path], utt_ids: Sequence[str]) -> np.ndarray:
    """Embeddings of ``utt_ids`` (in that order) from the caches of ``manifests`` (any locales); shards are
    memory-mapped and only the wanted rows are read."""
    want = set(utt_ids)
    found: dict[str, np.ndarray] = {}
    for m in manifests:
        spec = json.loads(Path(m).read_text(encoding="utf-8"))
        for path, ids in _shards(Path(m), _spec_hash(spec)):
            keep = [i for i, u in enumerate(ids) if u in want]
            if keep:
                emb = np.load(path, mmap_mode="r")[keep]  # fancy indexing copies just these rows
                found.update(zip((ids[i] for i in keep), emb))
    missing = [u for u in utt_ids if u not in found]
    if missing:
        raise KeyError(f"{len(missing)} utterance(s) not in the embedding cache, e.g. {missing[0]} "
                       f"(caches: {', '.join(str(m) for m in manifests)})")
    return np.stack([found[u] for u in utt_ids]).astype(np.float32)
