"""The ``cltm`` command: one subcommand per workflow stage, each a thin call into the library."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

from .commonvoice import CorpusError
from .config import ConfigError, load_config
from .io import read_manifest, write_tsv
from .subsets import SubsetError

__all__ = ["main"]

#: Errors the user can fix from the message alone: printed as one line, no traceback.
USER_ERRORS = (ConfigError, CorpusError, SubsetError)


def cmd_validate_config(args: argparse.Namespace) -> None:
    """Validate the config and, where the release exists, that every locale holds what the regimes ask."""
    from .workflow import check_release_capacity

    cfg = load_config(Path(args.config))
    checked = check_release_capacity(cfg)
    print(f"{cfg.source}: valid ({len(cfg.tasks)} task(s), {len(cfg.locales)} locale(s); capacity checked for {checked})")


def cmd_demo_corpus(args: argparse.Namespace) -> None:
    """Write the deterministic demo corpus in Common Voice layout."""
    from .demo import DEMO_VOICES, build_demo_corpus

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
    from .commonvoice import locale_dir
    from .ingest import ingest_locale

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


def _tables(paths: list[str]) -> dict[str, pl.DataFrame]:
    tables = {}
    for p in paths:
        df = pl.read_parquet(p)
        tables[df["locale"][0]] = df
    return tables


def cmd_eval_sets(args: argparse.Namespace) -> None:
    """Write a target's fixed test and dev sets for one task."""
    from .subsets import SubsetSpec, eval_sets

    spec = SubsetSpec.from_json(args.spec)
    test, dev = eval_sets(spec, args.target, pl.read_parquet(args.table))
    write_tsv(Path(args.test), test)
    write_tsv(Path(args.dev), dev)
    print(f"{spec.task}/{args.target}: test {test.height} clips / {test['client_id'].n_unique()} speakers, "
          f"dev {dev.height} clips / {dev['client_id'].n_unique()} speakers")


def cmd_subsets(args: argparse.Namespace) -> None:
    """Draw one target's training units for one seed, check the protocol invariants, write the seed table."""
    from .io import write_json
    from .subsets import SubsetSpec, check_capacity, check_invariants, draw_seed, sentence_drops

    spec = SubsetSpec.from_json(args.spec)
    tables = _tables(args.tables)
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
    from .io import write_bytes
    from .subsets import SubsetSpec
    from .tasks import get_task

    spec = SubsetSpec.from_json(args.spec)
    task = get_task(args.task)
    if args.tables:
        build = task.task_artifacts.get(args.name)
        data = build(spec, _tables(args.tables)) if build else None
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
    from .probe import build_probe_set
    from .subsets import SubsetSpec

    spec = SubsetSpec.from_json(args.spec)
    probe = build_probe_set(spec, _tables(args.tables))
    write_tsv(Path(args.out), probe)
    print(f"{spec.task}: probe set of {probe.height} clips over {probe['locale'].n_unique()} languages")


def _run_paths(root: Path, languages: list[str] | None, seeds: list[int] | None) -> list[Path]:
    """metrics.json files under a runs/<task>/<arch> directory, restricted to languages and seeds if given."""
    langs, keep = set(languages or []), set(seeds or [])
    return [
        p for p in sorted(root.glob("*/*/seed*/metrics.json"))
        if (not langs or (p.parts[-4] in langs and p.parts[-3] in langs | {"-"}))
        and (not keep or int(p.parts[-2].removeprefix("seed")) in keep)
    ]


