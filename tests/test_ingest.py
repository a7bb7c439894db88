"""Ingestion of a generated Common Voice release: audio cache, quarantine, determinism."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from cltm_pipeline.data.audio import AudioCache, decode_clip
from cltm_pipeline.data.commonvoice import read_locale
from cltm_pipeline.errors import CorpusError
from cltm_pipeline.data.ingest import ingest_locale


@pytest.fixture(scope="module")
def ingested(small_release, tmp_path_factory):
    out = {}
    for loc in ("es", "de", "fi"):
        d = tmp_path_factory.mktemp(f"ing-{loc}")
        ingest_locale(small_release / loc, loc, d, workers=2)
        out[loc] = d
    return out


def test_cache_holds_every_usable_clip_at_16k(small_release, ingested):
    for loc, d in ingested.items():
        table = pl.read_parquet(d / "utterances.parquet")
        q = pl.read_csv(d / "quarantine.tsv", separator="\t", quote_char=None)
        assert table.height + q.height == read_locale(small_release / loc, loc).height
        audio = np.load(d / "audio.npy", mmap_mode="r")
        assert audio.dtype == np.int16 and len(audio) == table["num_samples"].sum()
        # offsets tile the cache and match an independent decode of the same mp3
        assert (table["offset"][1:] == (table["offset"] + table["num_samples"])[:-1]).all()
        row = table.row(3, named=True)
        direct = decode_clip(small_release / loc / "clips" / row["path"]).samples
        cached = AudioCache(d / "audio.npy").get(row["offset"], row["num_samples"])
        assert np.array_equal(np.round(cached * 32768).astype(np.int16), direct)
        assert table["duration_s"].to_numpy() == pytest.approx(table["cv_duration_s"].to_numpy(), abs=0.15)
        assert set(table["gender"]) <= {"female", "male", "other", "unknown"}


def test_broken_clips_are_quarantined_with_row_and_reason(ingested):
    reasons = pl.concat(
        pl.read_csv(d / "quarantine.tsv", separator="\t", quote_char=None, schema_overrides={"row": pl.Int64})
        for d in ingested.values()
    )
    kinds = {r.split(":")[0] for r in reasons["reason"]}
    assert {"missing file", "empty file"} <= kinds
    assert kinds & {"truncated", "undecodable"}, kinds
    assert reasons["row"].min() >= 2
    assert all(f.endswith(".mp3") for f in reasons["file"])


def test_ingest_is_byte_identical_across_runs(small_release, ingested, tmp_path):
    ingest_locale(small_release / "es", "es", tmp_path, workers=1)
    for name in ("utterances.parquet", "audio.npy", "quarantine.tsv", "ingest.json"):
        assert (tmp_path / name).read_bytes() == (ingested["es"] / name).read_bytes(), name


def test_too_little_data_fails_naming_the_locale(small_release, tmp_path):
    with pytest.raises(CorpusError, match=r"^locale de: \d+ usable clips of \d+ .* need at least 100000"):
        ingest_locale(small_release / "de", "de", tmp_path, min_clips=100000)
    assert (tmp_path / "quarantine.tsv").is_file()  # the report survives the failure


def test_speaker_cap_keeps_evaluation_speakers_whole(small_release, tmp_path):
    full = read_locale(small_release / "es", "es")
    ingest_locale(small_release / "es", "es", tmp_path, max_clips_per_speaker=2)
    capped = pl.read_parquet(tmp_path / "utterances.parquet")
    per_spk = capped.filter(pl.col("cv_split") == "train").group_by("client_id").len()
    assert per_spk["len"].max() <= 2
    evals = full.filter(pl.col("cv_split").is_in(["test", "dev"]))
    q = pl.read_csv(tmp_path / "quarantine.tsv", separator="\t", quote_char=None)
    assert capped.filter(pl.col("cv_split").is_in(["test", "dev"])).height == evals.height - q.filter(
        pl.col("file").str.contains("|".join(evals["path"].to_list()))).height
