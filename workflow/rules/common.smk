# Config validation (before any job is submitted), wildcard constraints and input functions.
import sys
from pathlib import Path

# Jobs call the `cltm` of the environment running Snakemake (the README's .venv), activated or not.
shell.prefix(f'export PATH="{Path(sys.executable).parent}:$PATH"; ')

from cltm_pipeline.config import ConfigError, load_config
from cltm_pipeline.subsets import SubsetError
from cltm_pipeline.workflow import check_release_capacity

try:
    CFG = load_config(config, source="config", root=Path(workflow.basedir))
    check_release_capacity(CFG)
except (ConfigError, SubsetError) as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None

RESULTS = CFG.raw["results"]
RELEASE = CFG.raw["release"]
LOCALES = CFG.locales
TASKS = CFG.tasks


wildcard_constraints:
    locale=r"[a-z]{2,3}(-[A-Za-z0-9]+)*",
    target=r"[a-z]{2,3}(-[A-Za-z0-9]+)*",
    task=r"[a-z][a-z0-9_]*",
    seed=r"\d+",


def subset_spec_json(task, with_languages=True):
    """The task's subset spec as JSON; eval sets get it without languages/seeds so adding either reruns nothing."""
    spec = CFG.subset_spec(task)
    if not with_languages:
        spec = type(spec)(**{**spec.__dict__, "languages": (), "seeds": ()})
    return spec.to_json()


def ingest_table(locale):
    return f"{RESULTS}/ingest/{locale}/utterances.parquet"


def release_tsv(wildcards):
    return f"{RELEASE}/{wildcards.locale}/validated.tsv"


def subset_tables(wildcards):
    """Utterance tables of the target and every donor of the task."""
    return [ingest_table(loc) for loc in CFG.raw["tasks"][wildcards.task]["languages"]]


def all_outputs():
    """Everything `rule all` asks for with the stages built so far."""
    out = []
    for task in TASKS:
        for target in CFG.raw["tasks"][task]["languages"]:
            out += [f"{RESULTS}/subsets/{task}/{target}/seed{s}.tsv" for s in CFG.seeds(task)]
    return out
