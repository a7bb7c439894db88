"""Shared fixtures: paths to the real Common Voice samples and a small generated demo release."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# A missing model must fail at once, not after ~30 s of hub retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
REALWORLD = REPO.parent / "shared" / "realworld"


@pytest.fixture(scope="session")
def realworld() -> Path:
    """The real-world samples shipped beside the repo (skip, loudly, if this checkout lacks them)."""
    if not REALWORLD.is_dir():
        pytest.skip(f"{REALWORLD} not present: real Common Voice samples live beside the repo in shared/realworld")
    return REALWORLD


@pytest.fixture(scope="session")
def small_release(tmp_path_factory) -> Path:
    """A small demo release (3 locales, 4 speakers per gender, 4 clips each), built once per test session."""
    from cltm_pipeline.data.demo import DEFAULT_LANGUAGES, build_demo_corpus

    root = tmp_path_factory.mktemp("cv-small")
    langs = tuple(lang for lang in DEFAULT_LANGUAGES if lang.locale in ("es", "de", "fi"))
    return build_demo_corpus(root, languages=langs, speakers_per_gender=6, clips_per_speaker=4, seed=0)
