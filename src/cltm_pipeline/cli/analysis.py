"""``cltm matrix``, ``analyse``, ``typology`` and ``learning-curve``: matrices and their analyses."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from cltm_pipeline.analysis.footprint import overlap_analysis, overlap_rows
from cltm_pipeline.analysis.properties import analyse
from cltm_pipeline.analysis.matrix import build_matrices, read_result, read_run_metrics, read_study_csv
from cltm_pipeline.data.languages import UNKNOWN_FAMILY, read_languages
from cltm_pipeline.data.subsets import SubsetSpec
from cltm_pipeline.errors import ConfigError
from cltm_pipeline.io import write_json, write_tsv
from cltm_pipeline.layout import run_metrics
from cltm_pipeline.analysis.learning_curve import draw_ladder, write_outputs
from cltm_pipeline.analysis.completion import MODELS as COMPLETION_MODELS
from cltm_pipeline.analysis.completion import complete, read_wide, write_cells
from cltm_pipeline.analysis.design import MODEL_RULES, RULES as DESIGN_RULES, next_batch, read_cells, read_trained, write_plan
from cltm_pipeline.analysis.typology import read_typology, typology_table

__all__ = ["register"]


def cmd_matrix(args: argparse.Namespace) -> None:
    """Assemble M, CLTM, SE, Fieller intervals, paired tests and self gain from run metrics (or a study CSV)."""
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
        paths = run_metrics(Path(args.runs_dir), args.languages, args.seeds)
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
    t0 = time.perf_counter()
    res = read_result(Path(args.matrix))
    sheet = {r["locale"]: r for r in read_languages(Path(args.languages_sheet)).iter_rows(named=True)}
    langs = list(res.languages)
    families = [sheet[t]["family"] if t in sheet else UNKNOWN_FAMILY for t in langs]
    paths = run_metrics(Path(args.runs_dir), langs, args.seeds) if args.runs_dir else []
    try:
        runs = read_run_metrics(paths, res.metric).iter_rows() if paths and res.metric else []
        records = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    typology: dict = {"source": None, "unknown_iso": [], "locales_without_iso": []}
    distances = {}
    if args.typology:
        table = json.loads(Path(args.typology).read_text(encoding="utf-8"))
        distances = read_typology(table, langs)
        iso = table["iso639_3"]
        typology = {"source": table["source"], "iso639_3": {t: iso.get(t) for t in langs},
                    "unknown_iso": sorted({iso[t] for t in langs if iso.get(t) in table["unknown_iso"]}),
                    "locales_without_iso": [t for t in langs if not iso.get(t)]}
    out = analyse(res, families, runs, records, distances, permutations=args.permutations, seed=args.seed)
    out["typology"] = typology
    if args.runs_dir:  # the single cells' fine-tuning footprints: sub-network overlap against C
        t1 = time.perf_counter()
        seeds = args.seeds or sorted({int(r["seed"]) for r in records})
        out["footprint"] = overlap_analysis(Path(args.runs_dir), langs, seeds, res.C, permutations=args.permutations,
                                            seed=args.seed)
        fp_s = time.perf_counter() - t1  # printed, not written: analysis.json stays byte-stable
    if args.overlap_out:
        rows = overlap_rows(out.get("footprint", {}))
        write_tsv(Path(args.overlap_out), pl.DataFrame(rows, schema={"language_a": pl.String, "language_b": pl.String,
                                                                    "jaccard": pl.Float64, "sd": pl.Float64, "seeds": pl.Int64}))
    write_json(Path(args.out), out)
    mean = out["properties"]["mean_offdiag_C"]
    mantel = ", ".join(f"{k} r={v['r']:.2f} p={v['p']:.3g} Holm p={v.get('p_holm', float('nan')):.3g} (n={v['n_languages']})" for k, v in out["mantel"].items())
    print(f"analyse {args.out}: mean off-diagonal C {mean['mean']:.3f} [{mean['ci_low']:.3f}, {mean['ci_high']:.3f}] "
          f"over {mean['n']} cells; {len(records)} runs; Mantel {mantel or 'skipped'} "
          f"({time.perf_counter() - t0:.1f} s)")
    fp = out.get("footprint")
    if fp and fp.get("available"):
        m, x = fp.get("mantel", {}), fp["cross_seed"]
        print(f"footprints: {fp['cells_with_footprint']} single cells; overlap vs symmetrised C Mantel r={m.get('r', float('nan')):.2f} "
              f"p={m.get('p', float('nan')):.3g}; across seeds same language {x['same_language']:.3f}, other languages "
              f"{x['other_language']:.3f} (chance {fp['chance']:.3f}) ({fp_s:.1f} s)")
    elif fp:
        print(f"footprints: none ({fp.get('reason')})")


def cmd_typology(args: argparse.Namespace) -> None:
    """URIEL+ distances (genetic, geographic, syntactic, phonological, inventory, featural) between locales."""
    t0 = time.perf_counter()
    sheet = {r["locale"]: r["iso639_3"] for r in read_languages(Path(args.languages_sheet)).iter_rows(named=True)}
    table = typology_table(args.locales, sheet)
    write_json(Path(args.out), table)
    print(f"typology {args.out}: {len(args.locales)} locales, unknown to URIEL+: "
          f"{', '.join(table['unknown_iso']) or 'none'}; without ISO code: {', '.join(table['locales_without_iso']) or 'none'} "
          f"({time.perf_counter() - t0:.1f} s)")


def cmd_learning_curve(args: argparse.Namespace) -> None:
    """Train single and self cells at a ladder of N on a few targets; write curve.tsv and recommendation.json."""
    from cltm_pipeline.training.learning_curve import run_ladder  # torch: only when the ladder trains

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


def cmd_complete(args: argparse.Namespace) -> None:
    """Predict a CLTM's unmeasured (NaN) dual cells with 90 % prediction intervals; write DIR/cells.tsv."""
    path, se, undefined = Path(args.matrix), None, None
    matrix_dir = path.is_dir()  # a workflow matrix directory: its cltm.tsv, and se.tsv for the cell weights
    languages, values = read_wide(path / "cltm.tsv" if matrix_dir else path, require_measured=not matrix_dir)
    if matrix_dir:  # cltm matrix leaves a target's diagonal NaN when its C is undefined (zero or no self gain)
        undefined = ~np.isfinite(np.diag(values))
        if args.weights == "se" and (path / "se.tsv").is_file():
            se = read_wide(path / "se.tsv", require_measured=False)[1]
    covariates = None
    if args.typology:  # cltm typology's table: its URIEL+ distances compete as covariates
        try:
            table = json.loads(Path(args.typology).read_text(encoding="utf-8"))
            dist = read_typology(table, languages)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--typology {args.typology}: not a cltm typology table ({exc})") from None
        covariates = np.stack(list(dist.values()), axis=-1)
    try:
        res = complete(languages, values, model=args.model, level=args.level, folds=args.folds, seed=args.seed,
                       se=se, covariates=covariates, undefined=undefined)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    out = write_cells(res, Path(args.out))
    off = ~np.eye(len(languages), dtype=bool)
    predicted = int((~res.measured & off & np.isfinite(res.C)).sum())
    bad = res.summary()["undefined_targets"]
    if bad:
        print(f"cltm complete: warning: C undefined for target(s) {', '.join(bad)} (zero or no self gain): their "
              "cells are neither fitted nor predicted (NaN in cells.tsv)", file=sys.stderr)
    print(f"complete {out}: {predicted} of {int(off.sum())} dual cells predicted by {res.model} "
          f"(cross-validated {args.level:.0%} interval half-width {res.half_width:.3f})")


