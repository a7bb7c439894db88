# Config validation (before any job is submitted), wildcard constraints and input functions.
import json
import os
import re
import shlex
import sys
from functools import cache
from pathlib import Path

# Jobs call the `cltm` of the environment running Snakemake (the README's .venv), activated or not.
# CLTM_PARENT_PID: a `cltm` job exits when this Snakemake process is gone (kill -9 leaves no orphan
# worker training on; cltm_pipeline.cli).
shell.prefix(f'export PATH="{Path(sys.executable).parent}:$PATH" CLTM_PARENT_PID={os.getpid()}; ')

from cltm_pipeline import layout
from cltm_pipeline.analysis.design import plan_by_target
from cltm_pipeline.config import config_hash, load_config, read_yaml
from cltm_pipeline.errors import ConfigError, CorpusError, SubsetError
from cltm_pipeline.protocol import SINGLE
from cltm_pipeline.tasks import TASKS as TASK_REGISTRY, artifact_names
from cltm_pipeline.training.hparams import result_hparams
from cltm_pipeline.workflow import check_release_capacity, pool_sizes, seed_groups, stale_flags

try:
    for _configfile in workflow.configfiles:  # Snakemake's own YAML loading keeps a duplicated key silently
        read_yaml(Path(_configfile))
    CFG = load_config(config, source="config", root=Path(workflow.basedir))
    check_release_capacity(CFG)
except (ConfigError, SubsetError, CorpusError) as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None

# A worker flag vouches for its cells' metrics.json as written. One whose files were lost or damaged since
# is removed here, before the DAG is built, with the matrix built from it (Snakemake would not rebuild a
# missing flag while the matrix exists), so this plain run retrains exactly those cells and the matrix.
if workflow.is_main_process:
    _absent = {}
    for _task, _arch, _flag, _why in stale_flags(CFG):
        if _flag.exists():
            logger.warning(f"{_flag}: {_why}; the cell is retrained and the {_task}/{_arch} matrix rebuilt")
            _flag.unlink()
        else:
            _absent[(_task, _arch)] = _absent.get((_task, _arch), 0) + 1
        for _name in ("cltm.tsv", "cells.tsv", "summary.json"):  # the matrix rule's outputs (cltm.smk)
            Path(layout.path(CFG.raw["results"], "matrices", task=_task, arch=_arch), _name).unlink(missing_ok=True)
    for (_task, _arch), _n in _absent.items():
        logger.warning(f"{_task}/{_arch}: {_n} worker flag(s) missing while the matrix exists (new seeds or "
                       "languages, or flags deleted): the matrix is rebuilt after them")

if "demo" not in CFG.raw and not Path(CFG.raw["release"]).is_dir():
    logger.warning(
        f"release {CFG.raw['release']} not found: fine for a dry-run; ingestion needs a local Common Voice release"
    )

def _grid_summary():
    """One line for the log: cells per matrix and the worker jobs that train them."""
    parts, cells, jobs = [], 0, 0
    for task, t in CFG.raw["tasks"].items():
        L, S = len(t["languages"]), len(CFG.seeds(task))
        for arch in t["architectures"]:
            parts.append(f"{task}/{arch} {L * (L + 1) * S:,}")
            cells, jobs = cells + L * (L + 1) * S, jobs + L * S
    return f"grid: {cells:,} training cells ({', '.join(parts)}) in {jobs:,} worker jobs"


logger.info(_grid_summary())

# Clips per binary gender of each locale's ingested training pool (the hash-ranked sample that is decoded).
POOL_CLIPS = pool_sizes(CFG)
logger.info("ingest pools (clips per binary gender, sized from the grid): " + ", ".join(f"{k} {v:,}" for k, v in POOL_CLIPS.items()))

RESULTS = CFG.raw["results"]


def P(which, /, **fields):
    """A results path from the one layout (cltm_pipeline.layout); unfilled fields stay wildcards."""
    return layout.path(RESULTS, which, **fields)

# relative to the working directory, else to this workflow's directory (config.resolve_path), as validated
SHEET = str(CFG.sheet)
RELEASE = CFG.raw["release"]
LOCALES = CFG.locales
TASKS = CFG.tasks
# The optional learning curve (validated with the rest of the config above) and its recommendation, an
# input of the report.
LC = CFG.raw.get("learning_curve")
LC_OUTPUTS = [] if LC is None else [P("learning_curve.recommendation", task=LC["task"], arch=LC["arch"])]


# The functions below decorated with @cache are pure functions of the validated config: Snakemake calls
# them once per job and parameter, several times while planning, and the paper grid has thousands of jobs.


