"""What several ``cltm`` subcommands share: JSON arguments, task artifacts, ingested tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import polars as pl

from cltm_pipeline.errors import ConfigError

__all__ = ["json_arg", "parse_artifacts", "read_tables", "add_cell_arguments"]


def json_arg(text: str, what: str) -> Any:
    """A JSON argument given inline or as ``@path``; invalid JSON is a one-line ConfigError naming the option."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what}: not valid JSON ({exc})") from None


def parse_artifacts(items: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` arguments as a mapping; a malformed one is a one-line ConfigError."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--artifact: expected NAME=PATH, got {item!r}")
        out[name] = Path(path)
    return out


def read_tables(paths: list[str]) -> dict[str, pl.DataFrame]:
    """Ingested ``utterances.parquet`` tables by locale."""
    tables = {}
    for p in paths:
        df = pl.read_parquet(p)
        tables[df["locale"][0]] = df
    return tables


def add_cell_arguments(s: Any) -> None:
    """The options every training command shares: what a cell trains on and how."""
    s.add_argument("--task", required=True)
    s.add_argument("--arch", required=True)
    s.add_argument("--model-dir", required=True, help="directory written by `cltm prepare-model`")
    s.add_argument("--test", required=True, help="the target's test manifest")
    s.add_argument("--dev", required=True, help="the target's dev manifest")
    s.add_argument("--ingest-root", required=True, help="directory holding <locale>/audio.npy")
    s.add_argument("--target", required=True)
    s.add_argument("--hparams", required=True, help="hyper-parameters as a JSON object (or @file.json)")
    s.add_argument("--config-hash", default="", help="hash of the config, recorded in metrics.json")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: %(default)s)")
    s.add_argument("--threads", type=int, help="torch threads (overrides hparams.threads)")
    s.add_argument("--artifact", action="append", default=[], metavar="NAME=PATH", help="a task artifact (repeatable)")
    s.add_argument("--probe", help="the task's probe set (used when hparams.probe_clips > 0)")
