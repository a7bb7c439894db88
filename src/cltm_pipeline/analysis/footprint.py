"""Fine-tuning footprints and the overlap of languages' sub-networks (no torch).

A single cell's footprint (written by :mod:`cltm_pipeline.training.footprint`) is the set of encoder
parameters that fine-tuning moved most: the top ``k`` fraction of |theta_best - theta_init| over every
trainable encoder tensor together. It is stored as two files beside the cell's metrics.json
(``layout.footprint_files``):

- ``footprint.bits``: for each tensor in model order, ``np.packbits`` of its flattened mask (big-endian
  bit order, each tensor padded with zero bits to a whole byte, so a tensor's bits start on a byte);
- ``footprint.json``: the per-tensor index (name, shape, size, byte offset, layer, group, update norm,
  initial norm, parameters selected) and the totals (k, threshold, parameters, selected, SHA-256 of the
  bits).

Ties at the threshold are broken by position (earlier parameters first), so the mask is a pure function
of the two states: same seed, same bytes.

Overlap of two masks is their Jaccard index |A & B| / |A | B|, whole encoder and per group (a transformer
layer, or a module outside the layers). Two independent random masks of fraction k have expected Jaccard
k / (2 - k) (0.026 at 5 %): the chance level every overlap is read against.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cltm_pipeline.analysis.properties import mantel, symmetrised
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.layout import cell_files, footprint_files

__all__ = ["FOOTPRINT_VERSION", "parameter_group", "top_mask", "pack_masks", "footprint_index", "chance_jaccard",
           "Footprint", "read_footprint", "pair_counts", "overlap_analysis", "overlap_rows"]

FOOTPRINT_VERSION = 1

#: A transformer (or ECAPA) block's index in a parameter name: ``encoder.encoder.layers.3.attention.q_proj.weight``.
_LAYER = re.compile(r"(?:^|\.)(?:layers|blocks)\.(\d+)\.")


def parameter_group(name: str) -> tuple[int | None, str]:
    """(layer index or None, group label) of an encoder parameter: ``layer 3``, or the module path outside
    the layers (its first two components after the model's top module, e.g. ``encoder.feature_projection``)."""
    m = _LAYER.search(name)
    if m:
        return int(m.group(1)), f"layer {int(m.group(1))}"
    parts = name.split(".")[:-1]  # drop weight / bias
    return None, ".".join(parts[1:3]) if len(parts) > 1 else (parts[0] if parts else name)


def top_mask(deltas: Sequence[np.ndarray], top: float) -> list[np.ndarray]:
    """Boolean masks (one per tensor, its shape) of the top ``top`` fraction of |delta| over all tensors
    together: round(top * n) parameters (at least 1), ties at the threshold broken by position."""
    if not 0 < top <= 1:
        raise ValueError(f"footprint top fraction must be in (0, 1], got {top!r}")
    sizes = [int(np.asarray(d).size) for d in deltas]
    n = sum(sizes)
    flat = np.empty(n, dtype=np.float32)  # |delta| of every parameter, filled in place (no list of copies)
    pos = 0
    for d, size in zip(deltas, sizes):
        np.abs(np.asarray(d, dtype=np.float32).ravel(), out=flat[pos:pos + size])
        pos += size
    m = min(n, max(1, int(round(top * n))))
    scratch = flat.copy()
    scratch.partition(n - m)
    threshold = scratch[n - m]  # the m-th largest value (unique whatever the algorithm)
    del scratch
    keep = flat > threshold
    ties = np.flatnonzero(flat == threshold)[: m - int(keep.sum())]
    keep[ties] = True
    out, pos = [], 0
    for d, size in zip(deltas, sizes):
        out.append(keep[pos:pos + size].reshape(np.shape(d)))
        pos += size
    return out


def pack_masks(masks: Sequence[np.ndarray]) -> bytes:
    """The ``footprint.bits`` bytes: each tensor's flattened mask packed (big-endian), padded to a byte."""
    return b"".join(np.packbits(np.asarray(m, dtype=bool).ravel()).tobytes() for m in masks)


def footprint_index(names: Sequence[str], initial: Sequence[np.ndarray], deltas: Sequence[np.ndarray],
                    masks: Sequence[np.ndarray], top: float, bits: bytes) -> dict[str, Any]:
    """``footprint.json``: the per-tensor summary (update norm per tensor, layer and group) and the totals."""
    tensors, offset, threshold = [], 0, math.inf
    for name, init, delta, mask in zip(names, initial, deltas, masks):
        layer, group = parameter_group(name)
        size = int(np.asarray(mask).size)
        delta = np.asarray(delta, dtype=np.float32)
        picked = np.abs(delta[mask])
        if picked.size:
            threshold = min(threshold, float(picked.min()))
        tensors.append({
            "name": name, "shape": list(np.shape(mask)), "size": size, "byte_offset": offset, "layer": layer,
            "group": group, "selected": int(picked.size),
            "update_norm": float(np.linalg.norm(delta.ravel())),  # BLAS nrm2: scaled, no float64 copy
            "init_norm": float(np.linalg.norm(np.asarray(init, dtype=np.float32).ravel())),
        })
        offset += (size + 7) // 8
    selected = sum(t["selected"] for t in tensors)
    return {
        "version": FOOTPRINT_VERSION, "top": top, "n_params": sum(t["size"] for t in tensors), "selected": selected,
        "threshold": threshold if selected else math.nan, "bytes": len(bits),
        "sha256": hashlib.sha256(bits).hexdigest(), "tensors": tensors,
    }


def chance_jaccard(top: float) -> float:
    """Expected Jaccard of two independent random masks each holding a fraction ``top``."""
    return top / (2 - top)


@dataclass(frozen=True)
class Footprint:
    """One cell's mask as packed bytes, with the byte range and group of each tensor."""

    bits: np.ndarray  # uint8
    top: float
    names: tuple[str, ...]
    groups: tuple[str, ...]  # per tensor
    sizes: tuple[int, ...]  # parameters per tensor
    starts: np.ndarray  # byte offset of each tensor
    update_sq: np.ndarray  # squared norm of each tensor's update
    init_sq: np.ndarray  # squared norm of each tensor's initial value

    def layout_key(self) -> tuple[tuple[str, ...], bytes]:
        """What two footprints must share to be compared: tensor names and byte offsets."""
        return self.names, self.starts.tobytes()


def read_footprint(index_path: Path, bits_path: Path) -> Footprint:
    """A footprint's two files; a truncated or mismatched bits file is a one-line ConfigError."""
    try:
        index = json.loads(Path(index_path).read_text(encoding="utf-8"))
        bits = np.frombuffer(Path(bits_path).read_bytes(), dtype=np.uint8)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{index_path}: unreadable footprint ({exc})") from None
    if len(bits) != index.get("bytes") or hashlib.sha256(bits.tobytes()).hexdigest() != index.get("sha256"):
        raise ConfigError(f"{bits_path}: {len(bits)} bytes do not match {index_path.name} "
                          f"({index.get('bytes')} bytes, sha256 {str(index.get('sha256'))[:12]})")
    t = index["tensors"]
    return Footprint(bits=bits, top=float(index["top"]), names=tuple(x["name"] for x in t),
                     groups=tuple(x["group"] for x in t), sizes=tuple(int(x["size"]) for x in t),
                     starts=np.array([x["byte_offset"] for x in t], dtype=np.int64),
                     update_sq=np.array([x["update_norm"] ** 2 for x in t]), init_sq=np.array([x["init_norm"] ** 2 for x in t]))


def pair_counts(a: Footprint, b: Footprint) -> tuple[np.ndarray, np.ndarray]:
    """Per tensor, |A & B| and |A | B| (the padding bits are zero in both, so they never count)."""
    if a.layout_key() != b.layout_key():
        diff = next((f"{x} ({sx}) vs {y} ({sy})" for x, y, sx, sy in zip(a.names, b.names, a.sizes, b.sizes)
                     if (x, sx) != (y, sy)), f"{len(a.names)} vs {len(b.names)} tensors")
        raise ConfigError(f"footprints of different models cannot be compared (tensor names or sizes differ: {diff})")
    inter = np.bitwise_count(a.bits & b.bits).astype(np.int64)
    union = np.bitwise_count(a.bits | b.bits).astype(np.int64)
    if len(a.starts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.add.reduceat(inter, a.starts), np.add.reduceat(union, a.starts)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


def _mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    v = [x for x in values if math.isfinite(x)]
    return (float(np.mean(v)) if v else math.nan, float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, len(v))


def overlap_analysis(runs_dir: Path, languages: Sequence[str], seeds: Sequence[int], C: np.ndarray | None = None, *,
                     permutations: int = 9999, seed: int = 0) -> dict[str, Any]:
    # long: one pass over seeds and language pairs fills the overlap matrix, its spread and the per-group profile
    """Jaccard overlap of the single cells' footprints between every pair of ``languages``, per seed (the
    two cells of a pair share the seed: same head initialisation), then mean and sample SD over seeds;
    each language's seed-to-seed overlap with itself; the per-group (layer) profile over pairs and seeds
    (and how far fine-tuning moved each group, ||update|| / ||initial||, mean over cells);
    and the Mantel test of the mean overlap against the symmetrised C (if given, same language order). The
    same at different seeds (each seed with the next): ``overlap_cross_seed``, whose diagonal against its
    off-diagonal (``cross_seed``) separates the language's share from the seed's.

    Cells without a footprint (architecture with no fine-tuned encoder, footprint_top 0, missing run)
    are counted and named, never filled in."""
    langs, L = list(languages), len(languages)
    found: dict[tuple[str, int], Footprint] = {}
    skipped: dict[str, str] = {}
    missing: list[str] = []
    for t in langs:
        for s in seeds:
            metrics, _ = cell_files(Path(runs_dir), t, None, s)
            index, bits = footprint_files(metrics)
            if not metrics.exists():
                missing.append(f"{t}/seed{s}")
                continue
            rec = json.loads(metrics.read_text(encoding="utf-8")).get("footprint") or {}
            if index.exists() and "sha256" in rec:
                fp = read_footprint(index, bits)
                if hashlib.sha256(fp.bits.tobytes()).hexdigest() == rec["sha256"]:
                    found[(t, s)] = fp
                    continue
            # a footprint its metrics.json does not name is stale (the cell was rerun without one): not used
            skipped[f"{t}/seed{s}"] = str(rec.get("skipped", "no footprint recorded (footprint_top 0 or older run)"))
    out: dict[str, Any] = {"languages": langs, "seeds": list(seeds), "cells_with_footprint": len(found),
                           "cells_skipped": skipped, "cells_missing": missing}
    if not found:
        out["available"] = False
        out["reason"] = (sorted(set(skipped.values()))[0] if skipped else "no single cell has a footprint")
        return out
    first = next(iter(found.values()))
    groups = list(dict.fromkeys(first.groups))
    gidx = np.array([groups.index(g) for g in first.groups])
    per_seed = np.full((len(seeds), L, L), np.nan)
    g_inter = np.zeros((len(seeds), L, L, len(groups)))
    g_union = np.zeros_like(g_inter)
    for si, s in enumerate(seeds):
        for a in range(L):
            for b in range(a + 1, L):
                fa, fb = found.get((langs[a], s)), found.get((langs[b], s))
                if fa is None or fb is None:
                    continue
                inter, union = pair_counts(fa, fb)
                per_seed[si, a, b] = per_seed[si, b, a] = _ratio(inter.sum(), union.sum())
                gi, gu = np.bincount(gidx, inter, len(groups)), np.bincount(gidx, union, len(groups))
                g_inter[si, a, b], g_union[si, a, b] = gi, gu
    off = ~np.eye(L, dtype=bool)
    counts = np.isfinite(per_seed).sum(axis=0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # a pair without any seed stays NaN, said by overlap_n
        mean = np.nanmean(per_seed, axis=0)
        sd = np.where(counts > 1, np.nanstd(per_seed, axis=0, ddof=1), np.nan)
    # a language's own footprint across seeds: how reproducible it is (the diagonal's reference, not 1)
    self_overlap = {}
    for a, t in enumerate(langs):
        fps = [found[(t, s)] for s in seeds if (t, s) in found]
        vals = [_ratio(*(x.sum() for x in pair_counts(fps[i], fps[j]))) for i in range(len(fps)) for j in range(i + 1, len(fps))]
        m, d, n = _mean_sd(vals)
        self_overlap[t] = {"mean": m, "sd": d, "pairs": n}
        mean[a, a], sd[a, a] = m, d
    # The same pairs at different seeds (each seed with the next): pairs at one seed also share its head
    # initialisation and data order, so only here does same-language (diagonal) against other-language
    # overlap show what the language itself contributes.
    seed_pairs = [(seeds[k], seeds[k + 1]) for k in range(len(seeds) - 1)]
    cross = np.full((len(seed_pairs), L, L), np.nan)
    c_inter = np.zeros((len(seed_pairs), L, L, len(groups)))
    c_union = np.zeros_like(c_inter)
    for pi, (s1, s2) in enumerate(seed_pairs):
        for a in range(L):
            for b in range(L):
                fa, fb = found.get((langs[a], s1)), found.get((langs[b], s2))
                if fa is None or fb is None:
                    continue
                inter, union = pair_counts(fa, fb)
                cross[pi, a, b] = _ratio(inter.sum(), union.sum())
                c_inter[pi, a, b] = np.bincount(gidx, inter, len(groups))
                c_union[pi, a, b] = np.bincount(gidx, union, len(groups))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cross_sym = np.nanmean(np.stack([cross, cross.transpose(0, 2, 1)]), axis=0)  # (i at s, j at s') and back
        cross_mean = np.nanmean(cross_sym, axis=0) if len(seed_pairs) else np.full((L, L), np.nan)
    eye = np.eye(L, dtype=bool)
    same_lang = [float(x) for x in cross_sym[:, eye].ravel() if np.isfinite(x)]
    other_lang = [float(x) for x in cross_sym[:, off].ravel() if np.isfinite(x)]
    profile = []
    iu = np.triu_indices(L, 1)
    for k, g in enumerate(groups):
        vals = [_ratio(g_inter[si, a, b, k], g_union[si, a, b, k]) for si in range(len(seeds)) for a, b in zip(*iu)
                if np.isfinite(per_seed[si, a, b])]
        m, d, n = _mean_sd(vals)
        size = sum(x for x, gg in zip(first.sizes, first.groups) if gg == g)
        sel = gidx == k  # how far fine-tuning moved the group: ||update|| / ||initial||, mean over cells
        rel = [_ratio(math.sqrt(f.update_sq[sel].sum()), math.sqrt(f.init_sq[sel].sum())) for f in found.values()]
        xs = [(_ratio(c_inter[pi, a, b, k], c_union[pi, a, b, k]), a == b) for pi in range(len(seed_pairs))
              for a in range(L) for b in range(L) if np.isfinite(cross[pi, a, b])]
        profile.append({"group": g, "jaccard": m, "sd": d, "pairs": n, "params": int(size),
                        "relative_update": _mean_sd(rel)[0],
                        "cross_seed_same_language": _mean_sd([x for x, same in xs if same])[0],
                        "cross_seed_other_language": _mean_sd([x for x, same in xs if not same])[0]})
    top = first.top
    out.update({
        "available": True, "top": top, "chance": chance_jaccard(top), "groups": groups,
        "overlap": [[_json_num(x) for x in row] for row in mean],
        "overlap_sd": [[_json_num(x) for x in row] for row in sd],
        "overlap_n": [[int(x) for x in row] for row in counts],
        "self_overlap": self_overlap, "profile": profile,
        "overlap_cross_seed": [[_json_num(x) for x in row] for row in cross_mean],
        "cross_seed": {"same_language": _mean_sd(same_lang)[0], "same_language_sd": _mean_sd(same_lang)[1],
                       "other_language": _mean_sd(other_lang)[0], "other_language_sd": _mean_sd(other_lang)[1],
                       "seed_pairs": [list(x) for x in seed_pairs]},
    })
    if C is not None:
        sym = symmetrised(np.asarray(C, dtype=float))
        m = mantel(np.where(off, mean, np.nan), sym, permutations=permutations, seed=seed)
        out["mantel"] = {**m, "used": [langs[k] for k in m["used"]], "against": "symmetrised C"}
        m = mantel(np.where(off, cross_mean, np.nan), sym, permutations=permutations, seed=seed)
        out["mantel_cross_seed"] = {**m, "used": [langs[k] for k in m["used"]], "against": "symmetrised C"}
    return out


def _json_num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def overlap_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The long TSV of :func:`overlap_analysis`: one row per ordered language pair (mean, sd, seeds)."""
    if not result.get("available"):
        return []
    langs = result["languages"]
    return [{"language_a": a, "language_b": b, "jaccard": result["overlap"][i][j], "sd": result["overlap_sd"][i][j],
             "seeds": result["overlap_n"][i][j] if i != j else result["self_overlap"][a]["pairs"]}
            for i, a in enumerate(langs) for j, b in enumerate(langs)]
