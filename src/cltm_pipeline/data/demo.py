"""Deterministic synthetic demo corpus in the Mozilla Common Voice release layout.

Speech is synthesised offline with eSpeak NG (through ctypes, using the library and
data shipped by ``espeakng-loader``) from short sentences assembled out of each
language's most frequent words (``wordfreq``).  Every speaker gets a distinct voice
(eSpeak variant, base pitch, pitch range, speaking rate and a vocal-tract-length
factor), every clip gets random silence padding and white noise at 2-6 dB SNR, which keeps gender
identification in the regime where more data still helps. Optional *clean* locales get the
same treatment with the noise 60 dB lower: a tiny random-init model cannot learn to
transcribe the noisy speech on a laptop, so the demo's ASR matrix uses clean locales.
Clean locales are rendered after, and independently of, the noisy ones, so adding them
leaves every noisy locale byte-identical.

The corpus deliberately contains the irregularities that a real release has and the
pipeline must cope with: two gender-label vocabularies (pre-17.0 ``male``/``female``
and 17.0+ ``male_masculine``/``female_feminine``), speakers with an empty or
undisclosed gender, contributors recorded in two locales under one ``client_id``
(one of them in a test split of one locale and the train split of another), a
validated row without its mp3, an empty mp3, a truncated mp3 and a sentence with an
unbalanced double quote.

eSpeak NG keeps synthesis state (oscillator phases, echo buffer, ...) in static
variables that survive ``espeak_Terminate``/``espeak_Initialize``, so the waveform of
an utterance depends on what was spoken before it in the same process.  To make every
clip a pure function of its text and voice parameters, the library is loaded, used for
one utterance and unloaded again (``dlclose``) for each clip; a fresh mapping starts
from pristine static data.  This costs about 3 ms per clip.  If something else in the
process already holds the library open (so it could not be unmapped), a private copy
of it is loaded instead.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import ctypes.util
import hashlib
import io
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import soundfile as sf
import soxr

from cltm_pipeline.data.commonvoice import read_tsv

__all__ = [
    "CV_COLUMNS",
    "DEFAULT_LANGUAGES",
    "DEMO_VOICES",
    "DemoLanguage",
    "build_demo_corpus",
    "scale_locale",
]


@dataclass(frozen=True)
class DemoLanguage:
    """One demo locale: its Common Voice code, eSpeak NG voice and wordfreq language."""

    locale: str  # CV locale, e.g. "es"
    voice: str  # eSpeak voice name, e.g. "es"
    wordfreq: str  # wordfreq language code


DEFAULT_LANGUAGES: tuple[DemoLanguage, ...] = (
    DemoLanguage("es", "es", "es"),  # Romance
    DemoLanguage("it", "it", "it"),
    DemoLanguage("de", "de", "de"),  # Germanic
    DemoLanguage("nl", "nl", "nl"),
    DemoLanguage("fi", "fi", "fi"),  # Uralic
    DemoLanguage("hu", "hu", "hu"),
)

#: Every locale the demo can synthesise, by CV locale (the defaults plus the demo's clean ASR locales).
DEMO_VOICES: dict[str, DemoLanguage] = {
    lang.locale: lang
    for lang in (*DEFAULT_LANGUAGES, DemoLanguage("ro", "ro", "ro"), DemoLanguage("sl", "sl", "sl"))
}

#: Added-noise SNR range in dB: noisy locales (the default) and clean ones.
NOISY_SNR_DB, CLEAN_SNR_DB = (2.0, 6.0), (62.0, 66.0)

#: Column set and order of the clip TSVs of a current Common Voice release.
CV_COLUMNS: tuple[str, ...] = (
    "client_id",
    "path",
    "sentence_id",
    "sentence",
    "sentence_domain",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "variant",
    "locale",
    "segment",
)
_CLIP_TSVS = ("validated", "train", "dev", "test", "invalidated", "other")
_REPORTED_COLUMNS = ("sentence_id", "sentence", "locale", "reason")
_DURATION_COLUMNS = ("clip", "duration[ms]")

_AGES = ("teens", "twenties", "thirties", "fourties", "fifties", "sixties", "seventies")
_AGE_WEIGHTS = np.array([0.08, 0.32, 0.27, 0.15, 0.10, 0.05, 0.03])
_LABELS_OLD = {"female": "female", "male": "male", "undisclosed": "other"}
_LABELS_NEW = {
    "female": "female_feminine",
    "male": "male_masculine",
    "undisclosed": "do_not_wish_to_say",
}
_VARIANTS = {"female": ("f1", "f2", "f3", "f4", "f5"), "male": tuple(f"m{i}" for i in range(1, 8))}

_SAMPLE_RATE = 22050  # eSpeak NG's native output rate
_WORDLIST_SIZE = 2500
_MIN_SENTENCE_CHARS, _MAX_SENTENCE_CHARS = 18, 44  # keeps clips at roughly 1.5-4 s
_TRUNCATED_BYTES = 200
_EXTRA_CLIPS = 3  # clips per extra (undisclosed-gender) speaker

# eSpeak NG constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4


# --------------------------------------------------------------------------- eSpeak


_SYNTH_CALLBACK_TYPE = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_chunks: list[np.ndarray] = []


def _collect(wav: Any, n: int, _events: int | None) -> int:
    """eSpeak synth callback: append the delivered int16 samples to the current buffer."""
    if wav and n > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
    return 0


_CALLBACK = _SYNTH_CALLBACK_TYPE(_collect)  # module-level: must outlive every call
_library_path: str | None = None


def _espeak_library_path() -> str:
    """Path of the eSpeak NG library to load, a private copy if another user holds it."""
    global _library_path
    if _library_path is None:
        import espeakng_loader  # loads a native library: only when the demo corpus is built

        path = os.path.realpath(espeakng_loader.get_library_path())
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            maps = ""
        if path in maps:
            # Someone else in this process has the library open, so dlclose would not
            # unmap it and the static synthesis state would leak between clips.
            tmp = tempfile.mkdtemp(prefix="cltm-espeak-")
            atexit.register(shutil.rmtree, tmp, True)
            private = os.path.join(tmp, "libespeak-ng-demo.so")
            shutil.copyfile(path, private)
            path = private
        _library_path = path
    return _library_path


def _espeak_data_path() -> bytes:
    """Directory of the espeak-ng-data shipped with espeakng-loader, as bytes."""
    import espeakng_loader  # loads a native library: only when the demo corpus is built

    return os.fsencode(espeakng_loader.get_data_path())


_libc = ctypes.CDLL(ctypes.util.find_library("c"))


def _synthesize(text: str, voice: str, *, rate: int, pitch: int, pitch_range: int,
                seed: int) -> np.ndarray:
    """Speak text with a fresh eSpeak NG instance and return int16 samples at 22050 Hz."""
    lib = ctypes.CDLL(_espeak_library_path(), mode=ctypes.RTLD_LOCAL)
    initialised = False
    try:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        rate_hz = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, _espeak_data_path(), 0)
        initialised = rate_hz > 0
        if rate_hz != _SAMPLE_RATE:
            raise RuntimeError(f"eSpeak NG initialisation failed (returned {rate_hz})")
        lib.espeak_SetSynthCallback(_CALLBACK)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        for parameter, value in ((_RATE, rate), (_VOLUME, 100), (_PITCH, pitch), (_RANGE, pitch_range)):
            lib.espeak_SetParameter(parameter, int(value), 0)
        lib.espeak_ng_SetRandSeed(seed)
        _libc.srand(ctypes.c_uint(seed))  # eSpeak also calls libc rand() in places
        data = text.encode("utf-8")
        _chunks.clear()
        status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
        samples = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        _chunks.clear()
    finally:
        if initialised:
            lib.espeak_Terminate()
        handle = lib._handle
        del lib
        _ctypes.dlclose(handle)
    if samples.size < _SAMPLE_RATE // 10:
        raise RuntimeError(f"eSpeak NG produced no audio for {text!r} with voice {voice!r}")
    return samples


# ------------------------------------------------------------------------ randomness


def _rng(seed: int, *key: str) -> np.random.Generator:
    """Generator seeded from seed and a stable string key (never Python's hash())."""
    digest = hashlib.sha256("\x1f".join(key).encode("utf-8")).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest, dtype="<u4").tolist()])