wildcard_constraints:
    locale=r"[a-z]{2,3}(-[A-Za-z0-9]+)*",
    target=r"[a-z]{2,3}(-[A-Za-z0-9]+)*",
    task=r"[a-z][a-z0-9_]*",
    seed=r"\d+",
    arch=r"[A-Za-z0-9_]+",
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    round=r"\d+",


@cache
def subset_spec_json(task, with_languages=True):
    """The task's subset spec as JSON, without what a job does not depend on (the seed list is a wildcard;
    evaluation sets ignore the donors), so adding seeds or languages reruns no finished subset job."""
    spec = CFG.subset_spec(task)
    drop = {"seeds": ()} if with_languages else {"seeds": (), "languages": ()}
    return type(spec)(**{**spec.__dict__, **drop}).to_json()


def ingest_table(locale):
    return P("ingest.table", locale=locale)


#: What ingestion reads of a locale besides its clips (split files and durations are optional in a release).
RELEASE_FILES = ("validated.tsv", "train.tsv", "dev.tsv", "test.tsv", "clip_durations.tsv")


def release_files(wildcards):
    """What the locale's ingestion reads, so an edit to any of it reruns ingestion: the TSVs present and the
    clips directory (a clip added, removed or replaced changes its mtime; a clip edited in place does not).
    The demo's files are all outputs of demo_corpus; a real release's may be absent only in a dry-run."""
    d = f"{RELEASE}/{wildcards.locale}"
    if "demo" in CFG.raw:
        return [f"{d}/{name}" for name in RELEASE_FILES]
    return [p for p in (*(f"{d}/{name}" for name in RELEASE_FILES), f"{d}/clips") if Path(p).exists()]


def subset_tables(wildcards):
    """Utterance tables of the target and every donor of the task."""
    return [ingest_table(loc) for loc in CFG.raw["tasks"][wildcards.task]["languages"]]


def arch_block(task, arch):
    return CFG.raw["tasks"][task]["architectures"][arch]


def arch_resources(task, arch):
    return arch_block(task, arch)["resources"]


#: The languages sheet by locale (looked up once per train job while planning: a filter each time costs seconds).
SHEET_ROWS = {r["locale"]: r for r in CFG.languages.iter_rows(named=True)}


def target_hparams(task, arch, target=None):
    """The architecture's hparams; a null one named like a languages-sheet column (e.g. ``asr_unit``)
    takes the target's value from the sheet."""
    hp = dict(arch_block(task, arch)["hparams"])
    if target is not None:
        row = SHEET_ROWS[target]
        hp.update({k: row[k] for k, v in hp.items() if v is None and k in row and k != "locale"})
    return hp


@cache
def arch_hparams_json(task, arch, target=None):
    return json.dumps(target_hparams(task, arch, target), sort_keys=True, separators=(",", ":"))


@cache
def cell_config_hash(task, arch, target=None):
    """Hash of what a cell's result depends on (regime, splits, model, hparams), not of the whole grid:
    adding languages or seeds does not change it."""
    t = CFG.raw["tasks"][task]
    model = CFG.raw["models"][arch_block(task, arch)["model"]]
    relevant = {k: v for k, v in t.items() if k not in ("languages", "seeds", "architectures")}
    # checkpointing, footprints and resources change how a cell runs, not what it computes
    hparams = result_hparams(target_hparams(task, arch, target))
    return config_hash({"task": relevant, "splits": CFG.raw["splits"], "model": model, "hparams": hparams})


def model_flag(wildcards):
    return f"resources/models/{arch_block(wildcards.task, wildcards.arch)['model']}/cltm_model.json"


def tiny_arg(model):
    tiny = CFG.raw["models"][model].get("tiny")
    return "" if tiny is None else f"--tiny {shlex.quote(json.dumps(tiny, sort_keys=True))}"


@cache
def cell_donors(task, target):
    """Donor components of a target's cells (Config.donors: every language, or the adaptive design's)."""
    return tuple(CFG.donors(task, target))


def job_donors(w):
    """The donors a train job trains: its target's (cell_donors), or those its design round planned."""
    r = w.get("round")
    return cell_donors(w.task, w.target) if r is None else tuple(round_cells(w.task, w.arch, int(r))[w.target])


def base_runs(task, arch):
    """The worker flags of every (target, seed group) of one matrix (the initial design's under adaptive)."""
    return [
        P("runs.flag", task=task, arch=arch, target=t, seeds=g)
        for g in seed_groups(CFG, task, arch)
        for t in CFG.raw["tasks"][task]["languages"]
    ]


def matrix_runs(wildcards):
    """The worker flags of one matrix: every (target, seed group), and every adaptive round's."""
    flags = base_runs(wildcards.task, wildcards.arch)
    return flags + design_flags(wildcards.task, wildcards.arch, ROUNDS) if ROUNDS else flags


