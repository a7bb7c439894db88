"""Latent language-ID probes: the probe set, the probe itself on embeddings with a known answer, and a cell."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from cltm_pipeline.errors import ConfigError
from cltm_pipeline.training.probe import language_probe
from cltm_pipeline.data.subsets import build_probe_set
from cltm_pipeline.data.subsets import SubsetSpec, eval_sets
from cltm_pipeline.training.hparams import check_hparams

from test_train import HP, LOCALES, _run, corpus  # noqa: F401  (the synthetic three-locale corpus)


def _embeddings(separation: float, seed: int = 0) -> tuple[np.ndarray, list[str], list[str]]:
    """3 languages x 4 speakers x 5 clips in 8-D: language means ``separation`` apart, speaker offsets 0.3."""
    rng = np.random.default_rng(seed)
    emb, locs, spks = [], [], []
    for li, loc in enumerate(("aa", "bb", "cc")):
        centre = np.zeros(8)
        centre[li] = separation
        for s in range(4):
            spk = centre + rng.normal(0, 0.3, 8)
            for _ in range(5):
                emb.append(spk + rng.normal(0, 0.3, 8))
                locs.append(loc)
                spks.append(f"{loc}{s}")
    return np.array(emb), locs, spks


def test_probe_separates_separable_languages_and_not_random_ones():
    sep = language_probe(*_embeddings(5.0))
    assert sep["accuracy"] == 1.0 and sep["chance"] == pytest.approx(1 / 3) and sep["n"] == 60 and sep["folds"] == 4
    assert sep["languages"] == ["aa", "bb", "cc"] and len(sep["projection"]["x"]) == 60
    # the 2-D map keeps the structure: each language's points sit together, far from the others
    xy = np.c_[sep["projection"]["x"], sep["projection"]["y"]]
    centres = np.array([xy[i * 20:(i + 1) * 20].mean(0) for i in range(3)])
    within = max(np.linalg.norm(xy[i * 20:(i + 1) * 20] - centres[i], axis=1).max() for i in range(3))
    assert min(np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i)) > within
    # no language structure: chance on average, neither above (speakers are held out, their offsets cannot
    # pass for languages) nor below (every fold keeps every language, with balanced weights)
    rand = np.mean([language_probe(*_embeddings(0.0, seed=s))["accuracy"] for s in range(10)])
    assert 0.2 < rand < 0.5
    assert language_probe(*_embeddings(5.0), seed=0) == language_probe(*_embeddings(5.0), seed=0)
    emb, locs, spks = _embeddings(5.0)
    assert language_probe(emb[:20], locs[:20], spks[:20]) is None  # one language: nothing to probe


def test_a_cell_probes_its_trained_model(corpus, tmp_path):
    from cltm_pipeline.io import write_tsv

    tables = corpus["tables"]
    spec = SubsetSpec(task="gender", languages=LOCALES, n=8, seeds=(0,))
    probe = build_probe_set(spec, tables, per_language=8)
    assert probe.equals(build_probe_set(spec, tables, per_language=8))
    for loc in LOCALES:
        dev_speakers = set(eval_sets(spec, loc, tables[loc])[1]["client_id"].to_list())
        mine = probe.filter(pl.col("locale") == loc)
        assert mine.height == 8 and set(mine["client_id"].to_list()) <= dev_speakers
    write_tsv(tmp_path / "probe.tsv", probe)
    res = _run(corpus, "bb", out="probed.json", probe_path=tmp_path / "probe.tsv")
    assert "probe" not in res  # probe_clips defaults to 0
    hp = {**HP, "probe_clips": 8}  # all 8: both dev speakers of each language
    from cltm_pipeline.protocol import CellSpec
    from cltm_pipeline.training.cell import run_cell

    res = run_cell(CellSpec("gender", "mhubert", corpus["model"], corpus["seed0"], corpus["test"], corpus["dev"], corpus["ingest"],
                   "aa", "bb", 0, hp, tmp_path / "m.json", device="cpu", probe_path=tmp_path / "probe.tsv"))
    p = res["probe"]
    assert p["languages"] == list(LOCALES) and p["n"] == 24 and p["folds"] == 2 and 0 <= p["accuracy"] <= 1
    assert len(p["projection"]["locale"]) == 24
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="probe_clips"):
            check_hparams({**HP, "probe_clips": bad})
