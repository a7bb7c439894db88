"""ASR task: vocabulary stability, WER/CER against jiwer, greedy CTC decoding, duration batching, one cell."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jiwer
import numpy as np
import polars as pl
import pytest

from cltm_pipeline.data.audio import SAMPLE_RATE, to_int16
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.data.languages import read_languages
from cltm_pipeline.io import write_bytes, write_npy, write_tsv
from cltm_pipeline.models import get_architecture
from cltm_pipeline.data.subsets import SubsetSpec, cell_manifest, draw_seed, eval_sets
from cltm_pipeline.tasks import TASKS
from cltm_pipeline.tasks.asr import (BLANK, UNK, WORD_DELIMITER, Vocabulary, asr_scores, build_vocab,
                                     duration_batches, greedy_decode)
from cltm_pipeline.text import normalise
from cltm_pipeline.protocol import CellSpec
from cltm_pipeline.training.cell import run_cell

LOCALES = ("aa", "bb")
SENTENCES = {"aa": ["Hola, ¿qué tal?", "Muy bien.", "Ñandú grande", "¡Sí!", "...", "casa roja"],
             "bb": ["Grüße aus Köln", "Ja, gut.", "Straße", "Eins zwei", "Öl", "Ende"]}
TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
        "conv_dim": [8, 8, 8, 8], "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 2}
HP = {"epochs": 2, "lr": 1e-3, "batch_seconds": 2.0, "max_clip_seconds": 0.7, "freeze_feature_encoder": False,
      "select_by": "cer", "asr_unit": "word"}


def _said(loc: str, k: int, c: int) -> str:
    """Training speakers read single sentences; the test (k=0) and dev (k=1) speakers read two joined, so no
    training clip repeats an evaluation sentence (the subsets would drop it) and the characters stay the same;
    "..." (empty once normalised) stays alone, so each evaluation set keeps one empty reference."""
    own = SENTENCES[loc]
    return own[c] if k > 1 or own[c] == "..." else f"{own[c]} {own[(c + 1 + k) % len(own)]}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Two ingested-layout locales of noise-and-tone clips with real-looking sentences (plumbing, not learning)."""
    root = tmp_path_factory.mktemp("asr-corpus")
    rng = np.random.default_rng(0)
    tables = {}
    for loc in LOCALES:
        rows, audio, offset = [], [], 0
        for k in range(8):
            split = "test" if k == 0 else "dev" if k == 1 else "train"
            spk = hashlib.sha512(f"{loc}-{k}".encode()).hexdigest()
            for c in range(6):
                seconds = 0.9 if (k, c) == (2, 0) else rng.uniform(0.2, 0.5)  # one clip over max_clip_seconds
                t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
                x = to_int16(0.3 * np.sin(2 * np.pi * (150 + 40 * c) * t) + rng.normal(0, 0.02, t.size))
                rows.append((f"common_voice_{loc}_{k}_{c}", loc, spk, "female" if k % 2 else "male", split,
                             x.size / SAMPLE_RATE, offset, x.size, _said(loc, k, c)))
                audio.append(x)
                offset += x.size
        cols = ["utt_id", "locale", "client_id", "gender", "cv_split", "duration_s", "offset", "num_samples", "sentence"]
        tables[loc] = pl.DataFrame(rows, schema=cols, orient="row")
        write_npy(root / "ingest" / loc / "audio.npy", np.concatenate(audio))
    spec = SubsetSpec(task="asr", languages=LOCALES, n=6, balance="none", seeds=(0, 1))
    test, dev = eval_sets(spec, "aa", tables["aa"])
    paths = {"root": root, "ingest": root / "ingest", "test": root / "test.tsv", "dev": root / "dev.tsv",
             "vocab": root / "vocab.json", "spec": spec, "tables": tables}
    write_tsv(paths["test"], test)
    write_tsv(paths["dev"], dev)
    write_bytes(paths["vocab"], build_vocab(spec, tables))
    for s in (0, 1):
        paths[f"seed{s}"] = root / f"seed{s}.tsv"
        write_tsv(paths[f"seed{s}"], draw_seed(spec, "aa", s, tables, test, dev))
    paths["model"] = get_architecture("mhubert").prepare("tiny", root / "model", tiny=TINY)
    return paths


def _run(corpus, donor, seed=0, out="m.json"):
    return run_cell(CellSpec("asr", "mhubert", corpus["model"], corpus[f"seed{seed}"], corpus["test"], corpus["dev"],
                    corpus["ingest"], "aa", donor, seed, HP, corpus["root"] / "runs" / out, device="cpu",
                    config_hash="cfg", artifacts={"vocab.json": corpus["vocab"]}))


# ------------------------------------------------------------------------------------ vocabulary


