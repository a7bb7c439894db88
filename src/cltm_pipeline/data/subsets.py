"""Protocol-exact training subsets: fixed evaluation sets per target, nested single/self and donor draws per seed.

DESIGN.md §1 "Cells": for target i, donor j and seed s with a regime of N units,
single = N of i; self = the same N plus N more of i (nested); dual = the same N plus N of j.
Every draw is a pure function of (utterance tables, spec, seed): clips are ranked by a keyed hash,
so the same inputs give byte-identical manifests whatever the library versions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal, Mapping, Sequence

import polars as pl

from cltm_pipeline.errors import SubsetError
from cltm_pipeline.io import stable_hash
from cltm_pipeline.text import normalise

__all__ = [
    "SubsetSpec",
    "PROBE_MAX_CLIPS",
    "build_probe_set",
    "MANIFEST_COLUMNS",
    "eval_sets",
    "draw_seed",
    "cell_manifest",
    "check_invariants",
    "pool_counts",
    "check_capacity",
    "training_pool",
    "eval_sentences",
    "sentence_drops",
]

#: Columns of every manifest (evaluation sets, seed tables, cell manifests), in this order.
MANIFEST_COLUMNS = (
    "part", "locale", "utt_id", "client_id", "gender", "duration_s", "offset", "num_samples", "sentence",
)
BINARY = ("female", "male")
#: How a single cell (no donor) is spelt where a donor name is expected: paths, CLI, TSVs.
@dataclass(frozen=True)
class SubsetSpec:
    """How one task draws its subsets (from the task's config block)."""

    task: str
    languages: tuple[str, ...]
    n: float  # training units per cell part: utterances, or hours when unit == "hours"
    unit: Literal["utterances", "hours"] = "utterances"
    balance: Literal["gender", "none"] = "gender"
    split_source: Literal["cv", "speakers"] = "cv"
    test_speakers_per_gender: int = 2
    dev_speakers_per_gender: int = 2
    test_max_per_gender: int | None = None  # cap on evaluation utterances per gender (per split)
    seeds: tuple[int, ...] = field(default=(0,))

    def to_json(self) -> str:
        """Compact JSON, the form in which rules pass the spec to ``cltm`` (and Snakemake tracks it as a param)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "SubsetSpec":
        """Inverse of :meth:`to_json`; text that is not such a spec is a one-line SubsetError."""
        try:
            d = json.loads(text)
            return cls(**{**d, "languages": tuple(d["languages"]), "seeds": tuple(d["seeds"])})
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            raise SubsetError(f"--spec: not a subset spec as the workflow writes it ({type(exc).__name__}: {exc})") from None

    def __post_init__(self) -> None:
        if self.unit == "utterances" and self.balance == "gender" and int(self.n) % 2:
            raise SubsetError(f"task {self.task}: regime n={self.n} must be even to split equally over two genders")


def _genders(spec: SubsetSpec, df: pl.DataFrame) -> pl.DataFrame:
    """Balanced tasks can only use clips labelled female or male."""
    return df.filter(pl.col("gender").is_in(BINARY)) if spec.balance == "gender" else df


def _speaker_split(spec: SubsetSpec, df: pl.DataFrame) -> dict[str, set[str]]:
    """Test/dev speakers of one locale: CV's own split files, or a hash-ranked, gender-stratified draw."""
    if spec.split_source == "cv":
        return {s: set(df.filter(pl.col("cv_split") == s)["client_id"].to_list()) for s in ("test", "dev")}
    spk = (
        df.filter(pl.col("gender").is_in(BINARY))
        .group_by("client_id")
        .agg(pl.col("gender").mode().sort().first())
        .with_columns(pl.col("client_id").map_elements(lambda c: stable_hash("split", c), return_dtype=pl.UInt64).alias("_h"))
        .sort("_h")
    )
    out: dict[str, set[str]] = {"test": set(), "dev": set()}
    for g in BINARY:
        ids = spk.filter(pl.col("gender") == g)["client_id"].to_list()
        k, d = spec.test_speakers_per_gender, spec.dev_speakers_per_gender
        out["test"].update(ids[:k])
        out["dev"].update(ids[k : k + d])
    return out


def _ranked(df: pl.DataFrame, seed: int | str, locale: str) -> pl.DataFrame:
    """Rows in a fixed pseudo-random order keyed by (seed, locale, utterance)."""
    return (
        df.with_columns(
            pl.col("utt_id").map_elements(lambda u: stable_hash(seed, locale, u), return_dtype=pl.UInt64).alias("_h")
        )
        .sort("_h", "utt_id")
        .drop("_h")
    )


def _manifest(df: pl.DataFrame, part: str) -> pl.DataFrame:
    return df.with_columns(pl.lit(part).alias("part")).select(MANIFEST_COLUMNS)


def eval_sets(spec: SubsetSpec, target: str, table: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The fixed test and dev sets of a target (independent of seed and cell), gender-balanced if the task is."""
    df = _genders(spec, table)
    speakers = _speaker_split(spec, table)
    if speakers["test"] & speakers["dev"]:
        raise SubsetError(f"{spec.task}/{target}: speakers in both CV test and dev splits: {sorted(speakers['test'] & speakers['dev'])[:3]}")
    out = []
    for name in ("test", "dev"):
        rows = _ranked(df.filter(pl.col("client_id").is_in(list(speakers[name]))), f"{name}", target)
        if spec.balance == "gender":
            counts = {g: rows.filter(pl.col("gender") == g).height for g in BINARY}
            k = min(counts.values())
            if spec.test_max_per_gender:
                k = min(k, spec.test_max_per_gender)
            if k == 0:
                raise SubsetError(
                    f"{spec.task}/{target}: the {name} split has {counts['female']} female and {counts['male']} male "
                    f"clips; a gender-balanced {name} set needs both"
                )
            rows = pl.concat([rows.filter(pl.col("gender") == g).head(k) for g in BINARY])
        elif spec.test_max_per_gender:
            rows = rows.head(2 * spec.test_max_per_gender)
        if rows.height == 0:
            raise SubsetError(f"{spec.task}/{target}: empty {name} set (split source {spec.split_source!r})")
        out.append(_manifest(rows.sort("utt_id"), name))
    return out[0], out[1]


def eval_sentences(test: pl.DataFrame, dev: pl.DataFrame) -> set[str]:
    """Normalised sentences of a target's test and dev sets: no training clip of its cells may repeat one."""
    return {x for x in (normalise(t) for t in [*test["sentence"].to_list(), *dev["sentence"].to_list()]) if x}


def _repeats(df: pl.DataFrame, sentences: set[str]) -> pl.Series:
    """Rows of ``df`` whose normalised sentence is one of ``sentences`` (CV re-records sentences by other speakers)."""
    if not sentences or df.height == 0:
        return pl.Series([False] * df.height)
    return df["sentence"].map_elements(lambda t: normalise(t) in sentences, return_dtype=pl.Boolean)


def _pool(
    spec: SubsetSpec, locale: str, table: pl.DataFrame, exclude: set[str], sentences: set[str] | None = None
) -> pl.DataFrame:
    """Training pool of a locale: outside its own test/dev speakers, the target's excluded speakers and
    (when given) the target's test/dev sentences."""
    own = _speaker_split(spec, table)
    banned = list(own["test"] | own["dev"] | exclude)
    pool = _genders(spec, table).filter(~pl.col("client_id").is_in(banned))
    return pool.filter(~_repeats(pool, sentences)) if sentences else pool


def sentence_drops(
    spec: SubsetSpec, target: str, tables: Mapping[str, pl.DataFrame], test: pl.DataFrame, dev: pl.DataFrame
) -> dict[str, int]:
    """Per locale of the task, the pool clips target ``target``'s cells lose because they repeat one of its
    test or dev sentences."""
    exclude = set(test["client_id"].to_list()) | set(dev["client_id"].to_list())
    sentences = eval_sentences(test, dev)
    out = {}
    for locale in spec.languages:
        pool = _pool(spec, locale, tables[locale], exclude)
        out[locale] = int(_repeats(pool, sentences).sum())
    return out


def training_pool(spec: SubsetSpec, locale: str, table: pl.DataFrame) -> pl.DataFrame:
    """Every clip of ``locale`` that some cell of the task may train on (as target or donor): the locale's
    pool outside its own test/dev speakers. A target's draw further drops its evaluation speakers."""
    return _pool(spec, locale, table, set())


def _take(spec: SubsetSpec, ranked: pl.DataFrame, skip: int | float, what: str) -> tuple[pl.DataFrame, int | float]:
    """The next N units after ``skip`` units of a ranked pool: utterances, or the shortest prefix reaching N hours."""
    if spec.unit == "utterances":
        n = int(spec.n)
        if ranked.height < skip + n:
            raise SubsetError(f"{what}: needs {int(skip) + n} clips, has {ranked.height}")
        return ranked.slice(int(skip), n), skip + n
    goal = spec.n * 3600.0
    rest = ranked.slice(int(skip))
    cum = rest["duration_s"].cum_sum()
    reach = cum.search_sorted(goal - 1e-9, side="left")
    if rest.height == 0 or cum[-1] < goal - 1e-9:
        have = float(cum[-1]) / 3600 if rest.height else 0.0
        raise SubsetError(f"{what}: needs {spec.n:g} h after {int(skip)} clips, has {have:.3f} h")
    return rest.head(int(reach) + 1), skip + int(reach) + 1


def _draw(spec: SubsetSpec, pool: pl.DataFrame, seed: int, locale: str, parts: Sequence[str], what: str) -> pl.DataFrame:
    """Consecutive parts (e.g. single then extra) from one ranked pool, split equally over genders if balanced."""
    groups = [pool.filter(pl.col("gender") == g) for g in BINARY] if spec.balance == "gender" else [pool]
    half = SubsetSpec(**{**spec.__dict__, "n": spec.n / len(groups)})
    out = []
    for g, grp in zip(BINARY if len(groups) == 2 else ("any",), groups):
        ranked, skip = _ranked(grp, seed, locale), 0
        for part in parts:
            taken, skip = _take(half, ranked, skip, f"{what} [{g}]")
            out.append(_manifest(taken, part))
    return pl.concat(out)


def draw_seed(
    spec: SubsetSpec,
    target: str,
    seed: int,
    tables: Mapping[str, pl.DataFrame],
    test: pl.DataFrame,
    dev: pl.DataFrame,
) -> pl.DataFrame:
    """Every training unit target ``target`` needs at ``seed``: parts single, extra (self = single + extra) and one per donor.

    Donor clips are drawn from each donor's pool in an order keyed by (seed, donor), so a donor's draw is
    the same for every target except where a target's test or dev speaker, or a clip repeating one of its
    test or dev sentences (normalised), must be dropped.
    """
    exclude = set(test["client_id"].to_list()) | set(dev["client_id"].to_list())
    sentences = eval_sentences(test, dev)
    parts = [_draw(spec, _pool(spec, target, tables[target], exclude, sentences), seed, target, ("single", "extra"),
                   f"{spec.task}/{target} seed {seed}: target {target}")]
    for donor in spec.languages:
        if donor != target:
            pool = _pool(spec, donor, tables[donor], exclude, sentences)
            parts.append(_draw(spec, pool, seed, donor, (f"donor:{donor}",), f"{spec.task}/{target} seed {seed}: donor {donor}"))
    return pl.concat(parts)


def cell_manifest(seed_table: pl.DataFrame, target: str, donor: str | None) -> pl.DataFrame:
    """Training rows of one cell: single (donor None), self (donor == target) or dual (donor j)."""
    if donor is None:
        keep = ["single"]
    elif donor == target:
        keep = ["single", "extra"]
    else:
        keep = ["single", f"donor:{donor}"]
    rows = seed_table.filter(pl.col("part").is_in(keep))
    if donor not in (None, target) and rows.filter(pl.col("part") == f"donor:{donor}").height == 0:
        raise SubsetError(f"target {target}: the seed table has no clips of donor {donor}")
    return rows


def check_invariants(spec: SubsetSpec, target: str, seed_table: pl.DataFrame, test: pl.DataFrame, dev: pl.DataFrame) -> None:
    """Raise SubsetError unless the protocol's invariants hold for one target and seed."""
    where = f"{spec.task}/{target}"
    test_spk, dev_spk = set(test["client_id"].to_list()), set(dev["client_id"].to_list())
    if test_spk & dev_spk:
        raise SubsetError(f"{where}: speakers in both test and dev: {sorted(test_spk & dev_spk)[:3]}")
    leak = seed_table.filter(pl.col("client_id").is_in(list(test_spk | dev_spk)))
    if leak.height:
        r = leak.row(0, named=True)
        raise SubsetError(
            f"{where}: training clip {r['utt_id']} ({r['part']}, locale {r['locale']}) is by evaluation speaker {r['client_id'][:16]}…"
        )
    repeats = seed_table.filter(_repeats(seed_table, eval_sentences(test, dev)))
    if repeats.height:
        r = repeats.row(0, named=True)
        raise SubsetError(
            f"{where}: training clip {r['utt_id']} ({r['part']}, locale {r['locale']}) repeats a test/dev sentence: {r['sentence']!r}"
        )
    dup = seed_table.group_by("locale", "utt_id").len().filter(pl.col("len") > 1)
    if dup.height:
        raise SubsetError(f"{where}: clip {dup['utt_id'][0]} drawn twice into one seed table")
    for part, grp in seed_table.group_by("part", maintain_order=True):
        part = part[0]
        want_locale = part.split(":", 1)[1] if part.startswith("donor:") else target
        if set(grp["locale"].unique().to_list()) != {want_locale}:
            raise SubsetError(f"{where}: part {part} holds clips of {sorted(grp['locale'].unique().to_list())}, expected {want_locale}")
        if spec.balance == "gender":
            counts = {g: grp.filter(pl.col("gender") == g).height for g in BINARY}
            if spec.unit == "utterances" and counts["female"] != counts["male"]:
                raise SubsetError(f"{where}: part {part} is not gender-balanced: {counts}")
            if set(grp["gender"].unique().to_list()) - set(BINARY):
                raise SubsetError(f"{where}: part {part} holds clips without a binary gender label")
        if spec.unit == "utterances" and grp.height != int(spec.n):
            raise SubsetError(f"{where}: part {part} has {grp.height} clips, the regime says {int(spec.n)}")
    expected = {"single", "extra"} | {f"donor:{d}" for d in spec.languages if d != target}
    present = set(seed_table["part"].unique().to_list())
    if present != expected:
        raise SubsetError(f"{where}: parts {sorted(present ^ expected)} missing or unexpected in the seed table")


def pool_counts(spec: SubsetSpec, locale: str, table: pl.DataFrame) -> dict[str, float]:
    """What a locale offers the task's training pool, per gender group: clips and hours."""
    pool = _pool(spec, locale, table, set())
    groups = BINARY if spec.balance == "gender" else ("any",)
    out: dict[str, float] = {}
    for g in groups:
        grp = pool.filter(pl.col("gender") == g) if g != "any" else pool
        dur = grp["duration_s"] if "duration_s" in grp.columns else grp["cv_duration_s"]
        out[f"{g}_clips"] = grp.height
        out[f"{g}_hours"] = float(dur.fill_null(0).sum()) / 3600
    return out


def check_capacity(spec: SubsetSpec, tables: Mapping[str, pl.DataFrame]) -> None:
    """Reject a regime that asks more of a locale than its pool holds: 2N as a target (self), N as a donor."""
    share = 2 if spec.balance == "gender" else 1
    for locale in spec.languages:
        if locale not in tables:
            continue
        have = pool_counts(spec, locale, tables[locale])
        for key in [k for k in have if k.endswith("_clips")]:
            g = key.removesuffix("_clips")
            if spec.unit == "utterances":
                need, got, what = 2 * spec.n / share, have[key], "clips"
            else:
                need, got, what = 2 * spec.n / share, have[f"{g}_hours"], "hours"
            if got < need:
                who = f"{g} " if g != "any" else ""
                raise SubsetError(
                    f"tasks.{spec.task}.regime: locale {locale} has {got:g} {who}training {what} outside its test/dev "
                    f"speakers, the self cell needs {need:g} (2 x n={spec.n:g}{' split over 2 genders' if share == 2 else ''})"
                )


# ------------------------------------------------------------------------------------- probe set

#: Clips per language kept in the stored probe set; ``hparams.probe_clips`` uses the first ones of these.
PROBE_MAX_CLIPS = 64


def build_probe_set(spec: SubsetSpec, tables: Mapping[str, pl.DataFrame], per_language: int = PROBE_MAX_CLIPS) -> pl.DataFrame:
    """Up to ``per_language`` dev-set clips of every language of the task, in a seed-independent hashed order."""
    parts = []
    for locale in spec.languages:
        _, dev = eval_sets(spec, locale, tables[locale])
        ranked = dev.with_columns(pl.col("utt_id").map_elements(lambda u: stable_hash("probe", u), return_dtype=pl.UInt64).alias("_k"))
        parts.append(ranked.sort("_k").head(per_language).drop("_k").with_columns(pl.lit("probe").alias("part")))
    return pl.concat(parts)
