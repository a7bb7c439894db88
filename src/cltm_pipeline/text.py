"""Transcript normalisation for ASR: one function for every language and script.

:func:`normalise` is the only text normaliser of the pipeline: the vocabulary, the CTC targets and the
references and hypotheses that WER and CER are computed on all go through it, so a character the model
can never output is never counted against it, and every language is treated alike.

Steps: Unicode NFKC (compatibility forms: full-width Latin and digits, ligatures, Arabic presentation
forms become their plain letters), case-fold (``ß`` -> ``ss``, Greek final sigma, Cherokee), then every
character is kept or replaced by a space **by its Unicode category**: letters (L*), combining marks (M*:
Devanagari vowel signs, Arabic harakat, Hebrew points) and decimal digits (Nd) are kept; everything else
(punctuation P*, symbols S*, other numbers No/Nl, separators, controls and format characters) becomes a
space. Two exceptions keep words whole: an apostrophe or a hyphen *between two letters* is removed
rather than split (``l'home`` -> ``lhome``, ``vis-à-vis`` -> ``visàvis``), so that the word count is not
changed by punctuation style. Finally whitespace runs collapse to one ASCII space, trimmed.

Scripts without spaces (Chinese, Japanese, Cantonese, Thai) keep no spaces they did not have: their
punctuation (``。，「」``) becomes a space only where it stood, and corpus CER (``asr_unit: char`` in the
languages sheet) is their honest measure. Right-to-left scripts are stored in logical order and need
nothing special; the zero-width non-joiner (U+200C, category Cf) of Persian and Uyghur is dropped like
every format character (it changes the rendering, not the letters).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalise", "characters", "KEEP_CATEGORIES"]

#: Unicode general categories kept by :func:`normalise`: letters, combining marks, decimal digits.
KEEP_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd"})

# Apostrophes and hyphens of every script (after NFKC) that join two letters inside a word.
_JOINERS = frozenset("'\u2019\u02bc\u2018`\u00b4-\u2010\u2011\u00ad")
_SPACES = re.compile(r"\s+")


def _keep(ch: str) -> bool:
    return unicodedata.category(ch) in KEEP_CATEGORIES


def normalise(text: str | None) -> str:
    """The normalised form of ``text`` (see the module docstring); None or only punctuation give ""."""
    if not text:
        return ""
    s = unicodedata.normalize("NFKC", text).casefold()
    s = unicodedata.normalize("NFC", s)  # case-folding can decompose (e.g. U+0130); recompose
    out = []
    n = len(s)
    for k, ch in enumerate(s):
        if _keep(ch):
            out.append(ch)
        elif ch in _JOINERS and 0 < k < n - 1 and _keep(s[k - 1]) and _keep(s[k + 1]):
            continue  # inside a word: drop, do not split
        elif unicodedata.category(ch) == "Cf":
            continue  # zero-width (non-)joiners, bidi marks, soft hyphen: not a word boundary
        else:
            out.append(" ")
    return _SPACES.sub(" ", "".join(out)).strip()


def characters(text: str) -> list[str]:
    """The characters of a normalised text, as CTC sees them (code points, spaces included)."""
    return list(text)
