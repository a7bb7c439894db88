"""Atomic, deterministic file output: a killed job never leaves a half-written file that looks done."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl

__all__ = [
    "atomic_path",
    "atomic_dir",
    "write_text",
    "write_bytes",
    "write_json",
    "write_tsv",
    "write_parquet",
    "write_npy",
    "read_manifest",
    "sha256_file",
    "stable_hash",
]


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared with the lab like any file
    try:
        yield Path(tmp)
        os.replace(tmp, path)  # atomic on POSIX within one filesystem
    except OSError as exc:  # a full disk: say which output could not be written, and why, in one line
        if exc.filename is None:
            code = exc.errno
            if code is None and shutil.disk_usage(path.parent).free < (1 << 20):  # numpy's writers lose errno
                code = errno.ENOSPC
            raise OSError(code, os.strerror(code) if code else str(exc), str(path)) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; if the block succeeds, give its files the shared
    permissions and swap it in whole for ``path``, so a killed job never leaves a half-written directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for f in tmp.iterdir():  # libraries (save_pretrained) may write 0600 files; outputs are shared
            os.chmod(f, 0o666 & ~_UMASK)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically with sorted keys, so equal objects give equal bytes."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=True) + "\n")


def write_tsv(path: Path, df: pl.DataFrame) -> None:
    """Write a TSV atomically with quoting disabled, the way Common Voice writes its own."""
    with atomic_path(path) as tmp:
        df.write_csv(tmp, separator="\t", quote_style="never", line_terminator="\n", float_precision=None)


def write_parquet(path: Path, df: pl.DataFrame) -> None:
    """Write a parquet table atomically (zstd, no statistics that vary between runs)."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=False)


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write a ``.npy`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def read_manifest(path: Path) -> pl.DataFrame:
    """Read a manifest TSV written by :func:`write_tsv` (quoting disabled, text kept as text)."""
    return pl.read_csv(
        path,
        separator="\t",
        quote_char=None,
        schema_overrides={"client_id": pl.String, "utt_id": pl.String, "locale": pl.String, "sentence": pl.String},
        empty_string_is_null=False,
    )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of ``parts`` that, unlike ``hash()``, is the same in every process and version."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")
