"""Helpers the Snakefile calls at parse time: checks that must fail before any job is submitted."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .commonvoice import read_locale
from .config import Config
from .subsets import check_capacity

__all__ = ["check_release_capacity"]


def check_release_capacity(cfg: Config) -> str:
    """Check every task's regime against the release's metadata (no audio decoding); skip absent locales.

    Returns a short description of what could be checked. A generated demo release that does not exist
    yet is checked again by each subsets job once it does.
    """
    tables: dict[str, pl.DataFrame] = {}
    for locale in cfg.locales:
        d = Path(cfg.release) / locale
        if (d / "validated.tsv").is_file():
            tables[locale] = read_locale(d, locale)
    for task in cfg.tasks:
        check_capacity(cfg.subset_spec(task), tables)
    if not tables:
        return f"no locale (release {cfg.release} not present yet)"
    return f"{len(tables)}/{len(cfg.locales)} locale(s)"