# -------------------------------------------------------------------------- roster


@dataclass(frozen=True)
class _Speaker:
    """A synthetic contributor and the voice parameters that make them distinct."""

    key: str  # stable identity, e.g. "es/female/03"
    client_id: str
    sex: str  # "female" | "male": which eSpeak voice family is used
    label: str  # "female" | "male" | "undisclosed" | "" (as reported in the TSV)
    age: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int
    vtl: float  # resampling factor; >1 raises formants and F0 together


@dataclass
class _Slot:
    """A speaker's participation in one locale."""

    speaker: _Speaker
    split: str  # "train" | "dev" | "test"
    n_clips: int


@dataclass
class _Clip:
    """One validated row plus what is needed to render its audio."""

    slot: _Slot
    index: int
    clip_id: int
    sentence: str
    up_votes: int = 2
    down_votes: int = 0
    fault: str = ""  # "", "missing", "empty", "truncated"
    duration_ms: int = 0
    extra: dict[str, str] = field(default_factory=dict)


def _make_speaker(seed: int, key: str, sex: str, label: str) -> _Speaker:
    """Draw the voice parameters of one speaker from a generator keyed by its identity."""
    rng = _rng(seed, "speaker", key)
    # A consistent speaker-level pitch/formant gap (female ~150-290 Hz, male ~75-125 Hz), with the task
    # made hard by noise instead: with overlapping pitch, 2 test speakers per gender on the "wrong" side
    # made more training data *hurt* some targets (measured: nl self gain -1.3 SE), so no CLTM denominator.
    if sex == "female":
        pitch = int(rng.integers(30, 81))
        vtl = float(rng.uniform(0.98, 1.08))
    else:
        pitch = int(rng.integers(25, 71))
        vtl = float(rng.uniform(0.92, 1.02))
    age = "" if rng.random() < 0.15 else str(rng.choice(_AGES, p=_AGE_WEIGHTS / _AGE_WEIGHTS.sum()))
    return _Speaker(
        key=key,
        client_id=hashlib.sha512(f"cltm-demo\x1f{seed}\x1f{key}".encode()).hexdigest(),
        sex=sex,
        label=label,
        age=age,
        variant=str(rng.choice(_VARIANTS[sex])),
        pitch=pitch,
        pitch_range=int(rng.integers(20, 91)),
        rate=int(rng.integers(135, 206)),
        vtl=round(vtl, 4),
    )