def cmd_matrix(args: argparse.Namespace) -> None:
    """Assemble M, CLTM, SE, Fieller intervals, paired tests and self gain from run metrics (or a study CSV)."""
    from .analysis.matrix import build_matrices, read_run_metrics, read_study_csv

    if args.study_csv:
        try:  # the reader's errors name file, row and problem in one line: show them as such
            runs, metric = read_study_csv(Path(args.study_csv), metric=args.metric, target_column=args.target_column)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    else:
        if not args.runs_dir or not args.metric:
            raise ConfigError("cltm matrix: give --runs-dir and --metric, or --study-csv")
        if not Path(args.runs_dir).is_dir():
            raise ConfigError(f"--runs-dir {args.runs_dir}: no such directory")
        paths = _run_paths(Path(args.runs_dir), args.languages, args.seeds)
        if not paths:
            raise ConfigError(f"--runs-dir {args.runs_dir}: no metrics.json under it"
                              f"{' for the languages and seeds asked' if args.languages or args.seeds else ''}")
        try:
            runs, metric = read_run_metrics(paths, args.metric), args.metric
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    res = build_matrices(runs, languages=args.languages, policy=args.policy, test=args.test, ci=args.ci,
                         seed=args.seed, metric=metric, seeds=args.seeds)
    res.write(Path(args.out))
    summ = res.summary()
    print(f"matrix {args.out}: {summ['cells_finite']}/{summ['cells_all']} finite cells, {summ['cells_missing']} "
          f"cells missing a run, ill-conditioned targets: {', '.join(summ['ill_conditioned_targets']) or 'none'}")


def cmd_analyse(args: argparse.Namespace) -> None:
    """Matrix properties, transfer-profile map and clusters, Mantel tests against URIEL+, significance counts,
    latent probes and training-time transfer of one matrix; writes analysis.json."""
    import json

    from .analysis.matrix import read_result, read_run_metrics
    from .analysis.properties import analyse
    from .config import read_languages
    from .io import write_json

    t0 = time.perf_counter()
    res = read_result(Path(args.matrix))
    sheet = {r["locale"]: r for r in read_languages(Path(args.languages_sheet)).iter_rows(named=True)}
    langs = list(res.languages)
    families = [sheet[t]["family"] if t in sheet else "Unknown family" for t in langs]
    paths = _run_paths(Path(args.runs_dir), langs, args.seeds) if args.runs_dir else []
    try:
        runs = read_run_metrics(paths, res.metric).iter_rows() if paths and res.metric else []
        records = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    typology: dict = {"source": None, "unknown_iso": [], "locales_without_iso": []}
    distances = {}
    if args.typology:
        from .analysis.typology import read_typology

        table = json.loads(Path(args.typology).read_text(encoding="utf-8"))
        distances = read_typology(table, langs)
        iso = table["iso639_3"]
        typology = {"source": table["source"], "iso639_3": {t: iso.get(t) for t in langs},
                    "unknown_iso": sorted({iso[t] for t in langs if iso.get(t) in table["unknown_iso"]}),
                    "locales_without_iso": [t for t in langs if not iso.get(t)]}
    out = analyse(res, families, runs, records, distances, permutations=args.permutations, seed=args.seed)
    out["typology"] = typology
    write_json(Path(args.out), out)
    mean = out["properties"]["mean_offdiag_C"]
    mantel = ", ".join(f"{k} r={v['r']:.2f} p={v['p']:.3g} Holm p={v.get('p_holm', float('nan')):.3g} (n={v['n_languages']})" for k, v in out["mantel"].items())
    print(f"analyse {args.out}: mean off-diagonal C {mean['mean']:.3f} [{mean['ci_low']:.3f}, {mean['ci_high']:.3f}] "
          f"over {mean['n']} cells; {len(records)} runs; Mantel {mantel or 'skipped'} "
          f"({time.perf_counter() - t0:.1f} s)")


def cmd_typology(args: argparse.Namespace) -> None:
    """URIEL+ distances (genetic, geographic, syntactic, phonological, inventory, featural) between locales."""
    from .config import read_languages
    from .io import write_json
    from .analysis.typology import typology_table

    t0 = time.perf_counter()
    sheet = {r["locale"]: r["iso639_3"] for r in read_languages(Path(args.languages_sheet)).iter_rows(named=True)}
    table = typology_table(args.locales, sheet)
    write_json(Path(args.out), table)
    print(f"typology {args.out}: {len(args.locales)} locales, unknown to URIEL+: "
          f"{', '.join(table['unknown_iso']) or 'none'}; without ISO code: {', '.join(table['locales_without_iso']) or 'none'} "
          f"({time.perf_counter() - t0:.1f} s)")


