"""Atomic, deterministic file output: a killed job never leaves a half-written file that looks done."""

from __future__ import annotations

import errno
import io as _io
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
    "NpyAppender",
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


class NpyAppender:
    """A 1-D ``.npy`` written block by block (the length need not be known up front), renamed into place
    only by :meth:`close`: a killed writer leaves a hidden temporary file, never a store that looks complete.

    The bytes equal ``np.save`` of the concatenated blocks: a header for the largest possible length is
    reserved first (numpy pads headers to 64 bytes, so it has the final header's size) and rewritten at the end.
    """

    def __init__(self, path: Path, dtype: np.dtype | str):
        self.path, self.dtype, self.length = Path(path), np.dtype(dtype), 0
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._fh = open(self._tmp, "wb")
        self._header_len = len(self._header(np.iinfo(np.int64).max))
        self._fh.write(b"\0" * self._header_len)

    def _header(self, length: int) -> bytes:
        buf = _io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (length,)}
        )
        return buf.getvalue()

    def append(self, block: np.ndarray) -> None:
        """Append one block (cast to the store's dtype)."""
        self._fh.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.length += len(block)

    def close(self) -> None:
        """Write the final header and rename the file into place."""
        header = self._header(self.length)
        if len(header) != self._header_len:  # cannot happen for 1-D arrays (header padded to 64 bytes)
            raise RuntimeError(f"{self.path}: npy header changed size")
        self._fh.seek(0)
        self._fh.write(header)
        self._fh.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the partial file."""
        self._fh.close()
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "NpyAppender":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close() if exc_type is None else self.abort()


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
