"""Model preparation, the architecture and task registries, and one cell end to end on a generated corpus.

The corpus is synthetic (harmonic tones, female F0 above male, plus noise) and written straight into the
ingest layout, so these tests depend on neither the demo synthesiser nor MP3 decoding and stay fast.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cltm_pipeline.data.audio import SAMPLE_RATE, to_int16
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.io import read_manifest, write_npy, write_tsv
from cltm_pipeline.models import ARCHITECTURES, get_architecture
from cltm_pipeline.errors import ModelError
from cltm_pipeline.data.subsets import SubsetSpec, cell_manifest, draw_seed, eval_sets
from cltm_pipeline.tasks import TASKS, get_task
from cltm_pipeline.protocol import CellSpec
from cltm_pipeline.cli import main as cltm_main
from cltm_pipeline.training.cell import run_cell
from cltm_pipeline.training.hparams import check_hparams, result_hparams

LOCALES = ("aa", "bb", "cc")
TINY = {  # smaller than the demo's tiny model: these tests check plumbing, not learning
    "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
    "conv_dim": [8, 8, 8, 8], "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 2,
}
HP = {"epochs": 2, "lr": 1e-3, "batch_size": 4, "max_seconds": 0.25, "freeze_feature_encoder": False}


def _tone(rng: np.random.Generator, f0: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) / k for k in range(1, 6))
    x = 0.3 * x / np.abs(x).max() + rng.normal(0, 0.02, t.size)
    return to_int16(x)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Ingested-layout locales (audio.npy + table), eval sets and seed-0/1 tables for target aa with n=8."""
    root = tmp_path_factory.mktemp("train-corpus")
    rng = np.random.default_rng(0)
    tables = {}
    for loc in LOCALES:
        rows, audio, offset = [], [], 0
        for g, base in (("female", 220.0), ("male", 120.0)):
            for k in range(5):
                split = "test" if k == 0 else "dev" if k == 1 else "train"
                spk = hashlib.sha512(f"{loc}-{g}-{k}".encode()).hexdigest()
                f0 = base * rng.uniform(0.85, 1.15)
                for c in range(6):
                    x = _tone(rng, f0 * rng.uniform(0.95, 1.05), rng.uniform(0.2, 0.4))
                    rows.append((f"common_voice_{loc}_{g}{k}_{c}", loc, spk, g, split, x.size / SAMPLE_RATE, offset, x.size, f"Frase {loc} {g}{k} {c}."))
                    audio.append(x)
                    offset += x.size
        cols = ["utt_id", "locale", "client_id", "gender", "cv_split", "duration_s", "offset", "num_samples", "sentence"]
        tables[loc] = pl.DataFrame(rows, schema=cols, orient="row")
        write_npy(root / "ingest" / loc / "audio.npy", np.concatenate(audio))
    spec = SubsetSpec(task="gender", languages=LOCALES, n=8, seeds=(0, 1))
    test, dev = eval_sets(spec, "aa", tables["aa"])
    paths = {"root": root, "ingest": root / "ingest", "test": root / "aa" / "test.tsv", "dev": root / "aa" / "dev.tsv",
             "tables": tables}
    write_tsv(paths["test"], test)
    write_tsv(paths["dev"], dev)
    for s in (0, 1):
        paths[f"seed{s}"] = root / "aa" / f"seed{s}.tsv"
        write_tsv(paths[f"seed{s}"], draw_seed(spec, "aa", s, tables, test, dev))
    paths["model"] = get_architecture("mhubert").prepare("tiny", root / "model", tiny=TINY)
    return paths


def _run(corpus, donor, seed=0, out="m.json", **kw):
    return run_cell(CellSpec(
        "gender", "mhubert", corpus["model"], corpus[f"seed{seed}"], corpus["test"], corpus["dev"], corpus["ingest"],
        "aa", donor, seed, HP, corpus["root"] / "runs" / out, device="cpu", config_hash="cfg123", **kw,
    ))


# --------------------------------------------------------------------------------- registries


def test_registries_hold_the_built_ins_and_name_the_known_ones_on_a_miss():
    assert "mhubert" in ARCHITECTURES and ARCHITECTURES["mhubert"].name == "mhubert"
    assert TASKS["gender"].labels == ("female", "male") and TASKS["gender"].primary == "macro_f1"
    with pytest.raises(ModelError, match="mhubert"):
        get_architecture("wav2vec9")
    with pytest.raises(ConfigError, match="gender"):
        get_task("emotion")


