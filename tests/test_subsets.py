"""Protocol invariants of the subsets (DESIGN.md §1 "Cells") on generated tables with cross-locale speakers."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from cltm_pipeline.io import write_tsv
from cltm_pipeline.data.subsets import SubsetSpec, cell_manifest, check_capacity, check_invariants, draw_seed, eval_sets
from cltm_pipeline.errors import SubsetError

LOCALES = ("aa", "bb", "cc")


def _cid(name: str) -> str:
    return hashlib.sha512(name.encode()).hexdigest()


def make_tables(speakers_per_gender: int = 8, clips: int = 12) -> dict[str, pl.DataFrame]:
    """Ingest-like tables; speaker `shared` records in every locale and is in aa's *test* split."""
    tables = {}
    for loc in LOCALES:
        rows = []
        for g in ("female", "male"):
            for k in range(speakers_per_gender):
                split = "test" if k < 2 else "dev" if k < 4 else "train"
                spk = f"{loc}-{g}-{k}"
                if k == 0 and g == "female":
                    spk = "shared"  # a bilingual contributor: CV client_ids are global across locales
                    split = "test" if loc == "aa" else "train"
                for c in range(clips):
                    rows.append((f"common_voice_{loc}_{spk}_{c}", loc, _cid(spk), g, split, 1.0 + (c % 5) * 0.5))
        # speakers with no binary label never enter balanced subsets
        rows += [(f"common_voice_{loc}_anon_{c}", loc, _cid(f"{loc}-anon"), "unknown", "train", 2.0) for c in range(30)]
        df = pl.DataFrame(rows, schema=["utt_id", "locale", "client_id", "gender", "cv_split", "duration_s"], orient="row")
        tables[loc] = df.with_columns(
            pl.Series("offset", range(df.height), dtype=pl.Int64),
            (pl.col("duration_s") * 16000).cast(pl.Int64).alias("num_samples"),
            pl.format("Frase {} número {}.", pl.lit(loc), pl.int_range(pl.len())).alias("sentence"),
        )
    return tables


def spec(**kw) -> SubsetSpec:
    return SubsetSpec(**{"task": "gender", "languages": LOCALES, "n": 8, "seeds": (0, 1), **kw})


@pytest.fixture
def tables():
    return make_tables()


def draw(s, tables, target, seed):
    test, dev = eval_sets(s, target, tables[target])
    return draw_seed(s, target, seed, tables, test, dev), test, dev


def test_eval_sets_are_fixed_balanced_and_speaker_disjoint(tables):
    s = spec()
    test, dev = eval_sets(s, "aa", tables["aa"])
    assert set(test["part"]) == {"test"} and set(dev["part"]) == {"dev"}
    assert dict(test.group_by("gender").len().iter_rows()) == {"female": 24, "male": 24}
    assert not set(test["client_id"]) & set(dev["client_id"])
    # independent of seeds and of the donor list
    t2, _ = eval_sets(spec(seeds=(5,), languages=("aa",)), "aa", tables["aa"])
    assert t2.equals(test)


def test_cells_are_nested_and_balanced(tables):
    s = spec()
    table, test, dev = draw(s, tables, "aa", 0)
    check_invariants(s, "aa", table, test, dev)
    single = cell_manifest(table, "aa", None)
    self_ = cell_manifest(table, "aa", "aa")
    dual = cell_manifest(table, "aa", "bb")
    assert single.height == 8 and self_.height == 16 and dual.height == 16
    assert set(single["utt_id"]) < set(self_["utt_id"])            # self = single + N more (nested)
    assert set(single["utt_id"]) < set(dual["utt_id"])             # dual = single + N of the donor
    assert set(dual.filter(pl.col("part") != "single")["locale"]) == {"bb"}
    for df in (single, self_, dual):
        for part, grp in df.group_by("part"):
            assert dict(grp.group_by("gender").len().iter_rows()) == {"female": 4, "male": 4}, part
    assert "unknown" not in set(table["gender"])


