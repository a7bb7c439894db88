"""``cltm demo-corpus``, ``ingest``, ``eval-sets``, ``subsets``, ``task-artifact`` and ``probe-set``: the data layer."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import polars as pl

from cltm_pipeline.cli.common import read_tables
from cltm_pipeline.data.commonvoice import locale_dir
from cltm_pipeline.data.demo import DEMO_VOICES, build_demo_corpus
from cltm_pipeline.data.ingest import ingest_locale
from cltm_pipeline.data.subsets import (SubsetSpec, build_probe_set, check_capacity, check_invariants, draw_seed, eval_sets,
                                        sentence_drops)
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.io import read_manifest, write_bytes, write_json, write_tsv

__all__ = ["register"]


def cmd_demo_corpus(args: argparse.Namespace) -> None:
    """Write the deterministic demo corpus in Common Voice layout."""
    for key, locales in (("languages", args.languages), ("clean_languages", args.clean_languages)):
        unknown = [loc for loc in locales if loc not in DEMO_VOICES]
        if unknown:
            raise ConfigError(f"demo.{key}: no demo voice for {unknown} (have {sorted(DEMO_VOICES)})")
    t0 = time.perf_counter()
    build_demo_corpus(
        Path(args.out),
        languages=tuple(DEMO_VOICES[loc] for loc in args.languages),
        clean_languages=tuple(DEMO_VOICES[loc] for loc in args.clean_languages),
        speakers_per_gender=args.speakers_per_gender,
        clips_per_speaker=args.clips_per_speaker,
        seed=args.seed,
        workers=args.workers,
    )
    n = len(args.languages) + len(args.clean_languages)
    print(f"demo corpus: {n} locales in {args.out} ({time.perf_counter() - t0:.1f} s)")


def cmd_ingest(args: argparse.Namespace) -> None:
    """Ingest one locale of the release: utterance table, audio cache, quarantine report."""
    t0 = time.perf_counter()
    res = ingest_locale(
        locale_dir(Path(args.release), args.locale),
        args.locale,
        Path(args.out),
        workers=args.workers,
        min_clips=args.min_clips,
        max_clips_per_speaker=args.max_clips_per_speaker,
        pool_clips=args.pool_clips,
    )
    dt = time.perf_counter() - t0
    print(
        f"ingest {res.locale}: {res.kept} clips kept (training pool {res.pool}), {res.quarantined} quarantined, "
        f"{res.audio_seconds:.0f} s of audio in {dt:.1f} s"
    )


def cmd_eval_sets(args: argparse.Namespace) -> None:
    """Write a target's fixed test and dev sets for one task."""
    spec = SubsetSpec.from_json(args.spec)
    test, dev = eval_sets(spec, args.target, pl.read_parquet(args.table))
    write_tsv(Path(args.test), test)
    write_tsv(Path(args.dev), dev)
    print(f"{spec.task}/{args.target}: test {test.height} clips / {test['client_id'].n_unique()} speakers, "
          f"dev {dev.height} clips / {dev['client_id'].n_unique()} speakers")


def cmd_subsets(args: argparse.Namespace) -> None:
    """Draw one target's training units for one seed, check the protocol invariants, write the seed table."""
    spec = SubsetSpec.from_json(args.spec)
    tables = read_tables(args.tables)
    check_capacity(spec, tables)
    test, dev = read_manifest(Path(args.test)), read_manifest(Path(args.dev))
    table = draw_seed(spec, args.target, args.seed, tables, test, dev)
    check_invariants(spec, args.target, table, test, dev)
    drops = sentence_drops(spec, args.target, tables, test, dev)
    if args.stats:
        parts = {p: int(n) for p, n in table.group_by("part").len().sort("part").iter_rows()}
        write_json(Path(args.stats), {"task": spec.task, "target": args.target, "seed": args.seed, "clips": table.height,
                                      "parts": parts, "pool_clips_dropped_for_test_dev_sentences": drops})
    write_tsv(Path(args.out), table)
    print(f"{spec.task}/{args.target} seed {args.seed}: {table.height} training clips in {table['part'].n_unique()} parts; "
          f"pool clips dropped for repeating a test/dev sentence: {sum(drops.values())} "
          f"({', '.join(f'{k} {v}' for k, v in drops.items() if v) or 'none'})")