def test_vocabulary_is_one_per_matrix_and_byte_stable(corpus):
    spec, tables = corpus["spec"], corpus["tables"]
    blob = corpus["vocab"].read_bytes()
    assert build_vocab(spec, tables) == blob  # same bytes every run
    # whatever the seed list: the vocabulary does not depend on cells or seeds
    other = SubsetSpec(**{**spec.__dict__, "seeds": (7, 8, 9)})
    assert build_vocab(other, tables) == blob
    # row order of the ingested tables does not matter either
    shuffled = {k: v.sample(fraction=1.0, shuffle=True, seed=3) for k, v in tables.items()}
    assert build_vocab(spec, shuffled) == blob
    doc = json.loads(blob)
    assert doc["version"] == 1 and doc["tokens"][:3] == [BLANK, UNK, WORD_DELIMITER]
    chars = doc["tokens"][3:]
    assert chars == sorted(chars) and " " not in chars
    # the union of both languages' training pools, normalised; the evaluation speakers' text is not in it
    expected = set("".join(normalise(t) for v in SENTENCES.values() for t in v)) - {" "}
    assert set(chars) == expected and {"ñ", "ü", "ö", "ú"} <= expected and "ß" not in expected  # case-folded to ss
    # every cell of every seed trains only on characters of the vocabulary
    vocab = Vocabulary(doc)
    for s in (0, 1):
        seed_table = pl.read_csv(corpus[f"seed{s}"], separator="\t", quote_char=None)
        for donor in (None, "aa", "bb"):
            rows = cell_manifest(seed_table, "aa", donor)
            assert all(vocab.unk not in vocab.encode(normalise(t)) for t in rows["sentence"].to_list())


def test_vocabulary_excludes_evaluation_speakers_text(corpus):
    spec, tables = corpus["spec"], corpus["tables"]
    only_eval = {k: v.with_columns(pl.when(pl.col("cv_split") == "train").then(pl.lit("x")).otherwise(pl.col("sentence") + " q").alias("sentence"))
                 for k, v in tables.items()}
    tokens = json.loads(build_vocab(spec, only_eval))["tokens"]
    assert tokens == [BLANK, UNK, WORD_DELIMITER, "x"]


# --------------------------------------------------------------------------------------- metrics


def test_wer_cer_match_jiwer_on_hand_made_cases():
    refs = ["the cat sat", "on the mat", "", "hello"]
    hyps = ["the cat sat", "on a mat mat", "noise", ""]
    s = asr_scores(refs, hyps)
    kept_r, kept_h = ["the cat sat", "on the mat", "hello"], ["the cat sat", "on a mat mat", ""]
    assert s["n_excluded_empty"] == 1 and s["n_scored"] == 3
    assert s["wer"] == pytest.approx(jiwer.wer(kept_r, kept_h))
    # by hand: 0 + (1 sub + 1 ins) + 1 del over 3 + 3 + 1 reference words
    assert s["wer"] == pytest.approx(3 / 7)
    assert s["cer"] == pytest.approx(jiwer.cer(kept_r, kept_h))
    assert s["mean_utt_wer"] == pytest.approx((0 + 2 / 3 + 1) / 3)
    assert s["mean_utt_wer"] != pytest.approx(s["wer"])  # corpus WER weights long references more
    nothing = asr_scores(["", " "], ["a", "b"])
    assert nothing["n_excluded_empty"] == 2 and np.isnan(nothing["wer"])


def test_greedy_decoding_of_a_known_ctc_output():
    vocab = Vocabulary({"format": "cltm-asr-vocabulary", "version": 1, "blank": 0, "unk": 1, "word_delimiter": 2,
                        "tokens": [BLANK, UNK, WORD_DELIMITER, "a", "b", "l", "o"]})
    # frames: a a _ b | | l l _ l o o _ (_ = blank); then two padding frames that must be ignored
    path = [3, 3, 0, 4, 2, 2, 5, 5, 0, 5, 6, 6, 0, 3, 3]
    logits = np.full((2, len(path), len(vocab)), -5.0)
    logits[0, np.arange(len(path)), path] = 5.0
    logits[1, :, 0] = 5.0  # all blank
    assert greedy_decode(logits, [13, 15], vocab) == ["ab llo", ""]
    assert vocab.decode(vocab.encode("ab llo")) == "ab llo"
    assert vocab.encode("ax") == [3, vocab.unk]


def test_duration_batches_respect_the_budget_and_the_seed():
    rng = np.random.default_rng(1)
    d = rng.uniform(0.5, 6.0, 200)
    for r in (np.random.default_rng(5), None):
        batches = duration_batches(d, 20.0, r, bucket=32)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(d.size))  # every clip exactly once
        assert all(len(b) * d[b].max() <= 20.0 for b in batches)  # padded audio within the budget
    a = duration_batches(d, 20.0, np.random.default_rng(5), bucket=32)
    b = duration_batches(d, 20.0, np.random.default_rng(5), bucket=32)
    c = duration_batches(d, 20.0, np.random.default_rng(6), bucket=32)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert not (len(a) == len(c) and all(np.array_equal(x, y) for x, y in zip(a, c)))
    # a clip over the budget is alone in its batch
    assert [len(x) for x in duration_batches([1.0, 30.0, 1.0], 20.0, None)] == [2, 1]


