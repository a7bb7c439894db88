"""Typological distances between languages from URIEL+ (the ``urielplus`` package, which ships its data).

The six URIEL distance types are angular distances between the languages' URIEL+ vectors, computed by
``URIELPlus.new_distance`` on the features both languages have; URIEL+'s -1 ("no shared features") is
NaN here. Languages are the languages sheet's ISO 639-3 codes (``iso639_3``); a code URIEL+ does not know
is reported, and its row and column are NaN, never guessed.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import metadata

import numpy as np

from cltm_pipeline.progress import Progress

__all__ = ["DISTANCES", "read_typology", "typology_table", "uriel_distances", "uriel_version"]

#: The URIEL distance types the report correlates with the CLTM, in display order.
DISTANCES = ("genetic", "geographic", "syntactic", "phonological", "inventory", "featural")


def uriel_version() -> str:
    """The installed urielplus version (written next to every distance it gives)."""
    return metadata.version("urielplus")


@lru_cache(maxsize=1)
def _uriel():
    """One URIEL+ database per process (loading takes about a second)."""
    # URIEL+ logs every query at INFO on the root logger, and prints: keep both out of rule logs.
    with contextlib.redirect_stdout(io.StringIO()):
        # Local: urielplus loads its database on import (and prints); only the typology command needs it.
        from urielplus import urielplus

        logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
        return urielplus.URIELPlus()


def uriel_distances(
    iso_codes: Sequence[str], kinds: Sequence[str] = DISTANCES
) -> tuple[dict[str, np.ndarray], list[str]]:
    """URIEL+ distance matrices (NaN where undefined, 0 on the diagonal) and the codes URIEL+ lacks."""
    u = _uriel()
    known = set(u.langs[0].tolist())
    unknown = sorted({c for c in iso_codes if c not in known})
    idx = [k for k, c in enumerate(iso_codes) if c in known]
    n = len(iso_codes)
    out: dict[str, np.ndarray] = {}
    progress = Progress(f"typology: {len(idx)} languages", len(kinds), "distance kinds", every_s=0.0)
    for kind in kinds:
        full = np.full((n, n), np.nan)
        # URIEL+ refuses duplicate-free lists of fewer than two languages; two locales may share a code
        # (zh-HK and yue): query each code once and spread the result.
        codes = list(dict.fromkeys(iso_codes[k] for k in idx))
        if len(codes) >= 2:
            with contextlib.redirect_stdout(io.StringIO()):
                sub = np.asarray(u.new_distance(kind, codes), dtype=float)
            if sub.ndim == 0:  # URIEL+ answers a pair of codes with the scalar distance, not a 2x2 matrix
                sub = np.array([[0.0, float(sub)], [float(sub), 0.0]])
            sub = np.where(sub < 0, np.nan, sub)
            pos = {c: k for k, c in enumerate(codes)}
            for a in idx:
                for b in idx:
                    full[a, b] = sub[pos[iso_codes[a]], pos[iso_codes[b]]]
        for k in idx:
            full[k, k] = 0.0  # URIEL+ rounds a language's distance to itself to 1e-4 at times
        out[kind] = full
        progress.update()  # one line per kind: URIEL+ computes a kind's whole matrix in one call
    return out, unknown


def typology_table(locales: Sequence[str], iso: Mapping[str, str]) -> dict:
    """URIEL+ distances between ``locales`` (via their ISO 639-3 codes) as a JSON-ready dict, NaN as null.

    A pair's URIEL+ distance uses only the features both languages have, so it does not depend on which
    other languages are asked: one table for every locale of the config serves every matrix.
    """
    codes = [iso.get(t) or "" for t in locales]
    dist, unknown = uriel_distances(codes)
    return {
        "source": f"URIEL+ (urielplus {uriel_version()})",
        "locales": list(locales),
        "iso639_3": dict(zip(locales, codes)),
        "unknown_iso": [c for c in unknown if c],
        "locales_without_iso": [t for t, c in zip(locales, codes) if not c],
        "distances": {k: [[None if np.isnan(x) else float(x) for x in row] for row in m] for k, m in dist.items()},
    }


def read_typology(table: Mapping, locales: Sequence[str]) -> dict[str, np.ndarray]:
    """Distance matrices of a :func:`typology_table` restricted to ``locales`` (NaN where a locale is absent)."""
    pos = {t: k for k, t in enumerate(table["locales"])}
    out = {}
    for kind, rows in table["distances"].items():
        full = np.array([[np.nan if x is None else x for x in row] for row in rows], dtype=float).reshape(len(pos), len(pos))
        m = np.full((len(locales), len(locales)), np.nan)
        for a, ta in enumerate(locales):
            for b, tb in enumerate(locales):
                if ta in pos and tb in pos:
                    m[a, b] = full[pos[ta], pos[tb]]
        out[kind] = m
    return out