def _held_out_per_gender(speakers_per_gender: int) -> int:
    """Speakers per gender in each of dev and test: 2, or 1 for tiny configurations."""
    return 2 if speakers_per_gender >= 6 else 1


def _rosters(languages: Sequence[DemoLanguage], speakers_per_gender: int,
             clips_per_speaker: int, seed: int) -> dict[str, list[_Slot]]:
    """Assign speakers to locales and splits, including the bilingual contributors."""
    held = _held_out_per_gender(speakers_per_gender)
    rosters: dict[str, list[_Slot]] = {}
    for lang in languages:
        slots: list[_Slot] = []
        for sex in ("female", "male"):
            for i in range(speakers_per_gender):
                split = "test" if i < held else "dev" if i < 2 * held else "train"
                speaker = _make_speaker(seed, f"{lang.locale}/{sex}/{i:02d}", sex, sex)
                slots.append(_Slot(speaker, split, clips_per_speaker))
        rosters[lang.locale] = slots

    # Bilingual contributors: the same person (client_id and voice) in a second locale,
    # replacing that locale's last native train speaker of the same gender.
    locales = [lang.locale for lang in languages]
    n = len(locales)
    if n >= 2:
        plans = [  # (home locale, home split, sex, guest locale)
            (locales[0], "test", "female", locales[1]),
            (locales[2 % n], "train", "male", locales[3 % n]),
        ]
        for home, home_split, sex, guest in plans:
            source = next(s for s in rosters[home] if s.split == home_split and s.speaker.sex == sex)
            target = [s for s in rosters[guest] if s.split == "train" and s.speaker.sex == sex
                      and s.speaker.key.startswith(f"{guest}/")]
            if home == guest or not target:
                continue
            target[-1].speaker = source.speaker

    # Extra speakers with an empty or undisclosed gender, always in train.
    for lang in languages:
        for j, label in enumerate(("", "undisclosed")):
            sex = ("female", "male")[int(_rng(seed, "extra-sex", lang.locale, str(j)).integers(2))]
            speaker = _make_speaker(seed, f"{lang.locale}/extra/{j:02d}", sex, label)
            rosters[lang.locale].append(_Slot(speaker, "train", min(_EXTRA_CLIPS, clips_per_speaker)))
    return rosters