def test_languages_sheet_asr_unit_column(tmp_path):
    sheet = read_languages(Path(__file__).resolve().parents[1] / "config" / "languages.tsv")
    units = dict(zip(sheet["locale"].to_list(), sheet["asr_unit"].to_list()))
    assert units["zh-CN"] == units["ja"] == units["yue"] == "char" and units["es"] == units["ug"] == "word"
    bad = tmp_path / "l.tsv"
    bad.write_text("locale\tname\tfamily\tiso639_3\tasr_unit\nes\tSpanish\tRomance\tspa\tsyllable\n")
    with pytest.raises(ConfigError, match=r"l.tsv: row 2 \(es\): asr_unit 'syllable' is not one of word, char"):
        read_languages(bad)
    old = tmp_path / "old.tsv"
    old.write_text("locale\tname\tfamily\tiso639_3\nes\tSpanish\tRomance\tspa\n")
    assert read_languages(old)["asr_unit"].to_list() == ["word"]


# ------------------------------------------------------------------------------------------ cell


def test_one_asr_cell_end_to_end_and_reproducible(corpus):
    assert TASKS["asr"].primary == "asr_error"
    single = _run(corpus, None)
    m = single["metrics"]
    assert set(m) >= {"asr_error", "wer", "cer", "mean_utt_wer", "dev_asr_error", "dev_wer", "dev_cer"}
    assert single["asr_error_is"] == "wer" and m["asr_error"] == m["wer"] and 0 <= m["cer"]
    assert single["primary_metric"] == "asr_error" and single["cell"] == "single"
    assert single["n_train"] + sum(single["n_train_excluded"].values()) == 6  # "..." is empty, 0.9 s too long
    assert single["n_test"] + single["n_test_excluded_empty"] == 6 and single["n_test_excluded_empty"] == 1  # "..."
    t = single["training"]
    assert t["steps"] >= 2 and t["dev_curve"] and all(len(p) == 2 for p in t["dev_curve"])
    assert json.loads((corpus["root"] / "runs" / "m.json").read_text())["data_hash"] == single["data_hash"]
    again = _run(corpus, None, out="m2.json")
    assert again["metrics"] == m and again["training"]["train_loss"] == t["train_loss"]  # same seed, same numbers
    dual = _run(corpus, "bb", out="m3.json")
    assert dual["n_train_by_locale"].get("bb", 0) > 0 and dual["cell"] == "dual"


def test_asr_hparams_are_checked_at_config_load():
    from cltm_pipeline.config import load_config

    root = Path(__file__).resolve().parents[1]
    import yaml

    raw = yaml.safe_load((root / "config" / "config.yaml").read_text())
    load_config(raw, root=root)  # the demo config is valid
    raw["tasks"]["asr"]["architectures"]["mhubert"]["hparams"]["select_by"] = "bleu"
    with pytest.raises(ConfigError, match=r"tasks.asr.architectures.mhubert.hparams.select_by: must be wer, cer or asr_error"):
        load_config(raw, root=root)


def test_worker_skips_a_finished_asr_cell(corpus):
    from cltm_pipeline.training.worker import run_cells

    cell = CellSpec(task="asr", arch="mhubert", model_dir=corpus["model"], seed_table_path=corpus["seed1"],
                    test_path=corpus["test"], dev_path=corpus["dev"], ingest_root=corpus["ingest"], target="aa",
                    donor=None, seed=1, hparams=HP, out_path=corpus["root"] / "worker", config_hash="c1",
                    device="cpu", artifacts={"vocab.json": corpus["vocab"]})
    assert run_cells(cell, [None], corpus["root"] / "worker")["trained"] == ["aa/-/seed1"]
    # same config and data hash (vocabulary included)
    assert run_cells(cell, [None], corpus["root"] / "worker")["skipped"] == ["aa/-/seed1"]


class _Killed(Exception):
    pass


def test_a_killed_asr_cell_resumes_with_identical_results(corpus, monkeypatch):
    from cltm_pipeline.training import loop

    hp = {**HP, "epochs": 4, "batch_seconds": 1.0, "eval_every": 3}

    def run(name, ce):
        return run_cell(CellSpec("asr", "mhubert", corpus["model"], corpus["seed0"], corpus["test"], corpus["dev"], corpus["ingest"],
                        "aa", "bb", 0, {**hp, "checkpoint_every": ce}, corpus["root"] / "resume" / name / "metrics.json",
                        device="cpu", config_hash="cfg", artifacts={"vocab.json": corpus["vocab"]}))

    base = run("base", None)
    total = base["training"]["steps"]
    assert total >= 6
    cell = corpus["root"] / "resume" / "killed"

    def kill_at(step):
        def hook(s):
            if s == step:
                raise _Killed(s)
        monkeypatch.setattr(loop, "STEP_HOOK", hook)

    kill_at(3)
    with pytest.raises(_Killed):
        run("killed", 2)
    assert (cell / "checkpoint.pt").is_file() and not (cell / "metrics.json").exists()
    kill_at(total - 1)
    with pytest.raises(_Killed):
        run("killed", 2)
    monkeypatch.setattr(loop, "STEP_HOOK", None)
    res = run("killed", 2)
    assert res["resumed_from_step"] is not None and res["resumed_from_step"] >= 2
    assert res["metrics"] == base["metrics"] and res["training"] == base["training"]
    assert not (cell / "checkpoint.pt").exists()
