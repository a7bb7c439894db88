"""The study's models at their real size, offline: random weights of the real shapes written in the hub's
file layout (tests/synthetic_models.py), through ``cltm prepare-model`` and one cell of each task they serve.

- mHuBERT-147 (~94 M parameters): prepared from its save_pretrained layout, then a gender, a speaker-ID
  (SV) and a CTC (ASR) cell for a few optimiser steps on CPU; its preprocessor_config.json enforced;
- ECAPA-TDNN at the study's size (``source: scratch``): one SV cell;
- skit-ai/speechllm-2B: its loader reads only the audio encoder and connector of the sharded checkpoint.
  In CI with a small encoder in the 2B's exact layout (a real-size LLM stub whose own shard is deleted);
  at full size (HuBERT x-large, 1 B parameters, a 8.4 GB checkpoint) marked ``slow``: ~3 minutes and ~5 GB.

The corpus is synthetic voices (as in test_sv.py): these tests check that the real-size paths run, not learning.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from cltm_pipeline.data.audio import SAMPLE_RATE
from cltm_pipeline.cli import main as cltm
from cltm_pipeline.io import write_bytes, write_npy, write_tsv
from cltm_pipeline.models import get_architecture
from cltm_pipeline.errors import ModelError
from cltm_pipeline.models.checkpoint import INDEX
from cltm_pipeline.models.hubert import check_preprocessor, read_preprocessor
from cltm_pipeline.models.speechllm import CONNECTOR_PREFIXES, ENCODER_CONFIGS, ENCODER_PREFIX
from cltm_pipeline.data.subsets import SubsetSpec, draw_seed, eval_sets
from cltm_pipeline.tasks.asr import build_vocab
from cltm_pipeline.tasks.sv import DEV_TRIALS, TRIALS, build_dev_trials, build_trials
from cltm_pipeline.protocol import CellSpec
from cltm_pipeline.training.cell import run_cell

from synthetic_models import MHUBERT_147, MHUBERT_147_PREPROCESSOR, write_mhubert147, write_speechllm_2b
from test_sv import _voice

LOCALES = ("aa", "bb")
SPECS = {
    "gender": SubsetSpec(task="gender", languages=LOCALES, n=4),
    "sv": SubsetSpec(task="sv", languages=LOCALES, n=4),
    "asr": SubsetSpec(task="asr", languages=LOCALES, n=4, balance="none"),
}
#: two optimiser steps of each task at the study's learning rates, batches small enough for CPU
HP = {
    "gender": {"epochs": 1, "lr": 1e-5, "batch_size": 2, "max_seconds": 0.4, "threads": 2},
    "sv": {"epochs": 1, "lr": 1e-5, "batch_size": 2, "max_seconds": 0.4, "threads": 2, "pool_layers": 4},
    "asr": {"epochs": 1, "lr": 1e-5, "batch_seconds": 0.8, "max_clip_seconds": 0.5, "select_by": "cer",
            "asr_unit": "char", "threads": 2},
}
#: a small HuBERT in the x-large's layer-norm variant, for the speechllm loader in CI
SMALL_ENCODER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                 "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True, "conv_dim": [16] * 7,
                 "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """2 locales x 2 genders x 7 speakers (2 test, 2 dev, 3 train) x 2 clips of 0.25-0.4 s, and for target aa
    each task's eval sets, seed-0 table and artifacts (SV trials, ASR vocabulary)."""
    root = tmp_path_factory.mktemp("real-size")
    rng = np.random.default_rng(0)
    tables = {}
    for loc in LOCALES:
        rows, audio, offset = [], [], 0
        for g, base in (("female", 220.0), ("male", 120.0)):
            for k in range(7):
                split = "test" if k < 2 else "dev" if k < 4 else "train"
                spk = hashlib.sha512(f"{loc}-{g}-{k}".encode()).hexdigest()
                f0, tilt = base * rng.uniform(0.8, 1.2), rng.uniform(0.5, 2.0)
                for c in range(2):
                    x = _voice(rng, f0, tilt, rng.uniform(0.25, 0.4))
                    rows.append((f"common_voice_{loc}_{g}{k}_{c}", loc, spk, g, split, x.size / SAMPLE_RATE, offset,
                                 x.size, f"{loc} dice {g} {k} {c}."))
                    audio.append(x)
                    offset += x.size
        cols = ["utt_id", "locale", "client_id", "gender", "cv_split", "duration_s", "offset", "num_samples", "sentence"]
        tables[loc] = pl.DataFrame(rows, schema=cols, orient="row")
        write_npy(root / "ingest" / loc / "audio.npy", np.concatenate(audio))
    paths: dict = {"root": root, "ingest": root / "ingest"}
    for task, spec in SPECS.items():
        d = root / task
        test, dev = eval_sets(spec, "aa", tables["aa"])
        write_tsv(d / "test.tsv", test)
        write_tsv(d / "dev.tsv", dev)
        write_tsv(d / "seed0.tsv", draw_seed(spec, "aa", 0, tables, test, dev))
        arts = {}
        if task == "sv":
            write_bytes(d / TRIALS, build_trials(spec, test, dev))
            write_bytes(d / DEV_TRIALS, build_dev_trials(spec, test, dev))
            arts = {TRIALS: d / TRIALS, DEV_TRIALS: d / DEV_TRIALS}
        if task == "asr":
            write_bytes(d / "vocab.json", build_vocab(spec, tables))
            arts = {"vocab.json": d / "vocab.json"}
        paths[task] = (d, arts)
    return paths