# ------------------------------------------------------------------------ sentences


def _sentences(lang: DemoLanguage, count: int, seed: int) -> list[str]:
    """Draw count distinct short 3-8 word sentences from the language's frequent words."""
    import wordfreq  # its word lists load slowly: only when the demo corpus is built

    ranked = wordfreq.top_n_list(lang.wordfreq, _WORDLIST_SIZE)
    # Single letters are words only among the very top ("y", "a", "e"); deeper ones
    # are abbreviations and initials that eSpeak would spell out.
    words = [w for rank, w in enumerate(ranked) if w.isalpha() and (len(w) > 1 or rank < 30)]
    if len(words) < 100:
        raise ValueError(f"wordfreq has too few words for {lang.wordfreq!r}")
    weights = 1.0 / np.sqrt(np.arange(1, len(words) + 1))
    weights /= weights.sum()
    rng = _rng(seed, "sentences", lang.locale)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        n_words = int(rng.integers(3, 9))
        picked = [words[i] for i in rng.choice(len(words), size=n_words, p=weights)]
        text = " ".join(picked)
        sentence = text[0].upper() + text[1:] + "."
        if _MIN_SENTENCE_CHARS <= len(sentence) <= _MAX_SENTENCE_CHARS and sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


def _quoted(sentence: str) -> str:
    """Insert one unbalanced double quote before the second word of a sentence."""
    first, rest = sentence.split(" ", 1)
    return f'{first} "{rest}'


# --------------------------------------------------------------------------- audio


def _render(clip: _Clip, lang: DemoLanguage, seed: int, snr_db_range: tuple[float, float]) -> np.ndarray:
    """Synthesise one clip: eSpeak, vocal-tract scaling, padding, gain and noise."""
    spk = clip.slot.speaker
    rng = _rng(seed, "clip", lang.locale, spk.key, str(clip.index))
    rate = int(np.clip(round(spk.rate * rng.uniform(0.95, 1.05)), 80, 450))
    pitch = int(np.clip(spk.pitch + rng.integers(-4, 5), 0, 100))
    pcm = _synthesize(
        clip.sentence, f"{lang.voice}+{spk.variant}", rate=rate, pitch=pitch,
        pitch_range=spk.pitch_range, seed=int(rng.integers(1, 2**31 - 1)),
    )
    speech = pcm.astype(np.float64) / 32768.0
    # Treat the waveform as if recorded at sr * vtl: formants and F0 scale by vtl.
    speech = soxr.resample(speech, _SAMPLE_RATE * spk.vtl, _SAMPLE_RATE)
    speech *= rng.uniform(0.3, 0.8) / max(np.abs(speech).max(), 1e-9)
    lead = int(rng.uniform(0.10, 0.40) * _SAMPLE_RATE)
    trail = int(rng.uniform(0.10, 0.40) * _SAMPLE_RATE)
    signal = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    snr_db = rng.uniform(*snr_db_range)
    noise_rms = np.sqrt(np.mean(speech**2) / 10 ** (snr_db / 10))
    signal += rng.normal(0.0, noise_rms, signal.size)
    return np.clip(signal, -0.99, 0.99).astype(np.float32)


def _encode_mp3(audio: np.ndarray) -> bytes:
    """Encode mono float audio as MP3 in memory (libsndfile/LAME, deterministic)."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, _SAMPLE_RATE, format="MP3", subtype="MPEG_LAYER_III")
    return buffer.getvalue()


# -------------------------------------------------------------------------- writing


def _write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Write a tab-separated file with no quoting, UTF-8 and \\n line ends."""
    lines = ["\t".join(header)]
    for row in rows:
        for value in row:
            if "\t" in value or "\n" in value or "\r" in value:
                raise ValueError(f"field contains a tab or line break: {value!r}")
        lines.append("\t".join(row))
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))


def _row(clip: _Clip, locale: str, labels: dict[str, str]) -> list[str]:
    """The CV_COLUMNS fields of one clip."""
    spk = clip.slot.speaker
    return [
        spk.client_id,
        f"common_voice_{locale}_{clip.clip_id}.mp3",
        hashlib.sha256(clip.sentence.encode("utf-8")).hexdigest(),
        clip.sentence,
        "",
        str(clip.up_votes),
        str(clip.down_votes),
        spk.age,
        labels.get(spk.label, ""),
        "",
        "",
        locale,
        "",
    ]


