"""Config cross-checks the schema cannot express: one line naming the key and what is wrong."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cltm_pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def demo() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _load(raw: dict):
    return load_config(raw, source="cfg", root=REPO)


def test_the_metric_must_be_one_of_the_task_s(demo):
    assert _load(demo).raw["tasks"]["gender"]["metric"] == "macro_f1"
    ok = copy.deepcopy(demo)
    ok["tasks"]["gender"]["metric"] = "accuracy"
    assert _load(ok).raw["tasks"]["gender"]["metric"] == "accuracy"
    bad = copy.deepcopy(demo)
    bad["tasks"]["gender"]["metric"] = "wer"
    with pytest.raises(ConfigError, match=r"^cfg: tasks.gender.metric: 'wer' is not a metric of gender \(macro_f1, accuracy\)$"):
        _load(bad)


def test_an_unknown_hparam_is_named_with_its_path(demo):
    bad = copy.deepcopy(demo)
    bad["tasks"]["gender"]["architectures"]["mhubert"]["hparams"]["probe_clip"] = 3
    with pytest.raises(ConfigError, match=r"tasks.gender.architectures.mhubert.hparams: unknown key\(s\) probe_clip"):
        _load(bad)


def test_the_learning_curve_is_checked_with_the_config(demo):
    ok = _load(demo)
    assert ok.learning_curve_seeds() == list(range(demo["learning_curve"].get("seeds", 3)))
    for change, message in (
        ({"arch": "ecapa"}, r"learning_curve: no task/arch gender/ecapa in tasks"),
        ({"languages": ["es", "xx"]}, r"learning_curve.languages: \['xx'\] not in task gender"),
        ({"task": "sv", "arch": "mhubert", "languages": ["es"]}, r"learning_curve.task: sv needs artifacts"),
    ):
        bad = copy.deepcopy(demo)
        bad["learning_curve"].update(change)
        with pytest.raises(ConfigError, match=message):
            _load(bad)