#: design: {mode: adaptive, rounds: k}: rounds of cltm plan + training after the initial design (0: none).
ROUNDS = CFG.design["rounds"] if CFG.design["mode"] == "adaptive" else 0


def round_cells(task, arch, r):
    """Round ``r``'s planned cells of one matrix, target -> donors in config order; asking for them makes
    Snakemake run the round's checkpoint (plan) first; read each time, as a rerun plan may rewrite them."""
    return plan_by_target(checkpoints.plan.get(task=task, arch=arch, round=r).output[0], CFG.raw["tasks"][task]["languages"])


def design_flags(task, arch, upto):
    """The worker flags of rounds 1..``upto`` of one matrix, up to the first round that planned nothing
    (the budget or the target width reached: later rounds are not run)."""
    flags = []
    for r in range(1, upto + 1):
        cells = round_cells(task, arch, r)
        if not cells:
            break
        flags += [P("runs.round_flag", task=task, arch=arch, target=t, round=r, seeds=g)
                  for g in seed_groups(CFG, task, arch) for t in cells]
    return flags


def round_runs(wildcards):
    """The worker flags of the matrix after round ``wildcards.round``: the initial design's and rounds 1..r."""
    return base_runs(wildcards.task, wildcards.arch) + design_flags(wildcards.task, wildcards.arch, int(wildcards.round))


def plan_options():
    """cltm plan's options from the design block: rule, seed and the optional target width."""
    d = CFG.design
    return f"--rule {d['rule']} --seed {d['seed']}" + ("" if d["width"] is None else f" --width {d['width']}")


def matrices():
    return [(task, arch) for task in TASKS for arch in CFG.raw["tasks"][task]["architectures"]]


def completion_outputs():
    """Under ``design: {mode: adaptive}``: every matrix's completion (cltm complete); none otherwise."""
    if CFG.raw.get("design", {"mode": "full"})["mode"] == "full":
        return []
    return [P("completion.cells", task=task, arch=arch) for task, arch in matrices()]


def all_outputs():
    """The default target: every matrix (and so every run), and the report."""
    return [*(P("matrices.cltm", task=task, arch=arch) for task, arch in matrices()), P("report")]


def artifact_pattern(kind):
    """Wildcard constraint matching exactly the registered artifact names of ``kind`` (target or task)."""
    names = artifact_names(kind)
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


@cache
def cell_artifacts(task, target):
    """NAME -> path of every artifact a task declares, as the cells of ``target`` receive them."""
    spec = TASK_REGISTRY[task]
    out = {n: P("subsets.target_artifact", task=task, target=target, artifact=n) for n in spec.target_artifacts}
    out.update({n: P("subsets.task_artifact", task=task, artifact=n) for n in spec.task_artifacts})
    return out


@cache
def embedding_artifacts(task, arch):
    """NAME -> cache manifest of every language of the task, for an architecture with a frozen encoder
    whose embeddings are cached (rule embed); empty for any other architecture."""
    from cltm_pipeline.models import get_architecture

    if not get_architecture(arch).embedding_cache:
        return {}
    return {f"emb:{loc}": P("embeddings", task=task, arch=arch, locale=loc) for loc in CFG.raw["tasks"][task]["languages"]}


def seed_tables(wildcards):
    """Every seed table of a task (every target and seed)."""
    task = wildcards.task
    return [P("subsets.seed_table", task=task, target=t, seed=s) for t in CFG.raw["tasks"][task]["languages"] for s in CFG.seeds(task)]


def embed_manifests(wildcards):
    """What the embed job of a locale reads: the locale's evaluation sets and every seed table of the task
    (each holds the locale's rows it trains on, as target or donor)."""
    evals = [P(f"subsets.{name}", task=wildcards.task, target=wildcards.locale) for name in ("test", "dev")]
    return evals + seed_tables(wildcards)


def train_args(w, input):
    """The train-cells arguments that depend on the job's wildcards beyond its inputs (rule train)."""
    artifacts = {**cell_artifacts(w.task, w.target), **embedding_artifacts(w.task, w.arch)}
    args = [
        "--ingest-root", P("ingest"), "--donors", *job_donors(w), "--seeds", *w.seeds.split("+"),
        "--hparams", arch_hparams_json(w.task, w.arch, w.target), "--config-hash", cell_config_hash(w.task, w.arch, w.target),
        "--runs-dir", P("runs", task=w.task, arch=w.arch),
        *(a for n, p in artifacts.items() for a in ("--artifact", f"{n}={p}")),
        *(("--probe", str(input.probe)) if input.probe else ()),
    ]
    return shlex.join(args)


def probe_input(task, arch):
    """The task's probe set if the architecture's hparams ask for probes, else nothing to build."""
    return [P("subsets.probe", task=task)] if arch_block(task, arch)["hparams"]["probe_clips"] else []
