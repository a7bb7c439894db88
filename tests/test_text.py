"""The one transcript normaliser, on real Common Voice sentences and on every kind of script."""

from __future__ import annotations

import unicodedata

import polars as pl
import pytest

from cltm_pipeline.text import KEEP_CATEGORIES, normalise


def test_real_polish_common_voice_sentences(realworld):
    df = pl.read_csv(realworld / "common_voice_pl" / "validated.tsv", separator="\t", quote_char=None, infer_schema=False)
    sentences = df["sentence"].to_list()
    assert len(sentences) > 400
    out = [normalise(s) for s in sentences]
    for s, n in zip(sentences, out):
        assert n == n.strip() and "  " not in n
        assert all(ch == " " or unicodedata.category(ch) in KEEP_CATEGORIES for ch in n), (s, n)
        assert n == normalise(n)  # idempotent
    # Polish letters survive, case is folded, punctuation and quotes go
    assert normalise('"Dojrzała to w oparze, drżącym nad ziemią."') == "dojrzała to w oparze drżącym nad ziemią"
    assert normalise("Co jeszcze, poza nakładaniem sankcji, zrobiła Rada?") == "co jeszcze poza nakładaniem sankcji zrobiła rada"
    chars = set("".join(out)) - {" "}
    assert set("ąćęłńóśźż") <= chars and not chars & set(",.?!\"'")
    # the word count never grows from punctuation: splitting on punctuation only ever separates words
    assert sum(len(n.split()) for n in out) >= sum(len(s.split()) for s in sentences) * 0.98


@pytest.mark.parametrize("text, expected", [
    # scripts without spaces: no space is invented, punctuation becomes a boundary where it stood
    ("我们今天去北京。你好，世界！", "我们今天去北京 你好 世界"),  # zh
    ("東京は日本の首都です。「こんにちは」", "東京は日本の首都です こんにちは"),  # ja: kana and kanji kept
    ("佢哋喺度食緊飯，好好味。", "佢哋喺度食緊飯 好好味"),  # yue
    # right-to-left scripts, in logical order; Arabic punctuation (؟ ،) removed
    ("مرحبا بالعالم! كيف حالك؟", "مرحبا بالعالم كيف حالك"),  # ar
    ("ئۇيغۇرچە «تىل» بىلەن سۆزلەڭ.", "ئۇيغۇرچە تىل بىلەن سۆزلەڭ"),  # ug
    ("می‌خواهم به خانه بروم، لطفاً.", "میخواهم به خانه بروم لطفاً"),  # fa: ZWNJ dropped, tanwin (a mark) kept
    # NFKC and case-folding
    ("ＡＢＣ１２３ ﬁnance Straße", "abc123 finance strasse"),
    # apostrophes and hyphens inside words do not split them; digits are kept, other punctuation splits
    ("L'home vis-à-vis — «quote» 3.14", "lhome visàvis quote 3 14"),
    ("  \t\n", ""),
    ("?!…", ""),
])
def test_scripts(text, expected):
    assert normalise(text) == expected


def test_combining_marks_and_nfkc_composition():
    assert normalise("e\u0301cole") == "école"  # NFKC composes
    assert normalise("हिन्दी") == "हिन्दी"  # Devanagari vowel signs and virama (marks) kept
    assert normalise(None) == ""