# ------------------------------------------------------------------------------ model prep


def test_tiny_model_is_deterministic_small_and_loadable(corpus, tmp_path):
    again = get_architecture("mhubert").prepare("tiny", tmp_path / "m2", tiny=TINY)
    a, b = (json.loads((d / "cltm_model.json").read_text()) for d in (corpus["model"], again))
    assert a["weights"] == b["weights"]  # same config and seed, byte-identical weights
    default = get_architecture("mhubert").prepare("tiny", tmp_path / "m3")
    n = json.loads((default / "cltm_model.json").read_text())["parameters"]
    assert 50_000 <= n <= 200_000
    other = get_architecture("mhubert").prepare("tiny", tmp_path / "m4", tiny={**TINY, "seed": 1})
    assert json.loads((other / "cltm_model.json").read_text())["weights"] != a["weights"]
    assert not list(tmp_path.glob(".*.tmp"))

    model = get_architecture("mhubert").load(corpus["model"], 2, freeze_feature_encoder=True)
    assert not any(p.requires_grad for p in model.encoder.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    import torch

    logits = model(torch.zeros(3, 4000), torch.tensor([4000, 2000, 100]))
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()


def test_missing_weights_fail_fast_with_one_actionable_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelError) as err:
        get_architecture("mhubert").prepare("no-such-org/no-such-model", tmp_path / "m")
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert "\n" not in msg
    assert "no-such-org/no-such-model" in msg and "HF_HUB_OFFLINE" in msg
    assert "huggingface-cli download no-such-org/no-such-model" in msg and "local directory" in msg
    assert not (tmp_path / "m").exists() and not (tmp_path / ".m.tmp").exists()

    with pytest.raises(ModelError, match="no such local directory"):
        get_architecture("mhubert").prepare(str(tmp_path / "nowhere"), tmp_path / "m")
    with pytest.raises(ModelError, match="only meaningful with source 'tiny'"):
        get_architecture("mhubert").prepare("utter-project/mHuBERT-147", tmp_path / "m", tiny={})
    with pytest.raises(ModelError, match="prepare-model"):
        get_architecture("mhubert").load(tmp_path, 2)