def _readme(languages: Sequence[DemoLanguage], clean_languages: Sequence[DemoLanguage],
            speakers_per_gender: int, clips_per_speaker: int, seed: int, version: str) -> str:
    """Text of root/README.txt describing the corpus and the arguments used."""
    def listing(group: Sequence[DemoLanguage]) -> str:
        return "\n".join(f"  {l.locale}: espeak voice {l.voice!r}, wordfreq {l.wordfreq!r}" for l in group)

    def snr(bounds: tuple[float, float]) -> str:
        return f"{bounds[0]:g}-{bounds[1]:g} dB SNR"

    clean = (
        f"Clean locales (noise {CLEAN_SNR_DB[0] - NOISY_SNR_DB[0]:g} dB lower: {snr(CLEAN_SNR_DB)};"
        " used by the demo's ASR task):\n"
        f"{listing(clean_languages)}\n" if clean_languages else ""
    )
    return (
        f"Synthetic demo corpus {version} in the Mozilla Common Voice release layout.\n"
        "\n"
        "This is NOT Common Voice data. Every clip is synthetic speech from eSpeak NG\n"
        "(espeakng-loader) reading random sentences made of frequent words (wordfreq),\n"
        "with per-speaker voice variants, pitch, rate and vocal-tract-length changes,\n"
        f"random silence padding and white noise at {snr(NOISY_SNR_DB)}. Speakers, ages and\n"
        "client_ids are invented. It exists to exercise the cltm-pipeline end to end.\n"
        "Deliberate defects: rows whose mp3 is missing, empty or truncated; a sentence\n"
        "with an unbalanced double quote; speakers with empty/undisclosed gender; two\n"
        "contributors recorded in two locales; old and 17.0+ gender labels.\n"
        "\n"
        "Built by cltm_pipeline.data.demo.build_demo_corpus with:\n"
        f"  version = {version}\n"
        f"  seed = {seed}\n"
        f"  speakers_per_gender = {speakers_per_gender}\n"
        f"  clips_per_speaker = {clips_per_speaker}\n"
        f"  languages =\n{listing(languages)}\n"
        + clean
    )


#: File marking a directory as a generated demo release, so a rebuild may replace its locales.
MARKER = ".cltm-demo"


def build_demo_corpus(
    root: Path,
    *,
    languages: Sequence[DemoLanguage] = DEFAULT_LANGUAGES,
    clean_languages: Sequence[DemoLanguage] = (),
    speakers_per_gender: int = 12,
    clips_per_speaker: int = 10,
    seed: int = 0,
    version: str = "demo-1.0",
    workers: int = 1,
) -> Path:
    """Write a Common Voice-style release under root/<locale>/ and return root.

    ``clean_languages`` are rendered after ``languages``, as a group of their own (own bilingual
    contributors and defects), with the noise 60 dB lower; ``languages`` come out byte-identical
    whatever ``clean_languages`` is. ``workers`` processes render locales side by side (same bytes).
    """
    root = Path(root)
    languages, clean_languages = tuple(languages), tuple(clean_languages)
    if not languages:
        raise ValueError("languages must not be empty")
    locales = [lang.locale for lang in (*languages, *clean_languages)]
    if len(set(locales)) != len(locales):
        raise ValueError("locales must be unique")
    if speakers_per_gender < 3:
        raise ValueError("speakers_per_gender must be at least 3 (train, dev and test need both genders)")
    if clips_per_speaker < 1:
        raise ValueError("clips_per_speaker must be at least 1")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    marker = root / MARKER
    for locale in locales:
        locale_dir = root / locale
        if locale_dir.exists() and any(locale_dir.iterdir()):
            if not marker.is_file():  # never delete what this function did not write
                raise FileExistsError(f"{locale_dir} exists, is not empty and is not a generated demo corpus")
            shutil.rmtree(locale_dir)  # a stale demo locale from other arguments: rebuild it

    root.mkdir(parents=True, exist_ok=True)
    # First, so that a build killed half-way can be rebuilt over.
    marker.write_text("generated by cltm_pipeline.data.demo; locale directories here may be rebuilt\n", encoding="utf-8")
    next_id = 18_000_000 + int(_rng(seed, "clip-ids").integers(0, 1_000_000))
    next_id = _write_group(root, languages, speakers_per_gender, clips_per_speaker, seed, next_id, NOISY_SNR_DB,
                           workers)
    if clean_languages:
        _write_group(root, clean_languages, speakers_per_gender, clips_per_speaker, seed, next_id, CLEAN_SNR_DB,
                     workers)
    (root / "README.txt").write_bytes(
        _readme(languages, clean_languages, speakers_per_gender, clips_per_speaker, seed, version).encode("utf-8")
    )
    return root


