"""Speaker verification: trial lists, the four architectures end to end through run_cell, determinism,
the frozen-encoder embedding cache, and config validation of SV hyper-parameters.

The corpus is synthetic (harmonic tones, one voice per speaker) written straight into the ingest layout,
as in test_train.py: these tests check plumbing and invariants, not learning.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re

import numpy as np
import polars as pl
import pytest
import yaml

from cltm_pipeline.data.audio import SAMPLE_RATE, to_int16
from cltm_pipeline.config import load_config
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.models.embeddings import cache_spec, update_cache
from cltm_pipeline.io import read_manifest, write_bytes, write_npy, write_tsv
from cltm_pipeline.models import get_architecture
from cltm_pipeline.models.speechllm import FORWARDS
from cltm_pipeline.data.subsets import SubsetSpec, cell_manifest, draw_seed, eval_sets
from cltm_pipeline.tasks.sv import DEV_TRIALS, TRIALS, build_dev_trials, build_trials, read_trials
from cltm_pipeline.protocol import CellSpec
from cltm_pipeline.training.cell import run_cell

from conftest import REPO

LOCALES = ("aa", "bb", "cc")
HUBERT_TINY = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
               "conv_dim": [8, 8, 8, 8], "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 2}
MODELS = {  # (source, tiny overrides)
    "mhubert": ("tiny", HUBERT_TINY),
    "ecapa": ("tiny", {"channels": [16, 16, 16, 16, 48], "lin_neurons": 16, "attention_channels": 8, "se_channels": 8}),
    "siamese": ("tiny", {"channels": [4, 8], "embedding_dim": 16}),
    "speechllm": ("tiny", HUBERT_TINY),
}
HP = {"epochs": 2, "lr": 1e-3, "batch_size": 8, "max_seconds": 0.25, "freeze_feature_encoder": False}


def _voice(rng: np.random.Generator, f0: float, tilt: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) / k**tilt for k in range(1, 7))
    return to_int16(0.3 * x / np.abs(x).max() + rng.normal(0, 0.02, t.size))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """3 locales x 2 genders x 7 speakers (2 test, 2 dev, 3 train) x 4 clips; eval sets, trials and the
    seed-0 table of target aa (n=8)."""
    root = tmp_path_factory.mktemp("sv-corpus")
    rng = np.random.default_rng(0)
    tables = {}
    for loc in LOCALES:
        rows, audio, offset = [], [], 0
        for g, base in (("female", 220.0), ("male", 120.0)):
            for k in range(7):
                split = "test" if k < 2 else "dev" if k < 4 else "train"
                spk = hashlib.sha512(f"{loc}-{g}-{k}".encode()).hexdigest()
                f0, tilt = base * rng.uniform(0.8, 1.2), rng.uniform(0.5, 2.0)
                for c in range(4):
                    x = _voice(rng, f0 * rng.uniform(0.97, 1.03), tilt, rng.uniform(0.2, 0.35))
                    rows.append((f"common_voice_{loc}_{g}{k}_{c}", loc, spk, g, split, x.size / SAMPLE_RATE, offset, x.size, f"S {loc} {g}{k} {c}."))
                    audio.append(x)
                    offset += x.size
        cols = ["utt_id", "locale", "client_id", "gender", "cv_split", "duration_s", "offset", "num_samples", "sentence"]
        tables[loc] = pl.DataFrame(rows, schema=cols, orient="row")
        write_npy(root / "ingest" / loc / "audio.npy", np.concatenate(audio))
    spec = SubsetSpec(task="sv", languages=LOCALES, n=8, seeds=(0,))
    paths: dict = {"root": root, "ingest": root / "ingest", "tables": tables, "spec": spec}
    for target in LOCALES:
        test, dev = eval_sets(spec, target, tables[target])
        d = root / "subsets" / target
        write_tsv(d / "test.tsv", test)
        write_tsv(d / "dev.tsv", dev)
        write_bytes(d / TRIALS, build_trials(spec, test, dev))
        write_bytes(d / DEV_TRIALS, build_dev_trials(spec, test, dev))
        write_tsv(d / "seed0.tsv", draw_seed(spec, target, 0, tables, test, dev))
    paths["models"] = {arch: get_architecture(arch).prepare(src, root / "models" / arch, tiny=tiny)
                       for arch, (src, tiny) in MODELS.items()}
    return paths


def _cell(corpus, arch, donor, out, seed=0, artifacts=None, target="aa", **hp):
    d = corpus["root"] / "subsets" / target
    arts = {TRIALS: d / TRIALS, DEV_TRIALS: d / DEV_TRIALS, **(artifacts or {})}
    return run_cell(CellSpec("sv", arch, corpus["models"][arch], d / "seed0.tsv", d / "test.tsv", d / "dev.tsv", corpus["ingest"],
                    target, donor, seed, {**HP, **hp}, corpus["root"] / "runs" / out, device="cpu", config_hash="c",
                    artifacts=arts))


# ------------------------------------------------------------------------------------------ trials


def test_trials_are_balanced_same_gender_voxceleb_and_deterministic(corpus):
    spec, root = corpus["spec"], corpus["root"]
    test = read_manifest(root / "subsets" / "aa" / "test.tsv")
    dev = read_manifest(root / "subsets" / "aa" / "dev.tsv")
    text = (root / "subsets" / "aa" / TRIALS).read_text()
    assert all(re.fullmatch(r"[01] \S+ \S+", line) for line in text.splitlines())
    labels, enrol, tst = read_trials(root / "subsets" / "aa" / TRIALS)
    assert labels.sum() * 2 == labels.size > 0  # balanced
    spk = dict(zip(test["utt_id"], test["client_id"]))
    gen = dict(zip(test["utt_id"], test["gender"]))
    for y, a, b in zip(labels, enrol, tst):
        assert a != b and (spk[a] == spk[b]) == bool(y)
        assert gen[a] == gen[b]  # non-targets from the same gender
    assert len(set(zip(enrol, tst))) == labels.size  # no trial twice
    # deterministic bytes that depend on the test set only (not the dev set, the seed or the row order)
    assert build_trials(spec, test.reverse(), dev.head(3)) == text.encode()
    assert build_dev_trials(spec, test, dev) == (root / "subsets" / "aa" / DEV_TRIALS).read_bytes()
    assert set(read_trials(root / "subsets" / "aa" / DEV_TRIALS)[1]) <= set(dev["utt_id"])


def test_no_evaluation_speaker_trains_any_cell_of_the_target(corpus):
    root = corpus["root"]
    for target in LOCALES:
        d = root / "subsets" / target
        eval_spk = set(read_manifest(d / "test.tsv")["client_id"]) | set(read_manifest(d / "dev.tsv")["client_id"])
        table = read_manifest(d / "seed0.tsv")
        for donor in (None, *LOCALES):
            assert not eval_spk & set(cell_manifest(table, target, donor)["client_id"])


def test_a_gender_with_one_test_speaker_is_refused(corpus):
    test = read_manifest(corpus["root"] / "subsets" / "aa" / "test.tsv")
    one = test.filter(pl.col("client_id") != test.filter(pl.col("gender") == "male")["client_id"][0])
    with pytest.raises(ValueError, match="single male speaker"):
        build_trials(corpus["spec"], one, one)


# ------------------------------------------------------------------------------ the four architectures


@pytest.mark.parametrize("arch", ["mhubert", "ecapa", "siamese", "speechllm"])
def test_each_architecture_trains_and_scores_a_cell(corpus, arch):
    res = _cell(corpus, arch, "bb", f"{arch}/dual.json")
    m = res["metrics"]
    assert set(m) == {"eer", "auc", "min_dcf_0.01", "min_dcf_0.05", "dev_eer"}
    assert all(np.isfinite(v) for v in m.values()) and 0 <= m["eer"] <= 1 and 0 <= m["auc"] <= 1
    assert res["dcf"] == {"c_miss": 1.0, "c_fa": 1.0, "p_target": [0.01, 0.05], "normalised": True}
    assert res["cell"] == "dual" and res["n_train_by_locale"] == {"aa": 8, "bb": 8} and res["primary_metric"] == "eer"
    assert len(res["training"]["dev_curve"]) == HP["epochs"] and res["n_test"] == read_trials(
        corpus["root"] / "subsets" / "aa" / TRIALS)[0].size
    on_disk = json.loads((corpus["root"] / "runs" / arch / "dual.json").read_text())
    assert on_disk["metrics"] == m and on_disk["data_hash"] == res["data_hash"]


def test_same_seed_same_metrics_other_seed_other_training(corpus):
    a = _cell(corpus, "siamese", None, "det/a.json")
    b = _cell(corpus, "siamese", None, "det/b.json")
    c = _cell(corpus, "siamese", None, "det/c.json", seed=1)
    assert a["metrics"] == b["metrics"] and a["training"] == b["training"]
    assert a["training"]["train_loss"] != c["training"]["train_loss"]
    # the Siamese body is the encoder of its footprint: same seed, same mask
    assert a["footprint"] == b["footprint"] and a["footprint"]["n_params"] > 0 and a["footprint"] != c["footprint"]


def test_a_frozen_encoder_single_cell_says_it_has_no_footprint(corpus):
    from cltm_pipeline.layout import footprint_files

    res = _cell(corpus, "speechllm", None, "fp/speechllm/metrics.json")
    assert res["footprint"]["skipped"].startswith("no fine-tuned encoder (the model trains only mlp")
    assert not any(p.exists() for p in footprint_files(corpus["root"] / "runs" / "fp" / "speechllm" / "metrics.json"))


class _Killed(Exception):
    """Stands in for a time limit, preemption or node failure in the middle of training."""


@pytest.mark.parametrize("arch", ["siamese", "ecapa"])  # pair objective (BatchNorm), speaker identification
def test_a_killed_sv_cell_resumes_from_its_checkpoint_with_the_uninterrupted_metrics(corpus, arch, monkeypatch, capsys):
    from cltm_pipeline.training import loop

    hp = {"batch_size": 4, "eval_every": 3}
    base = _cell(corpus, arch, "bb", f"resume/{arch}/base/metrics.json", **hp)
    steps = base["training"]["steps"]
    assert steps >= 6 and base["resumed_from_step"] is None
    kill = steps - 2

    def hook(step: int) -> None:
        if step == kill:
            raise _Killed(step)

    monkeypatch.setattr(loop, "STEP_HOOK", hook)
    cell = corpus["root"] / "runs" / "resume" / arch / "cut"
    with pytest.raises(_Killed):
        _cell(corpus, arch, "bb", f"resume/{arch}/cut/metrics.json", checkpoint_every=2, **hp)
    assert (cell / "checkpoint.pt").is_file() and not (cell / "metrics.json").exists()
    monkeypatch.setattr(loop, "STEP_HOOK", None)
    res = _cell(corpus, arch, "bb", f"resume/{arch}/cut/metrics.json", checkpoint_every=2, **hp)
    assert res["resumed_from_step"] == kill - kill % 2 and "resuming from" in capsys.readouterr().err
    for key in ("metrics", "training", "data_hash", "n_train_by_locale"):
        assert res[key] == base[key], key
    assert not (cell / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------ embedding cache


def test_embedding_cache_embeds_each_utterance_once_and_is_reused(corpus):
    root, arch = corpus["root"], get_architecture("speechllm")
    model_dir = corpus["models"]["speechllm"]
    embed = arch.embedder(model_dir, "cpu")
    manifests = {}
    for loc in LOCALES:  # what the workflow's embed rule does: eval sets and seed tables, rows of one locale
        rows = pl.concat([read_manifest(p) for p in sorted((root / "subsets").glob("*/*.tsv"))]).filter(pl.col("locale") == loc)
        rows = rows.unique("utt_id", maintain_order=True)
        spec = cache_spec("speechllm", model_dir, loc, HP["max_seconds"], corpus["ingest"])
        manifests[loc] = root / "emb" / f"{loc}.json"
        before = FORWARDS["utterances"]
        first = update_cache(manifests[loc], spec, rows.head(10), embed, corpus["ingest"], 8, "cpu")
        again = update_cache(manifests[loc], spec, rows, embed, corpus["ingest"], 8, "cpu")
        unique = rows["utt_id"].n_unique()
        assert (first["embedded"], again["cached"], again["embedded"]) == (10, 10, unique - 10)
        assert FORWARDS["utterances"] - before == unique  # each utterance through the encoder once
        bytes_before = manifests[loc].read_bytes()
        assert update_cache(manifests[loc], spec, rows, embed, corpus["ingest"], 8, "cpu")["embedded"] == 0
        assert manifests[loc].read_bytes() == bytes_before  # a growing store leaves the manifest (and cells) alone
    arts = {f"emb:{loc}": p for loc, p in manifests.items()}
    before = FORWARDS["utterances"]
    cached = _cell(corpus, "speechllm", "cc", "cache/with.json", artifacts=arts)
    assert FORWARDS["utterances"] == before and cached["timing"]["encoder_forwards"] == 0
    fresh = _cell(corpus, "speechllm", "cc", "cache/without.json")
    d = root / "subsets" / "aa"
    n_rows = 16 + read_manifest(d / "test.tsv").height + read_manifest(d / "dev.tsv").height
    assert fresh["timing"]["encoder_forwards"] == n_rows
    assert cached["metrics"] == pytest.approx(fresh["metrics"], abs=1e-6)  # same embeddings either way


# --------------------------------------------------------------------------------- config validation


def test_config_validation_of_sv_hyper_parameters():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    sv = cfg["tasks"]["sv"]
    assert set(sv["architectures"]) == {"mhubert", "ecapa", "siamese", "speechllm"}
    load_config(cfg, root=REPO)
    bad = copy.deepcopy(cfg)
    bad["tasks"]["sv"]["architectures"]["siamese"]["hparams"]["aam_scale"] = 30  # an ECAPA key
    with pytest.raises(ConfigError, match=r"tasks\.sv\.architectures\.siamese\.hparams: unknown key\(s\) aam_scale"):
        load_config(bad, root=REPO)
    ok = load_config(cfg, root=REPO).raw["tasks"]["sv"]["architectures"]
    assert ok["ecapa"]["hparams"]["aam_scale"] == 30 and ok["ecapa"]["hparams"]["aam_margin"] == 0.2
    assert ok["mhubert"]["hparams"]["pool_layers"] == 4
    auc = copy.deepcopy(cfg)
    auc["tasks"]["sv"]["metric"] = "auc"
    load_config(auc, root=REPO)
    auc["tasks"]["sv"]["metric"] = "macro_f1"
    with pytest.raises(ConfigError, match="not a metric of sv"):
        load_config(auc, root=REPO)