def test_test_speakers_never_train_in_any_cell_even_as_donors(tables):
    s = spec(n=16)
    shared = _cid("shared")
    for seed in (0, 1, 2, 3):
        table, test, dev = draw(s, tables, "aa", seed)
        assert shared in set(test["client_id"])
        assert shared not in set(table["client_id"])               # dropped from donors bb and cc too
        evals = set(test["client_id"]) | set(dev["client_id"])
        for donor in (None, "aa", "bb", "cc"):
            assert not evals & set(cell_manifest(table, "aa", donor)["client_id"])
    # For target bb the shared speaker is an ordinary training speaker of aa? No: aa's own test split
    # removes it from aa's pool, so it can only come from bb/cc pools when bb is the target.
    table_bb, _, _ = draw(s, tables, "bb", 0)
    assert shared not in set(table_bb.filter(pl.col("locale") == "aa")["client_id"])


def test_same_seed_same_bytes_other_seed_other_draw(tables, tmp_path):
    s = spec()
    a, _, _ = draw(s, tables, "bb", 3)
    b, _, _ = draw(s, make_tables(), "bb", 3)
    write_tsv(tmp_path / "a.tsv", a)
    write_tsv(tmp_path / "b.tsv", b)
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    c, _, _ = draw(s, tables, "bb", 4)
    assert set(c["utt_id"]) != set(a["utt_id"])


def test_donor_draw_does_not_depend_on_the_target_except_exclusions(tables):
    s = spec()
    from_bb, _, _ = draw(s, tables, "bb", 0)
    from_cc, _, _ = draw(s, tables, "cc", 0)
    assert from_bb.filter(pl.col("part") == "donor:aa")["utt_id"].to_list() == \
        from_cc.filter(pl.col("part") == "donor:aa")["utt_id"].to_list()


def test_hours_regime_reaches_the_goal_with_the_shortest_prefix(tables):
    s = spec(unit="hours", n=10 / 3600)  # 10 s per part, 5 s per gender
    table, test, dev = draw(s, tables, "aa", 0)
    check_invariants(s, "aa", table, test, dev)
    for (part, g), grp in table.group_by("part", "gender"):
        total = grp["duration_s"].sum()
        assert total >= 5.0 - 1e-9 and total - grp["duration_s"].tail(1)[0] < 5.0, (part, g)


def test_invariant_violations_are_caught(tables):
    s = spec()
    table, test, dev = draw(s, tables, "aa", 0)
    check_invariants(s, "aa", table, test, dev)
    leaked = pl.concat([table, test.head(1).with_columns(pl.lit("donor:bb").alias("part"), pl.lit("bb").alias("locale"))])
    with pytest.raises(SubsetError, match="is by evaluation speaker"):
        check_invariants(s, "aa", leaked, test, dev)
    first_male_single = (pl.col("part") == "single") & (pl.col("gender") == "male")
    dropped = table.filter(~first_male_single | (pl.int_range(pl.len()).over(first_male_single) > 0))
    with pytest.raises(SubsetError, match="part single is not gender-balanced"):
        check_invariants(s, "aa", dropped, test, dev)
    with pytest.raises(SubsetError, match="drawn twice"):
        check_invariants(s, "aa", pl.concat([table, table.head(1)]), test, dev)
    with pytest.raises(SubsetError, match="missing or unexpected"):
        check_invariants(s, "aa", table.filter(pl.col("part") != "donor:cc"), test, dev)
    wrong_locale = table.with_columns(
        pl.when(pl.col("part") == "extra").then(pl.lit("bb")).otherwise(pl.col("locale")).alias("locale")
    )
    with pytest.raises(SubsetError, match="part extra holds clips of"):
        check_invariants(s, "aa", wrong_locale, test, dev)


def test_capacity_is_checked_naming_locale_and_what_it_has(tables):
    check_capacity(spec(n=48), tables)  # 24 per gender, self needs 48 per gender: exactly what aa has
    with pytest.raises(SubsetError, match=r"locale aa has 48 female training clips outside its test/dev speakers, "
                       r"the self cell needs 50"):
        check_capacity(spec(n=50), tables)


