"""Reading chosen tensors of a (sharded) safetensors checkpoint, and nothing else.

A Hugging Face checkpoint is ``model.safetensors`` or shards ``model-0000k-of-0000n.safetensors`` listed by
``model.safetensors.index.json`` (``weight_map``: tensor name -> shard). A safetensors file is an 8-byte
little-endian header length, a JSON header (name -> dtype, shape, byte offsets into the data) and the data.
:func:`read_tensors` reads the headers of the shards that hold a wanted tensor and then only those
tensors' byte ranges, with plain reads (no memory map), so the bytes it reports are the bytes read: a
multimodal checkpoint's language model is never read, and a shard holding none of the wanted tensors is
never opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from cltm_pipeline.errors import ModelError

__all__ = ["INDEX", "SINGLE", "CheckpointRead", "tensor_names", "read_tensors", "write_safetensors"]

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}


@dataclass(frozen=True)
class CheckpointRead:
    """What :func:`read_tensors` read: the tensors, the bytes read, and the checkpoint's total size on disk."""

    tensors: dict[str, torch.Tensor]
    bytes_read: int
    checkpoint_bytes: int
    shards_opened: tuple[str, ...]


def _header(path: Path) -> tuple[dict, int]:
    """A safetensors file's header and the offset at which its data starts."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: not a safetensors file (its header is not a JSON object)")
    return header, 8 + n


def tensor_names(fetch: Callable[[str], Path]) -> dict[str, str]:
    """Tensor name -> shard file name of a checkpoint; ``fetch(file_name)`` returns the local path of one of
    its files (raising ModelError when it has none). Reads the index, or the single file's header."""
    try:
        index_path = fetch(INDEX)
    except ModelError:
        index_path = None
    if index_path is not None:
        try:
            weight_map = json.loads(Path(index_path).read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{index_path}: no weight_map ({type(exc).__name__}: {exc})") from None
        return {str(k): str(v) for k, v in weight_map.items()}
    header, _ = _header(fetch(SINGLE))
    return {k: SINGLE for k in header if k != "__metadata__"}


def read_tensors(fetch: Callable[[str], Path], names: dict[str, str], strip: Callable[[str], str] = str) -> CheckpointRead:
    """The tensors ``names`` (name -> shard, from :func:`tensor_names`), keyed by ``strip(name)``; only their
    shards are fetched and opened and only their bytes read. ``checkpoint_bytes``: the total size of the
    checkpoint's data as its index (or single file) states it."""
    by_shard: dict[str, list[str]] = {}
    for name, shard in names.items():
        by_shard.setdefault(shard, []).append(name)
    tensors: dict[str, torch.Tensor] = {}
    read = 0
    for shard in sorted(by_shard):
        path = fetch(shard)
        header, start = _header(path)
        read += start
        with open(path, "rb") as fh:
            for name in by_shard[shard]:
                meta = header.get(name)
                if meta is None:
                    raise ModelError(f"{path}: tensor {name!r} listed in {INDEX} is not in this shard")
                dtype = _DTYPES.get(meta["dtype"])
                if dtype is None:
                    raise ModelError(f"{path}: tensor {name!r} has dtype {meta['dtype']!r}, which is not supported")
                begin, end = meta["data_offsets"]
                buf = bytearray(end - begin)
                fh.seek(start + begin)
                if fh.readinto(buf) != len(buf):
                    raise ModelError(f"{path}: truncated (tensor {name!r} ends past the end of the file)")
                read += len(buf)
                t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
                tensors[strip(name)] = t.reshape(meta["shape"])
    return CheckpointRead(tensors, read, _checkpoint_bytes(fetch), tuple(sorted(by_shard)))


def _checkpoint_bytes(fetch: Callable[[str], Path]) -> int:
    try:
        index = json.loads(Path(fetch(INDEX)).read_text(encoding="utf-8"))
        return int(index["metadata"]["total_size"])
    except (ModelError, KeyError, TypeError, ValueError):
        return Path(fetch(SINGLE)).stat().st_size


def write_safetensors(path: Path, shapes: dict[str, tuple[tuple[int, ...], torch.dtype]],
                      make: Callable[[str], torch.Tensor | None]) -> int:
    """Write a safetensors file tensor by tensor (memory: one tensor): ``make(name)`` gives each tensor's
    values, or None to leave its bytes unwritten (a sparse hole that reads as zeros). Returns the data size."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (shape, dtype) in shapes.items():
        size = int(torch.Size(shape).numel()) * torch.empty(0, dtype=dtype).element_size()
        header[name] = {"dtype": _NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little") + blob)
        base = fh.tell()
        for name, (shape, dtype) in shapes.items():
            values = make(name)
            if values is not None:
                fh.seek(base + header[name]["data_offsets"][0])  # type: ignore[index]
                fh.write(memoryview(values.to(dtype).contiguous().reshape(-1).view(torch.uint8).numpy()))
        fh.truncate(base + offset)
    return offset
