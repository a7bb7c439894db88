"""Fine-tuning footprints on constructed updates: mask bytes, Jaccard overlap and the Mantel direction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cltm_pipeline.analysis.footprint import (chance_jaccard, footprint_index, overlap_analysis, overlap_rows,
                                              pack_masks, parameter_group, read_footprint, top_mask)
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.io import write_bytes, write_json
from cltm_pipeline.layout import cell_files, footprint_files

NAMES = ["encoder.encoder.layers.0.attention.q_proj.weight", "encoder.encoder.layers.1.fc.bias",
         "encoder.feature_projection.projection.weight"]
SHAPES = [(10, 10), (50,), (5, 10)]  # 200 parameters, the middle one not a multiple of 8 (padding)


def _write(runs: Path, target: str, seed: int, deltas: list[np.ndarray], top: float = 0.05) -> None:
    """A single cell's footprint files as the training side writes them (same functions, same layout), and
    the metrics.json field that names them."""
    metrics, _ = cell_files(runs, target, None, seed)
    masks = top_mask(deltas, top)
    bits = pack_masks(masks)
    index_path, bits_path = footprint_files(metrics)
    write_bytes(bits_path, bits)
    index = footprint_index(NAMES, [np.ones(s) for s in SHAPES], deltas, masks, top, bits)
    write_json(index_path, index)
    write_json(metrics, {"metrics": {}, "footprint": {"sha256": index["sha256"], "bytes": len(bits)}})


def _split(flat: np.ndarray) -> list[np.ndarray]:
    out, pos = [], 0
    for s in SHAPES:
        n = int(np.prod(s))
        out.append(flat[pos:pos + n].reshape(s))
        pos += n
    return out


def test_mask_bytes_of_a_constructed_update_and_ties_by_position():
    d0 = np.array([[0.1, -5.0, 0.2], [3.0, 0.0, 0.0]])
    d1 = np.array([1.0, -1.0, 4.0, 0.0])
    masks = top_mask([d0, d1], 0.3)  # 10 parameters: the 3 largest |update| are -5, 4 and 3
    assert [m.shape for m in masks] == [(2, 3), (4,)]
    assert pack_masks(masks) == bytes([0b01010000, 0b00100000])
    # all equal: round(0.5 * 4) = 2 of them, the first two
    assert pack_masks(top_mask([np.ones(4)], 0.5)) == bytes([0b11000000])
    # same update, same bytes; the index records the count, size and hash
    bits = pack_masks(masks)
    index = footprint_index(["encoder.layers.0.w", "encoder.proj.b"], [d0 * 0, d1 * 0], [d0, d1], masks, 0.3, bits)
    assert index["selected"] == 3 and index["n_params"] == 10 and index["bytes"] == 2 and index["threshold"] == 3.0
    assert [t["byte_offset"] for t in index["tensors"]] == [0, 1]
    assert index["tensors"][0]["update_norm"] == pytest.approx(np.linalg.norm(d0))
    with pytest.raises(ValueError):
        top_mask([d0], 0.0)


def test_parameter_groups_are_layers_or_modules():
    assert parameter_group(NAMES[0]) == (0, "layer 0")
    assert parameter_group("backbone.encoder.encoder.layers.11.fc.weight") == (11, "layer 11")
    assert parameter_group("encoder.feature_extractor.conv_layers.2.conv.weight") == (None, "feature_extractor.conv_layers")
    assert chance_jaccard(0.05) == pytest.approx(0.05 / 1.95)


def test_identical_updates_overlap_1_disjoint_0_and_per_group(tmp_path):
    runs = tmp_path / "runs"
    base = np.zeros(200)
    same, far = base.copy(), base.copy()
    same[:10] = 1.0  # the top 5 % (10 of 200) of both a and b
    far[100:110] = 1.0  # 10 parameters elsewhere (tensor 2)
    for s in (0, 1):
        _write(runs, "aa", s, _split(same + s * 1e-3 * np.arange(200) / 200))
        _write(runs, "bb", s, _split(same))
        _write(runs, "cc", s, _split(far))
    res = overlap_analysis(runs, ["aa", "bb", "cc"], [0, 1])
    ov = np.array(res["overlap"], dtype=float)
    assert ov[0, 1] == ov[1, 0] == 1.0 and ov[0, 2] == 0.0 and ov[1, 2] == 0.0
    assert res["overlap_sd"][0][1] == 0.0 and res["overlap_n"][0][1] == 2
    so = res["self_overlap"]["cc"]  # two seeds: one pair, no spread
    assert so["mean"] == 1.0 and so["pairs"] == 1 and np.isnan(so["sd"])
    prof = {p["group"]: p for p in res["profile"]}
    assert set(prof) == {"layer 0", "layer 1", "feature_projection.projection"}
    assert prof["layer 0"]["params"] == 100 and prof["layer 0"]["pairs"] == 6
    # layer 0 holds every selected bit of aa and bb: 1 for (aa, bb), 0 for the pairs with cc, per seed
    assert prof["layer 0"]["jaccard"] == pytest.approx(1 / 3)
    assert np.isnan(prof["feature_projection.projection"]["jaccard"])  # nobody selected anything there
    # how far each group moved, ||update|| / ||initial|| (initial all ones): aa and bb (4 cells) moved 10 of
    # layer 0's 100 parameters by 1, cc (2 cells) none of them
    assert prof["layer 0"]["relative_update"] == pytest.approx(4 * np.sqrt(10) / 10 / 6, abs=1e-3)
    # across seeds (0 with 1): aa and bb keep their shared footprint, cc its own
    assert np.array(res["overlap_cross_seed"], dtype=float)[0, 1] == pytest.approx(1.0)
    assert res["cross_seed"]["same_language"] == pytest.approx(1.0)
    assert res["cross_seed"]["other_language"] == pytest.approx(1 / 3)
    assert res["cross_seed"]["seed_pairs"] == [[0, 1]]
    rows = overlap_rows(res)
    assert len(rows) == 9 and rows[1] == {"language_a": "aa", "language_b": "bb", "jaccard": 1.0, "sd": 0.0, "seeds": 2}


def test_overlap_that_tracks_C_gives_a_positive_significant_mantel(tmp_path):
    runs, L, n = tmp_path / "runs", 6, 200
    rng = np.random.default_rng(0)
    pos = np.arange(n)
    centres = np.linspace(20, 180, L)
    langs = [f"l{i}" for i in range(L)]
    for s in (0, 1, 2):
        for i, t in enumerate(langs):  # each language moves most the parameters near its own centre
            delta = np.exp(-((pos - centres[i]) / 15.0) ** 2) + 0.05 * rng.random(n)
            _write(runs, t, s, _split(delta), top=0.2)
    dist = np.abs(centres[:, None] - centres[None, :])
    C = 1.0 - dist / dist.max() + 0.02 * rng.standard_normal((L, L))  # transfer falls with distance
    res = overlap_analysis(runs, langs, [0, 1, 2], C, permutations=9999, seed=0)
    m = res["mantel"]
    assert m["r"] > 0.6 and m["p"] < 0.01 and m["n_languages"] == L and m["exact"]
    ov = np.array(res["overlap"], dtype=float)
    assert ov[0, 1] > ov[0, 5] and res["chance"] == pytest.approx(0.2 / 1.8)
    # against the reversed relation the sign flips
    assert overlap_analysis(runs, langs, [0, 1, 2], -C, permutations=99)["mantel"]["r"] < -0.6


def test_cells_without_a_footprint_are_named_not_filled(tmp_path):
    runs = tmp_path / "runs"
    metrics, _ = cell_files(runs, "aa", None, 0)
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"metrics": {}, "footprint": {"skipped": "no fine-tuned encoder (mlp)"}}))
    res = overlap_analysis(runs, ["aa", "bb"], [0])
    assert res["available"] is False and res["reason"] == "no fine-tuned encoder (mlp)"
    assert res["cells_missing"] == ["bb/seed0"] and overlap_rows(res) == []
    # a footprint left from an earlier run of a cell whose metrics.json no longer names it is not used
    _write(runs, "bb", 0, _split(np.arange(200.0)))
    _write(runs, "cc", 0, _split(np.arange(200.0)))
    metrics, _ = cell_files(runs, "cc", None, 0)
    metrics.write_text(json.dumps({"metrics": {}}))
    res = overlap_analysis(runs, ["aa", "bb", "cc"], [0])
    assert res["cells_with_footprint"] == 1 and set(res["cells_skipped"]) == {"aa/seed0", "cc/seed0"}


def test_a_truncated_bits_file_is_a_one_line_error(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "aa", 0, _split(np.arange(200.0)))
    index, bits = footprint_files(cell_files(runs, "aa", None, 0)[0])
    bits.write_bytes(bits.read_bytes()[:-1])
    with pytest.raises(ConfigError, match=r"footprint.bits: 26 bytes do not match footprint.json \(27 bytes"):
        read_footprint(index, bits)


def test_footprint_top_is_checked_as_a_fraction():
    from cltm_pipeline.training.hparams import check_hparams

    assert check_hparams({})["footprint_top"] == 0.05
    for bad in (1.5, -0.1, "5%", True):
        with pytest.raises(ConfigError, match="hparams.footprint_top"):
            check_hparams({"footprint_top": bad})


def _analysed_matrix(tmp_path):
    """A 4-language matrix where de hurts es, its analysis, and constructed footprints (neighbours overlap)."""
    import polars as pl

    from cltm_pipeline.analysis.matrix import RUNS_SCHEMA, build_matrices
    from cltm_pipeline.analysis.properties import analyse

    langs = ["es", "it", "de", "nl"]
    sheet = pl.DataFrame({"locale": langs, "name": ["Spanish", "Italian", "German", "Dutch"],
                          "family": ["Romance", "Romance", "Germanic", "Germanic"], "iso639_3": ["spa", "ita", "deu", "nld"]})
    rows = []
    for t in langs:
        for d in [None, *langs]:
            # de as a donor hurts es (a < b by 0.05 at every seed); the rest transfers half as much as self
            mean = 0.6 if d is None else 0.7 if d == t else 0.55 if (t, d) == ("es", "de") else 0.65
            rows += [(t, d, s, mean + 0.003 * ((s * 7 + len(d or "")) % 5)) for s in range(5)]
    result = build_matrices(pl.DataFrame(rows, schema=RUNS_SCHEMA, orient="row"), langs, metric="macro_f1")
    runs = tmp_path / "runs"
    for s in range(3):
        for k, t in enumerate(langs):
            flat = np.zeros(200)
            flat[10 * k:10 * k + 20] = 1.0 + 0.01 * s  # neighbours in the list share half their footprint
            _write(runs, t, s, _split(flat + 1e-6 * np.arange(200)), top=0.1)
    a = analyse(result, list(sheet["family"]), [], [], {}, permutations=99)
    a["footprint"] = overlap_analysis(runs, langs, [0, 1, 2], result.C, permutations=99)
    return sheet, result, json.loads(json.dumps(a))


def test_report_names_interference_cells_and_shows_the_overlap(tmp_path):
    from cltm_pipeline.report import MatrixEntry, render_report
    from cltm_pipeline.report.interference import interference_cells

    sheet, result, a = _analysed_matrix(tmp_path)
    assert [(result.languages[i], result.languages[j]) for i, j in interference_cells(result)] == [("es", "de")]
    out = tmp_path / "index.html"
    render_report([MatrixEntry("gender", "tiny", "macro_f1", result, analysis=a)], sheet, None, {}, out)
    html = out.read_text(encoding="utf-8")
    sec = html[html.index('id="gender-tiny-interference-section"'):]
    assert "1 cell where donor data significantly hurts" in sec
    assert "<td>Spanish</td><td>German</td>" in sec
    assert 'id="gender-tiny-overlap"' in sec and 'id="gender-tiny-overlap-profile"' in sec
    m = a["footprint"]["mantel"]
    assert f"Mantel r = <b>{m['r']:.2f}</b>" in sec
    assert "Seed or language?" in sec and "other language, other seed" in sec


def test_a_footprint_block_missing_a_shown_key_fails_naming_it(tmp_path):
    from cltm_pipeline.report import Analysis, ResultsError

    _, _, a = _analysed_matrix(tmp_path)
    assert Analysis.parse(a, "a.json").footprint["available"] is True
    del a["footprint"]["profile"][1]["jaccard"]
    with pytest.raises(ResultsError, match=r"a.json: missing key 'footprint.profile.1.jaccard'"):
        Analysis.parse(a, "a.json")
    del a["footprint"]["mantel"]["r"]
    a["footprint"]["profile"][1]["jaccard"] = 0.0
    with pytest.raises(ResultsError, match=r"missing key 'footprint.mantel.r'"):
        Analysis.parse(a, "a.json")


def test_the_speaker_id_footprint_is_the_encoder_whatever_the_number_of_training_speakers(tmp_path):
    """SV mhubert wraps the HuBERT classifier, head included, as its backbone: the head's size is the cell's
    number of training speakers, so a footprint holding it made cells of one matrix incomparable (the demo's
    `cltm analyse` failed on sv/mhubert)."""
    from cltm_pipeline.models import get_architecture
    from cltm_pipeline.training.footprint import encoder_parameters

    arch = get_architecture("mhubert")
    model_dir = arch.prepare("tiny", tmp_path / "tiny")
    hp = {"freeze_feature_encoder": False, "pool_layers": 4}
    shapes = [[(n, tuple(p.shape)) for n, p in encoder_parameters(arch.load_sv(model_dir, k, hp))] for k in (9, 10)]
    assert shapes[0] == shapes[1] and shapes[0]
    assert not any("head" in n.split(".") for n, _ in shapes[0])
    assert all(n.startswith("backbone.encoder.") for n, _ in shapes[0])