def _cell(corpus, task, arch, model_dir, out, donor=None, **hp):
    """A cell of target aa, seed 0; by default the single cell (the smallest: 4 training clips; 8 test and
    8 dev clips)."""
    d, arts = corpus[task]
    return run_cell(CellSpec(task, arch, model_dir, d / "seed0.tsv", d / "test.tsv", d / "dev.tsv", corpus["ingest"], "aa",
                    donor, 0, {**HP[task], **hp}, corpus["root"] / "runs" / out, device="cpu", config_hash="c",
                    artifacts=arts))


def _prepare_fails(arch: str, source: Path | str, out: Path, capsys) -> str:
    """``cltm prepare-model`` that must exit 2; its one-line error."""
    assert cltm(["prepare-model", "--arch", arch, "--source", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("cltm prepare-model: error: ")
    return err


def _prepare(arch: str, source: Path | str, out: Path) -> dict:
    assert cltm(["prepare-model", "--arch", arch, "--source", str(source), "--out", str(out)]) == 0
    return json.loads((out / "cltm_model.json").read_text())


# ------------------------------------------------------------------------------------------ mHuBERT-147


@pytest.fixture(scope="module")
def mhubert(tmp_path_factory) -> Path:
    """mHuBERT-147 at its real size in its hub layout, through ``cltm prepare-model``."""
    root = tmp_path_factory.mktemp("mhubert147")
    source = write_mhubert147(root / "hub")
    assert sorted(p.name for p in source.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    return source


def test_mhubert147_prepares_at_its_real_size(mhubert, tmp_path):
    info = _prepare("mhubert", mhubert, tmp_path / "m")
    assert 94_000_000 < info["parameters"] < 96_000_000 and info["source"] == str(mhubert)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert {k: config[k] for k in ("hidden_size", "num_hidden_layers", "feat_extract_norm", "conv_bias")} == \
        {k: MHUBERT_147[k] for k in ("hidden_size", "num_hidden_layers", "feat_extract_norm", "conv_bias")}
    pre = json.loads((tmp_path / "m" / "preprocessor_config.json").read_text())
    assert (pre["sampling_rate"], pre["do_normalize"], pre["return_attention_mask"]) == (16000, True, False)
    model = get_architecture("mhubert").load(tmp_path / "m", 2)
    assert model.do_normalize is True and model.pass_mask is False  # what its preprocessor and config ask for


def test_mhubert147_preprocessor_settings_are_enforced(mhubert, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(mhubert, bad)
    (bad / "preprocessor_config.json").write_text(json.dumps({**MHUBERT_147_PREPROCESSOR, "sampling_rate": 8000}))
    err = _prepare_fails("mhubert", bad, tmp_path / "m", capsys)
    assert "bad/preprocessor_config.json: sampling_rate is 8000" in err and not (tmp_path / "m").exists()
    with pytest.raises(ModelError, match="feature_size is 80"):
        check_preprocessor({**MHUBERT_147_PREPROCESSOR, "feature_size": 80}, "x")
    with pytest.raises(ModelError, match="feature_extractor_type is 'SeamlessM4TFeatureExtractor'"):
        check_preprocessor({"feature_extractor_type": "SeamlessM4TFeatureExtractor"}, "x")
    (bad / "preprocessor_config.json").write_text(json.dumps({**MHUBERT_147_PREPROCESSOR, "do_normalize": False}))
    assert read_preprocessor(bad) is False  # a model that wants raw input gets raw input


@pytest.mark.parametrize("task", ["gender", "sv", "asr"])
def test_mhubert147_trains_a_cell_of_each_task(corpus, mhubert, task, tmp_path_factory):
    model_dir = tmp_path_factory.getbasetemp() / "mhubert147-prepared"
    if not model_dir.exists():
        get_architecture("mhubert").prepare(str(mhubert), model_dir)
    res = _cell(corpus, task, "mhubert", model_dir, f"mhubert/{task}.json")
    t = res["training"]
    assert res["cell"] == "single" and t["steps"] >= 2 and all(np.isfinite(t["train_loss"]))
    assert all(np.isfinite(v) for v in res["metrics"].values())
    assert res["model"]["source"] == str(mhubert)


# ------------------------------------------------------------------------------------------ ECAPA


def test_ecapa_at_the_studys_size_trains_an_sv_cell(corpus, tmp_path):
    info = _prepare("ecapa", "scratch", tmp_path / "ecapa")
    assert 20_000_000 < info["parameters"] < 23_000_000  # channels 1024, 192-dim embeddings, 80 mels
    res = _cell(corpus, "sv", "ecapa", tmp_path / "ecapa", "ecapa/sv.json", lr=1e-3, aam_scale=30.0, aam_margin=0.2)
    assert res["training"]["steps"] >= 2 and all(np.isfinite(v) for v in res["metrics"].values())


# ------------------------------------------------------------------------------------------ SpeechLLM-2B


def _tensor_bytes(source: Path, keep) -> tuple[int, int]:
    """Bytes of the tensors ``keep(name)`` selects and of all tensors, from the shards' own headers."""
    index = json.loads((source / INDEX).read_text())
    sizes = {}
    for shard in sorted(set(index["weight_map"].values())):
        path = source / shard
        if not path.exists():
            continue
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        sizes.update({k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"})
    return sum(v for k, v in sizes.items() if keep(k)), index["metadata"]["total_size"]


@pytest.mark.parametrize("prefix,legacy", [(CONNECTOR_PREFIXES[0], False), (CONNECTOR_PREFIXES[1], True)])
def test_speechllm_loader_reads_only_the_audio_encoder_and_connector(tmp_path, monkeypatch, prefix, legacy):
    monkeypatch.setitem(ENCODER_CONFIGS, "test/small-hubert", SMALL_ENCODER)
    source = write_speechllm_2b(tmp_path / "hub", encoder=SMALL_ENCODER, audio_encoder_name="test/small-hubert",
                                connector_prefix=prefix, weight_norm_legacy=legacy, shard_bytes=2_000_000_000)
    index = json.loads((source / INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) == 3 and index["weight_map"]["llm_model.lm_head.weight"] == shards[-1]
    (source / shards[-1]).unlink()  # the LLM-only shards are not needed: delete them
    (source / shards[1]).unlink()
    info = _prepare("speechllm", source, tmp_path / "m")
    wanted, total = _tensor_bytes(source, lambda k: k.startswith((ENCODER_PREFIX, prefix)))
    read = info["read"]
    assert read["shards"] == [shards[0]] and read["checkpoint_bytes"] == total > 4_000_000_000
    assert wanted < read["bytes"] < wanted + 64_000  # the tensors plus one shard header; no LLM tensor
    emb = get_architecture("speechllm").embedder(tmp_path / "m", "cpu")
    waves, lengths = torch.randn(3, 16000), torch.tensor([16000, 8000, 2000])
    e = emb(waves, lengths)
    assert e.shape == (3, 2 * SMALL_ENCODER["hidden_size"]) and torch.allclose(e.norm(dim=-1), torch.ones(3))
    alone = emb(waves[1:2, :8000], lengths[1:2])
    assert torch.allclose(alone[0], e[1], atol=1e-5)  # padding does not change a clip's embedding
    assert get_architecture("speechllm").embedding_dim(tmp_path / "m") == e.shape[1]


def test_speechllm_loader_names_what_does_not_match(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ENCODER_CONFIGS, "test/small-hubert", SMALL_ENCODER)
    source = write_speechllm_2b(tmp_path / "hub", encoder=SMALL_ENCODER, audio_encoder_name="test/other", llm=False)
    err = _prepare_fails("speechllm", source, tmp_path / "m", capsys)
    assert "audio_encoder_name is 'test/other'" in err
    monkeypatch.setitem(ENCODER_CONFIGS, "test/other", {**SMALL_ENCODER, "num_hidden_layers": 3})
    err = _prepare_fails("speechllm", source, tmp_path / "m", capsys)
    assert "tensors do not match" in err and "missing (e.g. encoder.layers.2." in err


@pytest.mark.slow
def test_speechllm_2b_audio_encoder_at_real_size(corpus, tmp_path):
    """3 minutes (70 CPU-seconds) and 5.9 GB peak memory on two shared cores; 8.4 GB of disk, 4 GB of it
    written (the LLM stub is sparse)."""
    source = write_speechllm_2b(tmp_path / "hub")
    index = json.loads((source / INDEX).read_text())
    llm_only = sorted(set(index["weight_map"].values()))[-1]
    (source / llm_only).unlink()
    info = _prepare("speechllm", source, tmp_path / "m")
    wanted, total = _tensor_bytes(source, lambda k: k.startswith((ENCODER_PREFIX, CONNECTOR_PREFIXES[0])))
    assert info["read"]["bytes"] - wanted < 200_000 and total == info["read"]["checkpoint_bytes"] > 8_000_000_000
    assert 0.47 < info["read"]["bytes"] / total < 0.49 and 999_000_000 < info["parameters"] < 1_002_000_000
    # the self cell: 8 clips of 6 training speakers, so some speaker has the two clips a same-speaker pair needs
    res = _cell(corpus, "sv", "speechllm", tmp_path / "m", "speechllm/sv.json", donor="aa", lr=1e-3, mlp_hidden=256)
    assert all(np.isfinite(v) for v in res["metrics"].values()) and res["timing"]["encoder_forwards"] > 0


def test_checkpoint_reader_and_writer_agree_with_the_safetensors_library(tmp_path):
    """Hub checkpoints are written by the safetensors library: read_tensors reads its files exactly, and the
    synthetic writer's files are what safe_open reads."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from cltm_pipeline.models.checkpoint import SINGLE, read_tensors, tensor_names, write_safetensors

    g = torch.Generator().manual_seed(0)
    tensors = {"a.weight": torch.randn(3, 5, generator=g), "b.half": torch.randn(7, generator=g).half(),
               "c.bf16": torch.randn(2, 2, generator=g).bfloat16(), "d.ids": torch.arange(5), "e.empty": torch.zeros(0, 4)}
    save_file(tensors, str(tmp_path / SINGLE))

    def fetch(name: str) -> Path:  # a local checkpoint directory, as models.hubert.source_files gives it
        if not (tmp_path / name).exists():
            raise ModelError(name)
        return tmp_path / name

    names = tensor_names(fetch)
    assert sorted(names) == sorted(tensors)
    got = read_tensors(fetch, {k: v for k, v in names.items() if k != "d.ids"})
    assert sorted(got.tensors) == sorted(set(tensors) - {"d.ids"})
    assert all(torch.equal(got.tensors[k], tensors[k]) and got.tensors[k].dtype == tensors[k].dtype for k in got.tensors)
    assert got.bytes_read < (tmp_path / SINGLE).stat().st_size  # d.ids (40 bytes) was skipped
    ours = tmp_path / "ours.safetensors"
    write_safetensors(ours, {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}, lambda k: tensors[k])
    with safe_open(str(ours), "pt") as f:
        assert sorted(f.keys()) == sorted(tensors) and all(torch.equal(f.get_tensor(k), v) for k, v in tensors.items())


def test_speechllm_prepares_by_hub_id_from_the_hf_cache_offline(tmp_path, monkeypatch, capsys):
    """The cluster's path: ``source: skit-ai/speechllm-2B`` with HF_HUB_OFFLINE=1 and the files in the HF cache
    (its snapshots/<commit>/ layout), the LLM-only shard never downloaded."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "cache"))
    err = _prepare_fails("speechllm", "skit-ai/speechllm-2B", tmp_path / "m", capsys)
    assert "HF_HUB_OFFLINE=1 is set" in err and "hf download skit-ai/speechllm-2B" in err
    monkeypatch.setitem(ENCODER_CONFIGS, "test/small-hubert", SMALL_ENCODER)
    repo, commit = tmp_path / "cache" / "models--skit-ai--speechllm-2B", "0123456789abcdef0123456789abcdef01234567"
    source = write_speechllm_2b(repo / "snapshots" / commit, encoder=SMALL_ENCODER, audio_encoder_name="test/small-hubert",
                                shard_bytes=2_000_000_000)
    (source / sorted(set(json.loads((source / INDEX).read_text())["weight_map"].values()))[-1]).unlink()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    info = _prepare("speechllm", "skit-ai/speechllm-2B", tmp_path / "m")
    assert info["revision"] == commit and info["source"] == "skit-ai/speechllm-2B" and len(info["read"]["shards"]) == 1
