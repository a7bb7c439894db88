"""Audio decoding to 16 kHz mono and the per-locale cache that training reads.

The cache is one int16 array per locale (``audio.npy``, memory-mapped on load) plus sample offsets in
the utterance table: opening one file per locale instead of one MP3 per clip is what makes training
start fast, and int16 halves the size of float32 with no loss for 16-bit sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
import soundfile as sf
import soxr

__all__ = ["SAMPLE_RATE", "MIN_SECONDS", "Decoded", "decode_clip", "decode_clips", "decode_clips_to_file", "read_spool",
           "to_int16", "AudioCache", "Clips"]

SAMPLE_RATE = 16_000
#: Shorter clips are quarantined: below one 25 ms frame plus margin no encoder gives a frame, and a CV clip
#: this short holds no sentence.
MIN_SECONDS = 0.1


@dataclass(frozen=True)
class Decoded:
    """A decoded clip (int16 at ``SAMPLE_RATE``) or the reason it could not be used."""

    samples: np.ndarray | None
    reason: str | None = None


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to int16 with clipping."""
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def decode_clip(path: Path, sample_rate: int = SAMPLE_RATE, expected_s: float | None = None) -> Decoded:
    """Decode any libsndfile-readable clip (MP3, FLAC, WAV) to mono int16 at ``sample_rate``.

    A clip is rejected when missing, empty, undecodable, or decoding to less than half the duration the
    release's ``clip_durations.tsv`` states (a truncated MP3 decodes "successfully" to a stub).
    """
    path = Path(path)
    if not path.is_file():
        return Decoded(None, "missing file")
    if path.stat().st_size == 0:
        return Decoded(None, "empty file")
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types; all mean "cannot decode"
        msg = str(exc).splitlines()[0]
        if "does not exist or is not a regular file" in msg:  # libsndfile's words for "no known format"
            msg = "not recognised as audio (corrupt or truncated header)"
        return Decoded(None, f"undecodable: {msg.removeprefix(f'Error opening {str(path)!r}: ')[:120]}")
    if x.shape[0] == 0:
        return Decoded(None, "no audio samples")
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if sr != sample_rate:
        x = soxr.resample(x, sr, sample_rate, quality="HQ")
    if expected_s is not None and expected_s > 0 and len(x) < 0.5 * expected_s * sample_rate:
        return Decoded(None, f"truncated: decodes to {len(x) / sample_rate:.2f} s, release says {expected_s:.2f} s")
    if len(x) < MIN_SECONDS * sample_rate:
        return Decoded(None, f"too short: {len(x) / sample_rate:.3f} s, minimum {MIN_SECONDS:g} s")
    if not np.any(x):
        return Decoded(None, "digital silence")
    return Decoded(to_int16(x))


def decode_clips(job: tuple[list[str], list[float | None], int]) -> list[tuple[np.ndarray | None, str | None]]:
    """Decode a chunk of clips ``(paths, expected seconds, sample rate)`` to (int16 samples or None, reason):
    the unit of work of ingestion's decode workers (this module imports no more than decoding needs)."""
    paths, expected, sr = job
    return [(d.samples, d.reason) for d in (decode_clip(Path(p), sr, e) for p, e in zip(paths, expected))]


def decode_clips_to_file(job: tuple[list[str], list[float | None], int], spool: str) -> list[tuple[int | None, str | None]]:
    """Decode a chunk as :func:`decode_clips`, writing the samples to the file ``spool`` (concatenated int16)
    and returning only (length or None, reason). A worker hands back a chunk through the page cache in one
    write instead of a pickle through a pipe, which blocks it whenever the reading process is not scheduled:
    on 2 cores that pipe cost 2 workers a sixth of their throughput."""
    decoded = decode_clips(job)
    kept = [x for x, _ in decoded if x is not None]
    with open(spool, "wb") as f:
        if kept:
            np.concatenate(kept).tofile(f)
    return [(None if x is None else len(x), reason) for x, reason in decoded]


def read_spool(spool: str, lengths: list[tuple[int | None, str | None]]) -> list[tuple[np.ndarray | None, str | None]]:
    """The clips :func:`decode_clips_to_file` wrote, as (int16 samples or None, reason); removes the file."""
    audio = np.fromfile(spool, dtype=np.int16)
    Path(spool).unlink()
    out, at = [], 0
    for n, reason in lengths:
        out.append((None, reason) if n is None else (audio[at : at + n], reason))
        at += n or 0
    return out


class AudioCache:
    """Read clips of one ingested locale from its memory-mapped ``audio.npy``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._audio = np.load(self.path, mmap_mode="r")

    def get(self, offset: int, num_samples: int) -> np.ndarray:
        """One clip as float32 in [-1, 1]."""
        return np.asarray(self._audio[offset : offset + num_samples], dtype=np.float32) / 32768.0

    @staticmethod
    @lru_cache(maxsize=256)
    def open(path: str) -> "AudioCache":
        """A process-wide shared handle per cache file (training touches a few locales many times)."""
        return AudioCache(Path(path))


class Clips:
    """Audio of a manifest's rows, read through the per-locale caches, cropped or padded to a fixed length."""

    def __init__(self, rows: pl.DataFrame, ingest_root: Path):
        self.caches = {loc: AudioCache.open(str(Path(ingest_root) / loc / "audio.npy")) for loc in rows["locale"].unique().to_list()}
        self.locale = rows["locale"].to_list()
        self.offset = rows["offset"].to_list()
        self.length = rows["num_samples"].to_list()

    def batch(self, idx: np.ndarray, max_len: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """Clips ``idx`` as ``[B, max_len]`` float32 (zero-padded at the end) and their valid lengths.

        A clip longer than ``max_len`` is cropped: at a random start when ``rng`` is given (training),
        at the centre otherwise (evaluation, deterministic).
        """
        out = np.zeros((len(idx), max_len), dtype=np.float32)
        lengths = np.zeros(len(idx), dtype=np.int64)
        for k, i in enumerate(idx):
            n = self.length[i]
            if n > max_len:
                start = int(rng.integers(0, n - max_len + 1)) if rng is not None else (n - max_len) // 2
                n = max_len
            else:
                start = 0
            out[k, :n] = self.caches[self.locale[i]].get(self.offset[i] + start, n)
            lengths[k] = n
        return out, lengths