def test_prepare_model_cli_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cltm_main(["prepare-model", "--arch", "mhubert", "--source", "no-such-org/x", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cltm prepare-model: error: model 'no-such-org/x'") and "\n" not in err

    assert cltm_main(["prepare-model", "--arch", "mhubert", "--source", "tiny", "--out", str(tmp_path / "t"),
                      "--tiny", json.dumps(TINY)]) == 0
    assert (tmp_path / "t" / "config.json").is_file() and (tmp_path / "t" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------ cells


def test_single_self_dual_cells_write_complete_metrics(corpus):
    seed_table = read_manifest(corpus["seed0"])
    for donor, cell, by_locale in ((None, "single", {"aa": 8}), ("aa", "self", {"aa": 16}), ("bb", "dual", {"aa": 8, "bb": 8})):
        res = _run(corpus, donor, out=f"{cell}.json")
        on_disk = json.loads((corpus["root"] / "runs" / f"{cell}.json").read_text())
        assert on_disk == json.loads(json.dumps(res))
        for key in ("task", "arch", "target", "donor", "cell", "seed", "metrics", "n_train", "n_train_by_locale", "n_test",
                    "hparams", "timing", "device", "data_hash", "versions", "config_hash"):
            assert key in on_disk, key
        assert on_disk["donor"] == donor and on_disk["cell"] == cell and on_disk["target"] == "aa"
        assert set(on_disk["metrics"]) >= {"macro_f1", "accuracy", "dev_macro_f1"}
        assert all(0.0 <= v <= 1.0 for v in on_disk["metrics"].values())
        assert on_disk["n_train"] == cell_manifest(seed_table, "aa", donor).height == sum(by_locale.values())
        assert on_disk["n_train_by_locale"] == by_locale
        assert on_disk["n_test"] == read_manifest(corpus["test"]).height
        assert set(on_disk["timing"]) == {"setup_s", "compute_s"} | ({"footprint_s"} if cell == "single" else set())
        assert ("footprint" in on_disk) == (cell == "single")  # only single cells record a footprint
        assert set(on_disk["versions"]) >= {"python", "torch", "transformers", "cltm_pipeline"}
        assert on_disk["hparams"] == check_hparams(HP) and on_disk["config_hash"] == "cfg123"
        assert on_disk["training"]["steps"] == HP["epochs"] * -(-on_disk["n_train"] // HP["batch_size"])
        assert len(on_disk["data_hash"]) == 64
    hashes = {json.loads((corpus["root"] / "runs" / f"{c}.json").read_text())["data_hash"] for c in ("single", "self", "dual")}
    assert len(hashes) == 3


def test_same_seed_same_metrics_other_seed_other_run(corpus):
    a = _run(corpus, "bb", out="a.json", predictions_out=corpus["root"] / "runs" / "a.tsv")
    b = _run(corpus, "bb", out="b.json", predictions_out=corpus["root"] / "runs" / "b.tsv")
    for key in ("metrics", "training", "data_hash", "n_train_by_locale"):
        assert a[key] == b[key], key
    assert (corpus["root"] / "runs" / "a.tsv").read_bytes() == (corpus["root"] / "runs" / "b.tsv").read_bytes()
    c = _run(corpus, "bb", seed=1, out="c.json")
    assert c["training"]["train_loss"] != a["training"]["train_loss"] and c["data_hash"] != a["data_hash"]


def test_single_cell_footprint_same_seed_same_bytes(corpus):
    from cltm_pipeline.analysis.footprint import read_footprint
    from cltm_pipeline.layout import footprint_files

    runs = corpus["root"] / "runs"
    a, b = _run(corpus, None, out="fpa/metrics.json"), _run(corpus, None, out="fpb/metrics.json")
    (ia, ba), (ib, bb) = footprint_files(runs / "fpa" / "metrics.json"), footprint_files(runs / "fpb" / "metrics.json")
    assert ba.read_bytes() == bb.read_bytes() and a["footprint"] == b["footprint"]
    fp = read_footprint(ia, ba)
    assert a["footprint"]["selected"] == round(0.05 * a["footprint"]["n_params"]) and a["footprint"]["bytes"] == len(fp.bits)
    assert all(n.startswith("encoder.") for n in fp.names) and "layer 0" in fp.groups  # the head is not the encoder
    off = run_cell(CellSpec("gender", "mhubert", corpus["model"], corpus["seed0"], corpus["test"], corpus["dev"],
                            corpus["ingest"], "aa", None, 0, {**HP, "epochs": 1, "footprint_top": 0},
                            runs / "fpoff" / "metrics.json", device="cpu", config_hash="cfg123"))
    assert "footprint" not in off and not footprint_files(runs / "fpoff" / "metrics.json")[1].exists()


def test_eval_every_and_bad_hparams(corpus):
    res = run_cell(CellSpec("gender", "mhubert", corpus["model"], corpus["seed0"], corpus["test"], corpus["dev"], corpus["ingest"],
                   "aa", None, 0, {**HP, "eval_every": 1}, corpus["root"] / "runs" / "ev.json", device="cpu"))
    steps = res["training"]["steps"]
    assert [s for s, _ in res["training"]["dev_curve"]] == list(range(1, steps + 1))
    assert res["metrics"]["dev_macro_f1"] == max(f for _, f in res["training"]["dev_curve"])
    with pytest.raises(ConfigError, match="unknown key"):
        check_hparams({**HP, "learning_rate": 1})
    with pytest.raises(ConfigError, match="batch_size"):
        check_hparams({**HP, "batch_size": 0})
    assert check_hparams(HP)["checkpoint_every"] is None and check_hparams({"checkpoint_every": 50})["checkpoint_every"] == 50
    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(ConfigError, match="checkpoint_every"):
            check_hparams({**HP, "checkpoint_every": bad})


def test_patience_stops_where_the_dev_curve_stopped_improving(corpus):
    """Early stopping truncates the very run training to the end would make: same curve up to the stop, the
    stop the first evaluation that ends `patience` evaluations without a new best, and unset it changes nothing."""
    def run(name, **hp):
        return run_cell(CellSpec("gender", "mhubert", corpus["model"], corpus["seed0"], corpus["test"], corpus["dev"],
                        corpus["ingest"], "aa", "bb", 0, {**HP, "epochs": 8, "eval_every": 1, **hp},
                        corpus["root"] / "runs" / "patience" / name / "metrics.json", device="cpu"))

    full, early = run("full"), run("p2", patience=2)
    curve, cut = full["training"]["dev_curve"], early["training"]["dev_curve"]
    assert full["training"]["steps"] == 32 and not full["training"]["stopped_early"]
    assert cut == curve[:len(cut)]  # the same training, truncated
    best, stop = 0, None
    for i, (step, value) in enumerate(curve):  # the stop, worked out from the full curve
        if value > curve[best][1]:
            best = i
        if i - best >= 2:
            stop = step
            break
    assert stop is not None, "the test needs a curve that plateaus"
    assert early["training"]["steps"] == stop and early["training"]["stopped_early"]
    assert early["training"]["best_step"] == curve[best][0]
    if full["training"]["best_step"] <= stop:  # the same state selected: the same test metrics
        assert early["metrics"] == full["metrics"]
    assert "patience" not in result_hparams(check_hparams(HP)) and result_hparams(check_hparams({"patience": 3}))["patience"] == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="patience"):
            check_hparams({**HP, "patience": bad})


def test_train_cli_runs_a_cell(corpus):
    out = corpus["root"] / "runs" / "cli" / "metrics.json"
    assert cltm_main([
        "train", "--task", "gender", "--arch", "mhubert", "--model-dir", str(corpus["model"]),
        "--seed-table", str(corpus["seed0"]), "--test", str(corpus["test"]), "--dev", str(corpus["dev"]),
        "--ingest-root", str(corpus["ingest"]), "--target", "aa", "--donor", "-", "--seed", "0",
        "--hparams", json.dumps(HP), "--config-hash", "abc", "--out", str(out), "--device", "cpu",
    ]) == 0
    res = json.loads(out.read_text())
    assert res["donor"] is None and res["cell"] == "single" and res["config_hash"] == "abc"
    assert res["metrics"] == _run(corpus, None, out="cli-lib.json")["metrics"]



# ------------------------------------------------------------------------------ resume


class _Killed(Exception):
    """Stands in for a time limit, preemption or node failure in the middle of training."""


@pytest.fixture(scope="module")
def noisy_model(corpus) -> Path:
    """The test model with dropout, LayerDrop and SpecAugment on: training draws from torch's and numpy's
    global RNGs (besides the crops from the numpy Generator), so a resume that misses one shows."""
    return get_architecture("mhubert").prepare("tiny", corpus["root"] / "noisy-model", tiny={
        **TINY, "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.1, "layerdrop": 0.2,
        "apply_spec_augment": True, "mask_time_prob": 0.2, "mask_time_length": 2})


def _run_noisy(corpus, model, name, checkpoint_every, config_hash="cfg123"):
    out = corpus["root"] / "resume" / name / "metrics.json"
    hp = {**HP, "eval_every": 3, "checkpoint_every": checkpoint_every}  # dual cell: 16 rows, 4 steps/epoch, 8 steps
    return run_cell(CellSpec("gender", "mhubert", model, corpus["seed0"], corpus["test"], corpus["dev"], corpus["ingest"], "aa", "bb",
                    0, hp, out, device="cpu", config_hash=config_hash, predictions_out=out.with_name("pred.tsv")))


def _kill_at(monkeypatch, step: int) -> list[int]:
    """Make the next run raise after optimiser step ``step``; returns the steps it went through."""
    from cltm_pipeline.training import loop

    seen: list[int] = []

    def hook(s: int) -> None:
        seen.append(s)
        if s == step:
            raise _Killed(s)

    monkeypatch.setattr(loop, "STEP_HOOK", hook)
    return seen


def test_a_killed_cell_resumes_from_its_checkpoint_with_identical_results(corpus, noisy_model, monkeypatch, capsys):
    import torch

    from cltm_pipeline.training import loop

    base = _run_noisy(corpus, noisy_model, "base", None)
    assert base["resumed_from_step"] is None and base["training"]["steps"] == 8
    assert [s for s, _ in base["training"]["dev_curve"]] == [3, 6, 8]
    cell = corpus["root"] / "resume" / "cut"
    assert not (corpus["root"] / "resume" / "base" / "checkpoint.pt").exists()
    # killed after step 3 (checkpoint 2: mid-epoch, no best yet), then 5 (resumes at 2; checkpoint 4: an
    # epoch's end, best from step 3 stored beside the model), then 7 (resumes at 4; checkpoint 6: the best
    # is the model itself, stored once); then runs to the end
    kept = []
    for kill, start in ((3, 0), (5, 2), (7, 4)):
        seen = _kill_at(monkeypatch, kill)
        with pytest.raises(_Killed):
            _run_noisy(corpus, noisy_model, "cut", 2)
        assert seen == list(range(start + 1, kill + 1))
        assert not (cell / "metrics.json").exists() and not list(cell.glob(".*.tmp"))
        ck = torch.load(cell / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert ck["training"]["step"] == kill - 1 and ck["identity"]["data_hash"] == base["data_hash"]
        t = ck["training"]
        kept.append((t["epoch"], t["pos"], t["plan"] is None, t["best_step"], t["best_state"] is None, t["best_is_current"]))
    assert base["training"]["best_step"] == 6  # (and step 8 ties it: the earlier state is kept)
    assert kept == [(0, 2, False, 0, True, False), (1, 0, True, 3, False, False), (1, 2, False, 6, True, True)]  # pos: batches
    err = capsys.readouterr().err
    assert "at step 2 of 8" in err and "at step 4 of 8" in err
    monkeypatch.setattr(loop, "STEP_HOOK", None)
    res = _run_noisy(corpus, noisy_model, "cut", 2)
    assert res["resumed_from_step"] == 6 and "at step 6 of 8" in capsys.readouterr().err
    for key in ("metrics", "training", "data_hash", "n_train_by_locale"):
        assert res[key] == base[key], key
    assert (cell / "pred.tsv").read_bytes() == (cell.parent / "base" / "pred.tsv").read_bytes()
    assert json.loads((cell / "metrics.json").read_text())["resumed_from_step"] == 6
    assert not (cell / "checkpoint.pt").exists() and not list(cell.glob(".*.tmp"))

    # the comparison is sharp: a resume that restores all but the global RNG states ends elsewhere
    _kill_at(monkeypatch, 5)
    with pytest.raises(_Killed):
        _run_noisy(corpus, noisy_model, "no-rng", 2)
    monkeypatch.setattr(loop, "STEP_HOOK", None)
    monkeypatch.setattr(loop, "set_rng_states", lambda states: None)
    off = _run_noisy(corpus, noisy_model, "no-rng", 2)
    assert off["resumed_from_step"] == 4 and off["training"]["train_loss"] != base["training"]["train_loss"]


def test_a_checkpoint_from_other_inputs_is_discarded_and_changing_checkpoint_every_keeps_it(corpus, noisy_model, monkeypatch, capsys):
    from cltm_pipeline.training import loop

    base = _run_noisy(corpus, noisy_model, "base2", None)
    cell = corpus["root"] / "resume" / "other"
    _kill_at(monkeypatch, 5)
    with pytest.raises(_Killed):
        _run_noisy(corpus, noisy_model, "other", 2)
    monkeypatch.setattr(loop, "STEP_HOOK", None)
    capsys.readouterr()
    res = _run_noisy(corpus, noisy_model, "other", 2, config_hash="edited")
    err = capsys.readouterr().err
    assert res["resumed_from_step"] is None and "written for other inputs (config_hash differ); discarded" in err
    assert res["metrics"] == base["metrics"] and res["training"] == base["training"]

    (cell / "checkpoint.pt").write_bytes(b"PK\x03\x04 half a file")  # what a failing disk might leave
    res = _run_noisy(corpus, noisy_model, "other", None)
    assert res["resumed_from_step"] is None and "unreadable" in capsys.readouterr().err
    assert res["training"] == base["training"] and not (cell / "checkpoint.pt").exists()

    _kill_at(monkeypatch, 6)
    with pytest.raises(_Killed):
        _run_noisy(corpus, noisy_model, "other", 3)
    monkeypatch.setattr(loop, "STEP_HOOK", None)
    res = _run_noisy(corpus, noisy_model, "other", 4)  # checkpoint_every does not change the results
    assert res["resumed_from_step"] == 6 and res["training"] == base["training"] and res["metrics"] == base["metrics"]


def test_task_artifacts_enter_the_data_hash_and_extras_extend_the_hparams(corpus, tmp_path):
    from cltm_pipeline.training.cell import data_hash

    train = cell_manifest(read_manifest(corpus["seed0"]), "aa", None)
    art = tmp_path / "vocab.json"
    art.write_text("a")
    h1 = data_hash(train, corpus["test"], corpus["dev"], {"vocab.json": art})
    art.write_text("b")
    assert data_hash(train, corpus["test"], corpus["dev"], {"vocab.json": art}) != h1
    assert data_hash(train, corpus["test"], corpus["dev"]) != h1
    assert check_hparams({"margin": 0.3}, {"margin": 0.2})["margin"] == 0.3
    with pytest.raises(ConfigError, match="unknown key.*margin"):
        check_hparams({"margin": 0.3})