def _write_group(root: Path, languages: tuple[DemoLanguage, ...], speakers_per_gender: int,
                 clips_per_speaker: int, seed: int, next_id: int, snr_db_range: tuple[float, float],
                 workers: int = 1) -> int:
    """Render one group of locales (shared rosters and defects) and return the next free clip id.

    The rows of every locale are planned first, in order (clip ids run on across locales); then the
    locales are rendered, in ``workers`` processes when > 1: every clip is a pure function of its plan,
    so the bytes do not depend on ``workers``."""
    rosters = _rosters(languages, speakers_per_gender, clips_per_speaker, seed)
    n = len(languages)
    broken_locales = {0, n // 2}
    plans: list[tuple[DemoLanguage, dict[str, str], list[_Clip], list[int]]] = []

    for li, lang in enumerate(languages):
        locale = lang.locale
        labels = _LABELS_NEW if li % 2 == 0 else _LABELS_OLD
        slots = rosters[locale]
        sentences = _sentences(lang, sum(s.n_clips for s in slots), seed)
        rng = _rng(seed, "rows", locale)
        clips: list[_Clip] = []
        for slot in slots:
            for k in range(slot.n_clips):
                next_id += int(rng.integers(1, 400))
                up = 2 if rng.random() < 0.85 else int(rng.integers(3, 5))
                down = 0 if rng.random() < 0.9 else 1
                clips.append(_Clip(slot, k, next_id, sentences[len(clips)], up, down))

        # Defects live in train rows of native, balanced-gender speakers.
        native = [c for c in clips if c.slot.split == "train"
                  and c.slot.speaker.key.startswith(f"{locale}/")
                  and c.slot.speaker.label in ("female", "male")]
        slot_order = {id(slot): i for i, slot in enumerate(slots)}
        native.sort(key=lambda c: (-c.index, slot_order[id(c.slot)]))
        if li in broken_locales:
            for clip, fault in zip(native, ("missing", "empty", "truncated")):
                clip.fault = fault
        if li == 0:
            quoted = next((c for c in native if not c.fault), None)
            if quoted is not None:
                quoted.sentence = _quoted(quoted.sentence)
        plans.append((lang, labels, clips, rng.permutation(len(clips)).tolist()))

    jobs = [(root, lang, clips, seed, snr_db_range) for lang, _, clips, _ in plans]
    if workers > 1 and len(jobs) > 1:
        # spawn: a fresh interpreter per worker, whatever the caller has loaded (threads, the eSpeak library)
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
            durations = list(pool.map(_render_locale, *zip(*jobs)))
    else:
        durations = [_render_locale(*job) for job in jobs]

    for (lang, labels, clips, order), duration_ms in zip(plans, durations):
        locale = lang.locale
        for clip, ms in zip(clips, duration_ms):
            clip.duration_ms = ms
        validated = [clips[i] for i in order]
        rows: dict[str, list[list[str]]] = {name: [] for name in _CLIP_TSVS}
        for clip in validated:
            row = _row(clip, locale, labels)
            rows["validated"].append(row)
            rows[clip.slot.split].append(row)
        for name in _CLIP_TSVS:
            _write_tsv(root / locale / f"{name}.tsv", CV_COLUMNS, rows[name])
        _write_tsv(root / locale / "reported.tsv", _REPORTED_COLUMNS, [])
        _write_tsv(
            root / locale / "clip_durations.tsv",
            _DURATION_COLUMNS,
            [[f"common_voice_{locale}_{c.clip_id}.mp3", str(c.duration_ms)] for c in clips],
        )

    return next_id


def _letters(k: int) -> str:
    """``k`` spelt in letters a-z (a word that survives text normalisation)."""
    out = ""
    while True:
        k, r = divmod(k, 26)
        out = chr(97 + r) + out
        if not k:
            return out


def scale_locale(src: Path, dst: Path, rows: int, clips_per_speaker: int = 20) -> Path:
    """A Common Voice-layout locale of ``rows`` validated clips built from a demo locale, for scale benchmarks
    and tests: ``src``'s test and dev rows as they are, then new training rows, each a hard link to one of
    ``src``'s training mp3s under a new name (decoding stays real, the disk holds only links), read by new
    speakers of ``clips_per_speaker`` clips and one gender each, with sentences made distinct by a suffix.
    A template that is broken in ``src`` (missing, empty, truncated mp3) stays broken in its copies.
    """
    src, dst = Path(src), Path(dst)
    (dst / "clips").mkdir(parents=True, exist_ok=True)
    validated = read_tsv(src / "validated.tsv")
    cols = validated.columns
    evaluation = set()
    for name in ("test", "dev"):
        split = read_tsv(src / f"{name}.tsv", required=("path",))
        evaluation |= set(split["path"].to_list())
        split.write_csv(dst / f"{name}.tsv", separator="\t", quote_style="never")
    kept = validated.filter(_is_in("path", evaluation))
    templates = validated.filter(~_is_in("path", evaluation))
    by_gender = {g: templates.filter(templates["gender"].str.starts_with(g)).to_dicts() for g in ("female", "male")}
    durations = read_tsv(src / "clip_durations.tsv", required=("clip", "duration[ms]"))
    dur = dict(zip(durations["clip"].to_list(), durations["duration[ms]"].to_list()))
    for p in kept["path"]:
        if (src / "clips" / p).is_file() and not (dst / "clips" / p).exists():
            os.link(src / "clips" / p, dst / "clips" / p)
    locale = str(validated["locale"][0]) if "locale" in cols else dst.name
    new: list[dict[str, str]] = []
    for k in range(max(0, rows - kept.height)):
        spk = k // clips_per_speaker
        pool = by_gender["female" if spk % 2 else "male"]
        t = dict(pool[k % len(pool)])
        path = f"common_voice_{locale}_s{k:08d}.mp3"
        if (src / "clips" / t["path"]).is_file():
            target = dst / "clips" / path
            if not target.exists():
                os.link(src / "clips" / t["path"], target)
        dur[path] = dur.get(t["path"], "")
        t.update(path=path, client_id=hashlib.sha512(f"scale-{locale}-{spk}".encode()).hexdigest(),
                 sentence=f"{t['sentence'].rstrip('.')} {_letters(k)}.", sentence_id=hashlib.sha256(path.encode()).hexdigest())
        new.append(t)
    table = pl.concat([kept, pl.DataFrame(new, schema={c: pl.String for c in cols})]) if new else kept
    table.write_csv(dst / "validated.tsv", separator="\t", quote_style="never")
    table.filter(~_is_in("path", evaluation)).write_csv(dst / "train.tsv", separator="\t", quote_style="never")
    pl.DataFrame({"clip": table["path"], "duration[ms]": [dur.get(p, "") or "0" for p in table["path"]]}).write_csv(
        dst / "clip_durations.tsv", separator="\t", quote_style="never")
    return dst


def _is_in(col: str, values: set[str]) -> Any:
    """``pl.col(col).is_in(values)``."""
    return pl.col(col).is_in(pl.Series(sorted(values), dtype=pl.String).implode())


def _render_locale(root: Path, lang: DemoLanguage, clips: list[_Clip], seed: int,
                   snr_db_range: tuple[float, float]) -> list[int]:
    """Render and write the mp3s of one locale's planned clips (defects included); return their durations in ms."""
    clips_dir = root / lang.locale / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    durations = []
    for clip in clips:
        audio = _render(clip, lang, seed, snr_db_range)
        durations.append(int(round(1000 * audio.size / _SAMPLE_RATE)))
        if clip.fault == "missing":
            continue
        data = _encode_mp3(audio)
        if clip.fault == "empty":
            data = b""
        elif clip.fault == "truncated":
            data = data[:_TRUNCATED_BYTES]
        (clips_dir / f"common_voice_{lang.locale}_{clip.clip_id}.mp3").write_bytes(data)
    return durations
