"""Ingestion of a generated 20k-row locale: only the hash-ranked pool is decoded, seed tables draw from it,
quarantine still names file, row and reason."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from cltm_pipeline.data.commonvoice import read_tsv, scan_locale
from cltm_pipeline.data.ingest import capped, ingest_locale, pool_sample
from cltm_pipeline.io import stable_hash
from cltm_pipeline.data.demo import scale_locale
from cltm_pipeline.data.subsets import SubsetSpec, draw_seed, eval_sets

ROWS, POOL = 20_000, 300


@pytest.fixture(scope="module")
def big(small_release, tmp_path_factory):
    root = tmp_path_factory.mktemp("scaled")
    scale_locale(small_release / "es", root / "es", ROWS)
    out = root / "ingest" / "es"
    ingest_locale(root / "es", "es", out, workers=2, pool_clips=POOL)
    return root / "es", out


def _expected_pool(locale_dir):
    """The pool recomputed from the TSVs alone: hash order of non-test/dev utterances, shortest prefix with
    POOL clips of each binary gender and POOL in all."""
    v = read_tsv(locale_dir / "validated.tsv")
    evaluation = set(read_tsv(locale_dir / "test.tsv")["path"]) | set(read_tsv(locale_dir / "dev.tsv")["path"])
    rows = [(stable_hash("pool", p.removesuffix(".mp3")), p, g) for p, g in zip(v["path"], v["gender"]) if p not in evaluation]
    rows.sort()
    seen = {"female": 0, "male": 0}
    totals = {g: sum(1 for _, _, x in rows if x.startswith(g)) for g in seen}
    out = set()
    for i, (_, p, g) in enumerate(rows):
        if i >= POOL and all(seen[k] >= min(POOL, totals[k]) for k in seen):
            break
        out.add(p)
        for k in seen:
            seen[k] += g.split("_")[0] == k
    return out, evaluation


def test_pool_is_the_hash_sample_of_the_configured_size(big):
    locale_dir, out = big
    table = pl.read_parquet(out / "utterances.parquet")
    q = pl.read_csv(out / "quarantine.tsv", separator="\t", quote_char=None)
    pool, evaluation = _expected_pool(locale_dir)
    decoded = set(table["path"]) | {f.rsplit("/", 1)[1] for f in q["file"]}
    assert decoded == pool | evaluation  # nothing else was decoded
    assert len(pool) < ROWS / 10
    summary = json.loads((out / "ingest.json").read_text())
    assert summary["pool"] == {"pool_clips": POOL, "validated_rows": ROWS, "eligible": ROWS - len(evaluation),
                               "sampled": len(pool), "evaluation": len(evaluation)}


def test_pool_is_deterministic_and_nested(big):
    locale_dir, _ = big
    scan = scan_locale(locale_dir, "es", chunk_rows=3_000)  # chunking does not change the scan
    assert np.array_equal(scan.row, np.arange(2, ROWS + 2))
    eligible = capped(scan, None) & ~scan.evaluation
    small, large = pool_sample(scan, eligible, 100), pool_sample(scan, eligible, POOL)
    assert np.array_equal(large, pool_sample(scan_locale(locale_dir, "es"), eligible, POOL))
    assert not (small & ~large).any()  # a smaller pool is a prefix of a larger one
    assert pool_sample(scan, eligible, None).sum() == eligible.sum()


def test_every_seed_table_clip_is_in_the_pool(big):
    _, out = big
    table = pl.read_parquet(out / "utterances.parquet")
    spec = SubsetSpec(task="gender", languages=("es",), n=40, seeds=(0, 1, 2))
    test, dev = eval_sets(spec, "es", table)
    for seed in spec.seeds:
        drawn = draw_seed(spec, "es", seed, {"es": table}, test, dev)
        assert drawn.height == 2 * 40
        assert set(drawn["utt_id"]) <= set(table["utt_id"])


def test_quarantine_names_file_row_and_reason(big):
    locale_dir, out = big
    q = pl.read_csv(out / "quarantine.tsv", separator="\t", quote_char=None, schema_overrides={"row": pl.Int64})
    assert q.height > 0
    lines = (locale_dir / "validated.tsv").read_text(encoding="utf-8").splitlines()
    for r in q.iter_rows(named=True):
        assert r["file"].startswith(str(locale_dir / "clips")) and r["reason"]
        assert lines[r["row"] - 1].split("\t")[1] == r["file"].rsplit("/", 1)[1]  # the row is the file's TSV line
    assert {r.split(":")[0] for r in q["reason"]} >= {"missing file", "empty file"}


def test_chunked_read_of_chosen_rows_equals_the_whole_read(big):
    from cltm_pipeline.data.commonvoice import read_locale

    locale_dir, _ = big
    rows = np.array([2, 3, 41, 42, 43, 5_000, 12_345, ROWS + 1])  # first, chunk edges, last
    whole = read_locale(locale_dir, "es")
    assert read_locale(locale_dir, "es", rows=rows).equals(whole.filter(pl.col("row").is_in(rows.tolist())))


def test_a_ragged_row_is_named_by_the_scan(tmp_path):
    from cltm_pipeline.errors import CorpusError

    lines = ["client_id\tpath\tsentence\tgender"] + [f"c{i}\tp{i}.mp3\ts\tmale" for i in range(10)]
    lines[7] += "\textra"
    (tmp_path / "validated.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"validated\.tsv: cannot parse as a Common Voice TSV: row 8: 5 fields, the header has 4$"):
        scan_locale(tmp_path, "xx", chunk_rows=4)


def test_a_failed_ingest_leaves_no_store(big, tmp_path):
    from cltm_pipeline.errors import CorpusError

    locale_dir, _ = big
    with pytest.raises(CorpusError, match=r"^locale es: \d+ usable clips of \d+ .* need at least 100000"):
        ingest_locale(locale_dir, "es", tmp_path, pool_clips=20, min_clips=100_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quarantine.tsv"]  # no audio.npy, not even a temp file