def cmd_task_artifact(args: argparse.Namespace) -> None:
    """Build one artifact a task declares: per target (from its test and dev sets) or per task (from tables)."""
    from cltm_pipeline.tasks import get_task  # the task registry and every task module: only this command

    spec = SubsetSpec.from_json(args.spec)
    task = get_task(args.task)
    if args.tables:
        build = task.task_artifacts.get(args.name)
        data = build(spec, read_tables(args.tables)) if build else None
    else:
        build = task.target_artifacts.get(args.name)
        data = build(spec, read_manifest(Path(args.test)), read_manifest(Path(args.dev))) if build else None
    if build is None:
        kind = "task" if args.tables else "target"
        known = task.task_artifacts if args.tables else task.target_artifacts
        raise ConfigError(f"task {args.task}: no {kind} artifact {args.name!r} (declared: {', '.join(known) or 'none'})")
    write_bytes(Path(args.out), data)
    print(f"{args.task}: {args.name} -> {args.out} ({len(data):,} bytes)")


def cmd_probe_set(args: argparse.Namespace) -> None:
    """Write a task's probe set: dev-speaker clips of every language, for the latent language-ID probes."""
    spec = SubsetSpec.from_json(args.spec)
    probe = build_probe_set(spec, read_tables(args.tables))
    write_tsv(Path(args.out), probe)
    print(f"{spec.task}: probe set of {probe.height} clips over {probe['locale'].n_unique()} languages")


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``cltm`` subparsers."""
    s = sub.add_parser("demo-corpus", help=cmd_demo_corpus.__doc__)
    s.add_argument("--out", required=True, help="release directory to write")
    s.add_argument("--languages", nargs="+", required=True, help="locales with the demo's 2-6 dB noise")
    s.add_argument("--clean-languages", nargs="*", default=[], help="locales rendered with the noise 60 dB lower")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--speakers-per-gender", type=int, default=12)
    s.add_argument("--clips-per-speaker", type=int, default=10)
    s.add_argument("--workers", type=int, default=1, help="processes rendering locales side by side (same bytes)")
    s.set_defaults(func=cmd_demo_corpus)

    s = sub.add_parser("ingest", help=cmd_ingest.__doc__)
    s.add_argument("--release", required=True, help="Common Voice release directory")
    s.add_argument("--locale", required=True)
    s.add_argument("--out", required=True, help="output directory for this locale")
    s.add_argument("--workers", type=int, default=1, help="decoding processes")
    s.add_argument("--min-clips", type=int, default=1, help="fail the locale below this many usable clips")
    s.add_argument("--max-clips-per-speaker", type=int, help="cap on training-pool clips per speaker")
    s.add_argument("--pool-clips", type=int,
                   help="decode only a hash-ranked sample of the non-test/dev clips holding this many per binary gender "
                        "(default: all); the workflow passes the size its grid can draw")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("eval-sets", help=cmd_eval_sets.__doc__)
    s.add_argument("--spec", required=True, help="the task's SubsetSpec as JSON")
    s.add_argument("--target", required=True)
    s.add_argument("--table", required=True, help="the target's ingested utterances.parquet")
    s.add_argument("--test", required=True)
    s.add_argument("--dev", required=True)
    s.set_defaults(func=cmd_eval_sets)

    s = sub.add_parser("subsets", help=cmd_subsets.__doc__)
    s.add_argument("--spec", required=True, help="the task's SubsetSpec as JSON")
    s.add_argument("--target", required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--tables", nargs="+", required=True, help="utterances.parquet of the target and every donor")
    s.add_argument("--test", required=True)
    s.add_argument("--dev", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--stats", help="JSON beside the seed table: clips per part, pool clips dropped for test/dev sentences")
    s.set_defaults(func=cmd_subsets)

    s = sub.add_parser("task-artifact", help=cmd_task_artifact.__doc__)
    s.add_argument("--task", required=True)
    s.add_argument("--name", required=True, help="artifact file name the task declares")
    s.add_argument("--spec", required=True, help="the task's SubsetSpec as JSON")
    s.add_argument("--test", help="target artifact: the target's test manifest")
    s.add_argument("--dev", help="target artifact: the target's dev manifest")
    s.add_argument("--tables", nargs="+", help="task artifact: utterances.parquet of every language of the task")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_task_artifact)

    s = sub.add_parser("probe-set", help=cmd_probe_set.__doc__)
    s.add_argument("--spec", required=True, help="the task's SubsetSpec as JSON")
    s.add_argument("--tables", nargs="+", required=True, help="utterances.parquet of every language of the task")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_probe_set)