def cmd_learning_curve(args: argparse.Namespace) -> None:
    """Train single and self cells at a ladder of N on a few targets; write curve.tsv and recommendation.json."""
    import json

    from .analysis.learning_curve import draw_ladder, write_outputs
    from .learning_curve import run_ladder
    from .subsets import SubsetSpec

    t0 = time.perf_counter()
    spec = SubsetSpec.from_json(args.spec)
    out = Path(args.out)
    tables = {t: pl.read_parquet(Path(args.ingest_root) / t / "utterances.parquet") for t in args.languages}
    draw_ladder(spec, tables, args.languages, args.ladder, args.seeds, out)
    curve = run_ladder(args.task, args.arch, Path(args.model_dir), Path(args.ingest_root), args.languages, args.ladder,
                       args.seeds, json.loads(args.hparams), out, args.metric, jobs=args.jobs)
    meta = {"task": args.task, "arch": args.arch, "metric": args.metric, "languages": args.languages,
            "ladder": args.ladder, "seeds": args.seeds, "unit": spec.unit}
    rec = write_outputs(curve, out, meta, z=args.z)
    print(f"learning curve {out}: {curve.height} runs, recommended N = {rec['recommended_n']} "
          f"({time.perf_counter() - t0:.0f} s)")


def cmd_report(args: argparse.Namespace) -> None:
    """Render the HTML report (and one page per heatmap for `snakemake --report`) from written matrices."""
    import json

    from .analysis.matrix import read_result
    from .config import read_languages
    from .report import MatrixEntry, figures, render_report, write_figure_html
    from .workflow import inventory

    cfg = load_config(json.loads(args.config_json), source="config", root=Path.cwd())
    entries = []
    for mdir in args.matrices:
        task, arch = Path(mdir).parts[-2:]
        res = read_result(Path(mdir))
        analysis = Path(mdir) / "analysis.json"  # cltm analyse writes it next to the matrix
        entries.append(MatrixEntry(task=task, arch=arch, metric=res.metric, result=res,
                                   analysis=json.loads(analysis.read_text(encoding="utf-8")) if analysis.is_file() else None))
    curves = [
        {"curve": pl.read_csv(Path(d) / "curve.tsv", separator="\t"),
         "rec": json.loads((Path(d) / "recommendation.json").read_text(encoding="utf-8"))}
        for d in args.learning_curves or []
    ]
    languages = read_languages(Path(args.languages_sheet))
    inv = inventory(cfg)
    out = Path(args.out)
    render_report(entries, languages, inv, cfg.raw, out, learning_curves=curves)
    if args.figures:
        for e in entries:
            for kind, fig in figures(e, languages).items():
                write_figure_html(fig, Path(args.figures) / f"{e.task}_{e.arch}_{kind}.html")
    done = int((inv["status"] == "done").sum())
    print(f"report {out}: {len(entries)} matrix(es), {done}/{inv.height} runs done")


def cmd_status(args: argparse.Namespace) -> None:
    """Cells done / missing / failed per task and architecture, from the files on disk."""
    from .workflow import inventory

    cfg = load_config(Path(args.config))
    t0 = time.perf_counter()
    inv = inventory(cfg)
    table = (
        inv.group_by("task", "arch", "status").len()
        .pivot(on="status", index=["task", "arch"], values="len")
        .fill_null(0)
    )
    for col in ("done", "missing", "failed"):
        if col not in table.columns:
            table = table.with_columns(pl.lit(0, dtype=pl.UInt32).alias(col))
    print(f"{'task':<10} {'arch':<12} {'done':>8} {'missing':>8} {'failed':>8} {'total':>8}")
    for r in table.sort("task", "arch").iter_rows(named=True):
        total = r["done"] + r["missing"] + r["failed"]
        print(f"{r['task']:<10} {r['arch']:<12} {r['done']:>8} {r['missing']:>8} {r['failed']:>8} {total:>8}")
    failed = inv.filter(pl.col("status") == "failed")
    for r in failed.head(args.show).iter_rows(named=True):
        print(f"failed {r['task']}/{r['arch']}/{r['target']}/{r['donor']}/seed{r['seed']}: "
              f"{Path(r['path']).with_name('failed.json')} (job log {r['log']})")
    if failed.height > args.show:
        print(f"... and {failed.height - args.show} more failed cells")
    print(f"({inv.height:,} cells checked in {time.perf_counter() - t0:.2f} s)")


