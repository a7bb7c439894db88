"""Parsing real Common Voice metadata and mapping both generations of gender labels."""

from __future__ import annotations

import polars as pl
import pytest

from cltm_pipeline.data.commonvoice import normalise_gender, read_clip_durations, read_locale, read_tsv
from cltm_pipeline.errors import CorpusError
from cltm_pipeline.data.ingest import ingest_locale


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("male", "male"), ("female", "female"), ("other", "other"),                      # before 17.0
        ("male_masculine", "male"), ("female_feminine", "female"), ("transgender", "other"),  # 17.0+
        ("non-binary", "other"), ("do_not_wish_to_say", "unknown"), ("", "unknown"), (None, "unknown"),
        (" Female ", "female"), ("intersex", "other"),
    ],
)
def test_gender_vocabulary_maps_both_generations(raw, expected):
    assert normalise_gender(raw) == expected


def test_real_polish_validated_parses_with_quotes_and_empty_fields(realworld):
    df = read_locale(realworld / "common_voice_pl", "pl")
    assert df.height == 510
    # The sample's README says 41 contributors (the issue text says 42): count what is there.
    assert df["client_id"].n_unique() == 41
    assert df["client_id"].str.len_chars().unique().to_list() == [128]
    # Sentences with unbalanced or wrapping quotes survive verbatim (quoting disabled).
    quoted = df.filter(pl.col("sentence").str.starts_with('"'))
    assert quoted.height > 0
    assert '"Stanął i patrzył."' in quoted["sentence"].to_list()
    # Empty demographics become "unknown", 17.0+ labels map to the one vocabulary.
    counts = dict(df.group_by("gender").len().iter_rows())
    assert counts == {"male": 242, "female": 17, "unknown": 251}
    assert set(df.filter(pl.col("gender") == "male")["gender_raw"].unique()) == {"male_masculine"}
    # Durations come from clip_durations.tsv for every validated clip; no split files in this sample.
    assert df["cv_duration_s"].null_count() == 0
    assert set(df["cv_split"].unique()) == {"none"}
    assert df["row"][0] == 2 and df["utt_id"][0] == "common_voice_pl_39880035"


def test_real_polish_clip_durations(realworld):
    d = read_clip_durations(realworld / "common_voice_pl" / "clip_durations.tsv")
    assert d.height == 1001
    assert d.filter(pl.col("path") == "common_voice_pl_39992143.mp3")["cv_duration_s"][0] == pytest.approx(5.112)


def test_real_polish_other_and_invalidated_share_the_schema(realworld):
    for name in ("other.tsv", "invalidated.tsv"):
        df = read_tsv(realworld / "common_voice_pl" / name)
        assert {"client_id", "path", "sentence", "gender", "sentence_id"} <= set(df.columns)


def test_ingest_without_clips_says_so_and_keeps_the_report(realworld, tmp_path):
    with pytest.raises(CorpusError) as err:
        ingest_locale(realworld / "common_voice_pl", "pl", tmp_path, min_clips=10)
    msg = str(err.value)
    assert "\n" not in msg
    assert "locale pl: 0 usable clips of 510" in msg and "missing file" in msg and "clips does not exist" in msg
    q = pl.read_csv(tmp_path / "quarantine.tsv", separator="\t", quote_char=None)
    assert q.height == 510 and set(q["reason"]) == {"missing file"}
    assert q["row"].min() == 2 and q["row"].max() == 511


def test_missing_column_is_named(tmp_path):
    p = tmp_path / "validated.tsv"
    p.write_text("client_id\tpath\tsentence\n" "a\tb.mp3\tHola\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"validated.tsv: missing column\(s\) gender"):
        read_locale(tmp_path, "xx")


def test_older_release_columns_are_accepted(tmp_path):
    # Releases before 2022 say `accent` and have no sentence_id.
    (tmp_path / "validated.tsv").write_text(
        "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\tlocale\tsegment\n"
        'c1\tcommon_voice_xx_1.mp3\tHe said "hi\t2\t0\ttwenties\tfemale\tsouth\txx\t\n',
        encoding="utf-8",
    )
    df = read_locale(tmp_path, "xx")
    assert df["accents"][0] == "south" and df["sentence_id"][0] == "" and df["sentence"][0] == 'He said "hi'
    assert df["gender"][0] == "female" and df["cv_duration_s"].null_count() == 1


def test_bad_duration_row_is_named(tmp_path):
    p = tmp_path / "clip_durations.tsv"
    p.write_text("clip\tduration[ms]\na.mp3\t1200\nb.mp3\tabc\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"clip_durations.tsv: row 3: duration\[ms\] 'abc' is not an integer"):
        read_clip_durations(p)


def test_scan_hashes_are_the_stable_hashes_of_the_utterance_ids(realworld, tmp_path):
    """The scan computes the pool and cap hashes on bytes for speed; they must stay stable_hash's values (the
    draws and the pool of every released result depend on them), also for a non-ASCII clip name."""
    import numpy as np

    from cltm_pipeline.data.commonvoice import scan_locale
    from cltm_pipeline.io import stable_hash

    src = (realworld / "common_voice_pl" / "validated.tsv").read_text(encoding="utf-8").splitlines()
    path_col = src[0].split("\t").index("path")
    first = src[1].split("\t")
    first[path_col] = "common_voice_pl_żółw.MP3"
    (tmp_path / "validated.tsv").write_text("\n".join([src[0], "\t".join(first), *src[2:]]) + "\n", encoding="utf-8")
    scan = scan_locale(tmp_path, "pl", chunk_rows=100)
    utts = [line.split("\t")[path_col].rsplit(".", 1)[0] for line in [src[0], "\t".join(first), *src[2:]][1:]]
    assert np.array_equal(scan.pool_hash, np.array([stable_hash("pool", u) for u in utts], dtype=np.uint64))
    assert np.array_equal(scan.cap_hash, np.array([stable_hash("cap", u) for u in utts], dtype=np.uint64))
    assert not scan_locale(tmp_path, "pl", cap_hash=False).cap_hash.any()


def test_scan_blocks_with_an_empty_line_or_crlf_agree_with_clean_blocks(realworld, tmp_path):
    """Blocks polars cannot take as they are (an empty line, CRLF ends) go through the reference line parser;
    speaker codes, genders and hashes must not depend on which parser read a block."""
    import numpy as np

    from cltm_pipeline.data.commonvoice import scan_locale

    lines = (realworld / "common_voice_pl" / "validated.tsv").read_text(encoding="utf-8").splitlines()
    clean, messy = tmp_path / "clean", tmp_path / "messy"
    clean.mkdir(), messy.mkdir()
    (clean / "validated.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # an empty line after data row 300 (file row 301), CRLF line ends in the first blocks
    body = [line + ("\r" if i < 120 else "") for i, line in enumerate(lines)]
    (messy / "validated.tsv").write_text("\n".join(body[:301] + [""] + body[301:]) + "\n", encoding="utf-8")
    a, b = scan_locale(clean, "pl", chunk_rows=50), scan_locale(messy, "pl", chunk_rows=50)
    for k in ("speaker", "gender", "evaluation", "cap_hash", "pool_hash"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert np.array_equal(b.row, np.where(a.row > 301, a.row + 1, a.row))
    assert a.unmapped == b.unmapped