def test_a_draw_that_runs_out_names_target_donor_and_counts(tables):
    # Capacity passes for bb as a target, but as a donor of aa it loses the shared (aa-test) speaker.
    s = spec(n=48, languages=("aa", "bb"))
    bb = tables["bb"].filter(~pl.col("utt_id").str.contains("bb-female-[4-7]"))  # only `shared` trains as female
    more = pl.concat([bb.filter(pl.col("client_id") == _cid("shared")).with_columns(pl.col("utt_id") + f"_{k}")
                      for k in range(5)])  # the bilingual speaker recorded 60 more clips in bb
    tabs = {**tables, "bb": pl.concat([bb, more])}
    test, dev = eval_sets(s, "aa", tabs["aa"])
    draw_seed(s, "bb", 0, tabs, *eval_sets(s, "bb", tabs["bb"]))
    with pytest.raises(SubsetError, match=r"gender/aa seed 0: donor bb \[female\]: needs 24 clips, has 0"):
        draw_seed(s, "aa", 0, tabs, test, dev)


def test_odd_balanced_n_is_refused():
    with pytest.raises(SubsetError, match="must be even"):
        spec(n=7)


def test_speaker_split_source_without_cv_split_files(tables):
    # Real releases without split files (like the Polish sample) use a hash-ranked speaker draw.
    s = spec(split_source="speakers", test_speakers_per_gender=2, dev_speakers_per_gender=1)
    stripped = {k: v.with_columns(pl.lit("none").alias("cv_split")) for k, v in tables.items()}
    test, dev = eval_sets(s, "bb", stripped["bb"])
    assert test["client_id"].n_unique() == 4 and dev["client_id"].n_unique() == 2
    table = draw_seed(s, "bb", 0, stripped, test, dev)
    check_invariants(s, "bb", table, test, dev)


def test_a_spec_that_is_not_one_is_a_one_line_error():
    from cltm_pipeline.data.subsets import SubsetSpec
    from cltm_pipeline.errors import SubsetError

    spec = SubsetSpec(task="gender", languages=("es", "de"), n=8, seeds=(0, 1))
    assert SubsetSpec.from_json(spec.to_json()) == spec
    for bad in ("x", '{"task": "gender"}', '{"languages": [], "seeds": [], "colour": 1}'):
        with pytest.raises(SubsetError, match=r"^--spec: not a subset spec"):
            SubsetSpec.from_json(bad)


def test_training_clips_never_repeat_a_test_or_dev_sentence(tables):
    """CV re-records sentences with other speakers: a training clip (target or donor part) that repeats one of
    the target's test/dev sentences, after normalisation, is dropped, counted, and refused by the invariants."""
    from cltm_pipeline.data.subsets import sentence_drops

    s = spec(n=8)
    test, dev = eval_sets(s, "aa", tables["aa"])
    said = test["sentence"][0]
    # Re-recordings of a test sentence by training speakers, in other case and punctuation, in aa and in donor bb.
    echo = said.upper().rstrip(".") + " !"
    tabs = dict(tables)
    for loc in ("aa", "bb"):
        t = tabs[loc]
        train = t.filter((pl.col("cv_split") == "train") & pl.col("gender").is_in(["female", "male"]))["utt_id"].to_list()
        hit = set(train[:: max(1, len(train) // 6)])
        tabs[loc] = t.with_columns(pl.when(pl.col("utt_id").is_in(list(hit))).then(pl.lit(echo))
                                   .otherwise(pl.col("sentence")).alias("sentence"))
    drops = sentence_drops(s, "aa", tabs, test, dev)
    assert drops["aa"] > 0 and drops["bb"] > 0 and drops["cc"] == 0
    table = draw_seed(s, "aa", 0, tabs, test, dev)
    check_invariants(s, "aa", table, test, dev)
    assert echo not in set(table["sentence"].to_list())
    # Without the drop, a repeated sentence is caught by the invariants, naming the clip and sentence.
    leaked = table.with_columns(pl.when(pl.col("part") == "single").then(pl.lit(echo)).otherwise(pl.col("sentence"))
                                .alias("sentence"))
    with pytest.raises(SubsetError, match=r"repeats a test/dev sentence"):
        check_invariants(s, "aa", leaked, test, dev)