def cmd_ready(args: argparse.Namespace) -> None:
    """Record that every input of a stage aggregate exists (the workflow's per-task "inputs ready" flag)."""
    from .io import write_json

    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} input(s) of {args.out} missing, e.g. {missing[0]}")
    write_json(Path(args.out), {"inputs": sorted(args.inputs)})
    print(f"ready: {len(args.inputs)} input(s) -> {args.out}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cltm``."""
    p = argparse.ArgumentParser(prog="cltm", description="Cross-Lingual Transfer Matrix pipeline stages.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate-config", help=cmd_validate_config.__doc__)
    s.add_argument("config", nargs="?", default="config/config.yaml", help="workflow config (default: %(default)s)")
    s.set_defaults(func=cmd_validate_config)

    s = sub.add_parser("status", help=cmd_status.__doc__)
    s.add_argument("config", nargs="?", default="config/config.yaml", help="workflow config (default: %(default)s)")
    s.add_argument("--show", type=int, default=20, help="failed cells to list (default: %(default)s)")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("ready", help=cmd_ready.__doc__)
    s.add_argument("--inputs", nargs="+", required=True, help="files the aggregate stands for")
    s.add_argument("--out", required=True, help="the flag (JSON listing the inputs)")
    s.set_defaults(func=cmd_ready)

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

    s = sub.add_parser("matrix", help=cmd_matrix.__doc__)
    s.add_argument("--runs-dir", help="results/runs/<task>/<arch> holding <target>/<donor>/seed<s>/metrics.json")
    s.add_argument("--study-csv", help="instead: the reference study's per-seed CSV (model_id,type,lang_src,lang_tgt,seed,<metric>)")
    s.add_argument("--target-column", default="lang_src", choices=("lang_src", "lang_tgt"),
                   help="study CSV column naming the target (the study's code: lang_src)")
    s.add_argument("--metric", help="metric key in metrics.json (e.g. macro_f1); eer/wer/cer become 1 - x")
    s.add_argument("--languages", nargs="+", help="matrix order (default: sorted targets)")
    s.add_argument("--seeds", nargs="+", type=int, help="seeds to use (default: all found)")
    s.add_argument("--policy", default="mean", help="aggregation over seeds (default: %(default)s)")
    s.add_argument("--test", default="t", choices=("t", "signflip"),
                   help="per-cell test of C = 0 and C = 1 on paired seed differences (default: %(default)s)")
    s.add_argument("--ci", type=float, default=0.95, help="level of the Fieller intervals (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="Monte Carlo sign flips above 16 seeds (default: %(default)s)")
    s.add_argument("--out", required=True, help="output directory")
    s.set_defaults(func=cmd_matrix)

    s = sub.add_parser("analyse", help=cmd_analyse.__doc__)
    s.add_argument("--matrix", required=True, help="matrix directory <...>/<task>/<arch> written by cltm matrix")
    s.add_argument("--runs-dir", help="results/runs/<task>/<arch> (probes, dev curves, whole-matrix interval)")
    s.add_argument("--seeds", nargs="+", type=int, help="seeds to use (default: all found)")
    s.add_argument("--languages-sheet", required=True)
    s.add_argument("--permutations", type=int, default=9999, help="Mantel permutations (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--typology", help="URIEL+ distances written by cltm typology (default: no Mantel tests)")
    s.add_argument("--out", required=True, help="analysis.json to write")
    s.set_defaults(func=cmd_analyse)

    s = sub.add_parser("typology", help=cmd_typology.__doc__)
    s.add_argument("--languages-sheet", required=True, help="TSV with locale and iso639_3")
    s.add_argument("--locales", nargs="+", required=True)
    s.add_argument("--out", required=True, help="JSON to write")
    s.set_defaults(func=cmd_typology)

    s = sub.add_parser("learning-curve", help=cmd_learning_curve.__doc__)
    s.add_argument("--task", required=True)
    s.add_argument("--arch", required=True)
    s.add_argument("--spec", required=True, help="the task's SubsetSpec as JSON (its n is replaced by the ladder)")
    s.add_argument("--model-dir", required=True)
    s.add_argument("--ingest-root", required=True)
    s.add_argument("--languages", nargs="+", required=True, help="targets to train")
    s.add_argument("--ladder", nargs="+", type=float, required=True, help="values of N (units per cell part)")
    s.add_argument("--seeds", nargs="+", type=int, required=True)
    s.add_argument("--hparams", required=True, help="training hyper-parameters as JSON")
    s.add_argument("--metric", required=True, help="metric key in metrics.json")
    s.add_argument("--jobs", type=int, default=1, help="cells trained side by side, one thread each")
    s.add_argument("--z", type=float, default=2.0, help="clearly positive: gain - z SE > 0 (default: %(default)s)")
    s.add_argument("--out", required=True, help="output directory (curve.tsv, recommendation.json, runs/)")
    s.set_defaults(func=cmd_learning_curve)

    s = sub.add_parser("report", help=cmd_report.__doc__)
    s.add_argument("--config-json", required=True, help="the effective workflow config as JSON")
    s.add_argument("--languages-sheet", required=True)
    s.add_argument("--matrices", nargs="+", required=True, help="matrix directories <...>/<task>/<arch>")
    s.add_argument("--out", required=True, help="index.html to write")
    s.add_argument("--figures", help="also write one self-contained page per heatmap into this directory")
    s.add_argument("--learning-curves", nargs="*", help="cltm learning-curve output directories to show")
    s.set_defaults(func=cmd_report)

    from .batch import add_train_cells_parser
    from .train import add_prepare_parser, add_train_parser

    add_prepare_parser(sub)
    add_train_parser(sub)
    add_train_cells_parser(sub)
    from .embeddings import add_embed_parser

    add_embed_parser(sub)
    return p


def watch_parent(env: str = "CLTM_PARENT_PID", every_s: float = 1.0) -> int | None:
    """If ``$CLTM_PARENT_PID`` names a live process (the Snakemake that started this job), exit as soon as
    it is gone: a `kill -9` of Snakemake would otherwise leave its jobs training on as orphans. Every
    output is written atomically, so exiting mid-write leaves nothing that looks done. Returns the pid."""
    import os
    import threading

    try:
        pid = int(os.environ.get(env, ""))
    except ValueError:
        return None
    if pid <= 1 or pid == os.getpid():
        return None

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def watch() -> None:
        import time as _time

        while alive():
            _time.sleep(every_s)
        print(f"cltm: parent process {pid} ({env}) is gone; exiting (rerun the workflow to resume)", file=sys.stderr, flush=True)
        os._exit(143)

    if not alive():  # gone already (killed while this process was starting): do not start work as an orphan
        watch()
    threading.Thread(target=watch, name="cltm-parent-watch", daemon=True).start()
    return pid


def _one_line(exc: BaseException) -> str:
    """An OS error (disk full, permission, missing file) in one line, naming the file."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one subcommand; user errors (and OS errors such as a full disk) print one line, exit 2."""
    args = build_parser().parse_args(argv)
    watch_parent()
    try:
        args.func(args)
    except USER_ERRORS as exc:
        print(f"cltm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cltm {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a ModelError says what and how to fix; models (torch) loaded only if used
        models = sys.modules.get("cltm_pipeline.models")
        if models is None or not isinstance(exc, models.ModelError):
            raise
        print(f"cltm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
