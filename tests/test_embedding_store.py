"""The embedding store: memory-mapped npy shards with a JSON index written last, read row by row."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from cltm_pipeline.models.embeddings import load_cache, store_dir, update_cache
from cltm_pipeline.data.ingest import ingest_locale

SPEC = {"format": 1, "arch": "test", "locale": "es", "max_seconds": 1.0}


def _embed(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """A real (if simple) frozen embedder: level, spread and length of each clip."""
    mask = torch.arange(x.shape[1])[None, :] < n[:, None]
    mean = (x * mask).sum(1) / n
    return torch.stack([mean, ((x - mean[:, None]) ** 2 * mask).sum(1) / n, n.float()], 1)


@pytest.fixture(scope="module")
def ingested(small_release, tmp_path_factory):
    root = tmp_path_factory.mktemp("emb-ingest")
    ingest_locale(small_release / "es", "es", root / "es")
    return root, pl.read_parquet(root / "es" / "utterances.parquet")


def test_store_grows_by_shards_and_reads_only_wanted_rows(ingested, tmp_path):
    root, table = ingested
    manifest = tmp_path / "es.json"
    first = update_cache(manifest, SPEC, table.head(10), _embed, root, 4, "cpu")
    again = update_cache(manifest, SPEC, table, _embed, root, 4, "cpu")
    assert (first["embedded"], again["cached"], again["embedded"]) == (10, 10, table.height - 10)
    shards = sorted(store_dir(manifest).glob("shard-*.npy"))
    assert len(shards) == 2 and all(np.load(p, mmap_mode="r").dtype == np.float32 for p in shards)
    ids = table["utt_id"].to_list()
    picked = [ids[12], ids[3], ids[-1]]
    got = load_cache([manifest], picked)
    lengths = dict(zip(ids, table["num_samples"].to_list()))
    assert got[:, 2].tolist() == [min(lengths[u], 16000) for u in picked]  # row order follows the request
    whole = load_cache([manifest], sorted(ids))
    assert np.array_equal(got[1], whole[sorted(ids).index(ids[3])])


def test_a_shard_without_its_index_is_not_taken_as_complete(ingested, tmp_path):
    root, table = ingested
    manifest = tmp_path / "es.json"
    update_cache(manifest, SPEC, table.head(6), _embed, root, 4, "cpu")
    index = next(store_dir(manifest).glob("shard-*.json"))
    index.unlink()  # as if killed between writing the vectors and the index
    counts = update_cache(manifest, SPEC, table.head(6), _embed, root, 4, "cpu")
    assert counts["embedded"] == 6
    with pytest.raises(KeyError, match="not in the embedding cache"):
        load_cache([manifest], [table["utt_id"][7]])
    other = {**SPEC, "max_seconds": 2.0}  # a shard written for another spec is ignored
    assert update_cache(manifest, other, table.head(2), _embed, root, 4, "cpu")["embedded"] == 2
    assert json.loads(manifest.read_text()) == other