def cmd_plan(args: argparse.Namespace) -> None:
    """Choose the next batch of dual cells to measure from the cells measured so far; write NEXT.tsv."""
    languages, C, se = read_cells(Path(args.cells), args.languages)
    obs = np.isfinite(C)
    trained = read_trained(Path(args.cells), languages)  # a workflow matrix's cells: trained, C defined or not
    total = len(languages) * (len(languages) - 1)
    res = None
    if obs.any() and (args.rule in MODEL_RULES or args.width is not None):
        res = complete(languages, np.where(np.eye(len(languages), dtype=bool), 1.0, C), seed=args.seed)
    width = math.nan
    if res is not None:
        predicted = ~res.measured & np.isfinite(res.C)
        width = float((res.hi - res.lo)[predicted].mean()) if predicted.any() else 0.0
    if args.width is not None and width <= args.width:  # NaN (nothing to complete from) never stops
        write_plan(Path(args.out), languages, np.zeros((0, 2), dtype=int), None, args.rule)
        print(f"plan {args.out}: no cell: the predicted cells' mean {res.level:.0%} interval width {width:.3f} is "
              f"at most --width {args.width}; {int((obs | trained).sum())} of {total} trained")
        return
    model = "lowrank1" if res is None else res.model
    cells, score = next_batch(C, obs, args.budget, rule=args.rule, model=model, seed=args.seed, noise=se,
                              trained=trained)
    write_plan(Path(args.out), languages, cells, score, args.rule if score is not None else "initial")
    print(f"plan {args.out}: {len(cells)} dual cells to measure next ({args.rule if score is not None else 'initial design'}); "
          f"{int((obs | trained).sum())} of {total} trained so far, {int(obs.sum())} with C defined"
          + (f"; mean interval width {width:.3f}" if math.isfinite(width) else ""))


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``cltm`` subparsers."""
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
    s.add_argument("--overlap-out", help="TSV of the footprints' pairwise Jaccard overlap (mean, sd over seeds)")
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

    s = sub.add_parser("complete", help=cmd_complete.__doc__)
    s.add_argument("--matrix", required=True, help="wide CLTM TSV (target, then donors; NaN = not measured) or a matrix directory")
    s.add_argument("--out", required=True, help="directory for cells.tsv (target donor C lo hi measured)")
    s.add_argument("--model", default="auto", choices=COMPLETION_MODELS, help="(default: %(default)s, chosen by cross-validation)")
    s.add_argument("--level", type=float, default=0.9, help="prediction-interval level (default: %(default)s)")
    s.add_argument("--folds", type=int, default=10, help="cross-validation folds for the intervals (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--typology", help="cltm typology's JSON: its URIEL+ distances compete as covariates (chosen by CV)")
    s.add_argument("--weights", default="se", choices=("none", "se"),
                   help="weigh measured cells by 1/SE^2 (a matrix directory's se.tsv; default: %(default)s, see README)")
    s.set_defaults(func=cmd_complete)

    s = sub.add_parser("plan", help=cmd_plan.__doc__)
    s.add_argument("--cells", required=True, help="long cells TSV (target donor C, optional measured, se): the workflow's or cltm complete's")
    s.add_argument("--budget", type=int, required=True, help="dual cells to pick")
    s.add_argument("--out", required=True, help="TSV to write (target donor rank rule score)")
    s.add_argument("--languages", nargs="+", help="the full grid's languages (default: those named in --cells)")
    s.add_argument("--rule", default="balance", choices=DESIGN_RULES, help="acquisition rule (default: %(default)s)")
    s.add_argument("--width", type=float, help="plan nothing once the predicted cells' mean 90 %% interval width is at most this")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_plan)
