"""The Snakemake workflow end to end on a small demo: validation before jobs, outputs, reruns, determinism."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SMALL = {
    "release": "resources/cv-demo",
    "languages_sheet": "config/languages.tsv",
    "results": "results",
    "demo": {"seed": 0, "speakers_per_gender": 6, "clips_per_speaker": 4, "languages": ["es", "de", "fi"]},
    "ingest": {"workers": 2, "min_clips": 20},
    "splits": {"source": "cv"},
    "models": {"tiny": {"arch": "mhubert", "source": "tiny"}},
    "tasks": {"gender": {"languages": ["es", "de", "fi"], "seeds": 2, "regime": {"n": 4},
                        "architectures": {"mhubert": {"model": "tiny", "hparams": {"epochs": 1}}}}},
}


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake with this repo's Snakefile in ``workdir`` (which holds config/config.yaml)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def make_workdir(path: Path, config: dict) -> Path:
    (path / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config" / "languages.tsv", path / "config" / "languages.tsv")
    (path / "config" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_lint_is_clean():
    proc = snakemake(REPO, "--lint")
    assert "Congratulations" in proc.stdout + proc.stderr


def test_dry_run_of_the_default_config_lists_every_stage(tmp_path):
    # the default config in a fresh directory: nothing exists yet, every stage is planned
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    work = make_workdir(tmp_path, cfg)
    out = snakemake(work, "-n").stdout
    from cltm_pipeline.models import get_architecture
    from cltm_pipeline.tasks import get_task

    tasks = cfg["tasks"]
    L = {t: len(b["languages"]) for t, b in tasks.items()}
    S = {t: b["seeds"] for t, b in tasks.items()}
    expected = {
        "demo_corpus": 1, "ingest": len({loc for b in tasks.values() for loc in b["languages"]}), "eval_sets": sum(L.values()),
        "subsets": sum(L[t] * S[t] for t in tasks),
        "prepare_model": len({a["model"] for b in tasks.values() for a in b["architectures"].values()}),
        # one worker per (target, group of resources.seeds_per_job seeds)
        "train": sum(L[t] * -(-S[t] // a.get("resources", {}).get("seeds_per_job", 1))
                     for t, b in tasks.items() for a in b["architectures"].values()),
        "target_artifact": sum(L[t] * len(get_task(t).target_artifacts) for t in tasks),
        "embed": sum(L[t] for t, b in tasks.items() for a in b["architectures"] if get_architecture(a).embedding_cache),
        "matrix": sum(len(b["architectures"]) for b in tasks.values()), "report": 1,
        # one "inputs ready" aggregate per task (and per cached-encoder arch), not one edge per language
        "task_ingested": len(tasks), "task_seed_tables": sum(
            any(get_architecture(a).embedding_cache for a in b["architectures"]) for b in tasks.values()),
        "task_embeddings": sum(get_architecture(a).embedding_cache for b in tasks.values() for a in b["architectures"]),
    }
    expected = {rule: count for rule, count in expected.items() if count}
    for rule, count in expected.items():
        assert any(line.split() == [rule, str(count)] for line in out.splitlines()), (rule, out[-1500:])
    # each locale's training pool, sized from the grid, is in the log (the demo's locales are smaller)
    pools = next(line for line in out.splitlines() if line.startswith("ingest pools (clips per binary gender"))
    # gender only (it): 8 seeds x 2 x 8 per gender x 2 (safety) + 64 probe clips; es is an SV locale too, whose
    # 8 seeds x 2 x 16 per gender x 2 + 64 is larger
    assert "it 320," in pools and "es 576," in pools and "ro 544" in pools


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    work = make_workdir(tmp_path_factory.mktemp("wf"), SMALL)
    snakemake(work, "--cores", "2")
    return work


def test_small_demo_runs_end_to_end_and_reruns_nothing(small_run):
    for loc in ("es", "de", "fi"):
        assert (small_run / "results" / "ingest" / loc / "audio.npy").is_file()
        for s in (0, 1):
            assert (small_run / "results" / "subsets" / "gender" / loc / f"seed{s}.tsv").is_file()
    again = snakemake(small_run, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_two_runs_give_byte_identical_outputs(small_run, tmp_path):
    # the second run trains both seeds of a target in one worker (seeds_per_job): same results
    grouped = json.loads(json.dumps(SMALL))
    grouped["tasks"]["gender"]["architectures"]["mhubert"]["resources"] = {"seeds_per_job": 2}
    other = make_workdir(tmp_path, grouped)
    snakemake(other, "--cores", "2")
    for loc in ("es", "de", "fi"):
        flag = json.loads((other / "results" / "runs" / "gender" / "mhubert" / loc / "seed0+1.done").read_text())
        assert len(flag["cells"]) == 2 * 4  # single, self and two duals, for each seed
    outputs = sorted(p.relative_to(small_run) for root in ("results", "resources") for p in (small_run / root).rglob("*")
                     if p.is_file() and not {"logs", "benchmarks"} & set(p.parts) and p.suffix != ".done")
    assert len(outputs) > 20
    for rel in outputs:
        if rel.name == "metrics.json":  # wall times differ run to run; everything else must not
            a, b = (json.loads((root / rel).read_text()) for root in (other, small_run))
            assert a.pop("timing").keys() == b.pop("timing").keys()
            assert a == b, rel
        elif rel.name == "index.html":  # the report shows the config, whose seeds_per_job differs
            mine, theirs = ((root / rel).read_text(encoding="utf-8").replace("seeds_per_job: 2, ", "")
                            .replace(", seeds_per_job: 1", "").replace(", seeds_per_job: 2", "") for root in (small_run, other))
            assert mine == theirs
        else:
            assert (other / rel).read_bytes() == (small_run / rel).read_bytes(), rel


def test_capacity_is_refused_before_any_job(small_run, tmp_path):
    # the release exists now: asking more than a locale holds fails at parse time, naming it
    big = {**SMALL, "release": str(small_run / "resources" / "cv-demo"), "tasks": {
        "gender": {**SMALL["tasks"]["gender"], "languages": ["es", "de"], "regime": {"n": 40}}}}
    big.pop("demo")
    work = make_workdir(tmp_path, big)
    proc = snakemake(work, "--cores", "1", check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "invalid configuration: tasks.gender.regime: locale es has 8 female training clips" in err, err[-2000:]
    assert not (work / "results").exists()


def test_bad_config_key_is_named_before_any_job(tmp_path):
    bad = {**SMALL, "tasks": {"gender": {**SMALL["tasks"]["gender"], "seeds": 0}}}
    work = make_workdir(tmp_path, bad)
    proc = snakemake(work, "-n", check=False)
    assert proc.returncode != 0
    assert "invalid configuration: config: tasks.gender.seeds: 0 is not valid" in proc.stdout + proc.stderr


def test_status_reports_done_missing_and_failed_cells(small_run):
    runs = small_run / "results" / "runs" / "gender" / "mhubert"
    gone = runs / "de" / "es" / "seed1" / "metrics.json"
    failed = runs / "fi" / "-" / "seed0"
    saved = {p: p.read_bytes() for p in (gone, failed / "metrics.json")}
    try:
        gone.unlink()
        (failed / "metrics.json").unlink()
        (failed / "failed.json").write_text('{"error": "RuntimeError: boom"}')
        proc = subprocess.run([sys.executable, "-m", "cltm_pipeline.cli", "status", "config/config.yaml"],
                              cwd=small_run, capture_output=True, text=True, check=True)
        row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("gender"))
        assert row == ["gender", "mhubert", "22", "1", "1", "24"], proc.stdout
        assert "failed gender/mhubert/fi/-/seed0" in proc.stdout and "results/logs/runs/gender/mhubert/fi/seed0.log" in proc.stdout
    finally:
        (failed / "failed.json").unlink(missing_ok=True)
        for p, blob in saved.items():
            p.write_bytes(blob)


def test_seed_groups_name_one_worker_per_group_of_seeds():
    from cltm_pipeline.config import load_config
    from cltm_pipeline.workflow import inventory, seed_groups

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["tasks"]["gender"]["seeds"] = [0, 2, 5]
    raw["tasks"]["gender"]["architectures"]["mhubert"]["resources"]["seeds_per_job"] = 2
    raw["tasks"]["asr"]["architectures"]["mhubert"]["resources"].pop("seeds_per_job", None)
    cfg = load_config(raw, root=REPO)
    assert seed_groups(cfg, "gender", "mhubert") == ["0+2", "5"]
    assert seed_groups(cfg, "asr", "mhubert") == [str(s) for s in cfg.seeds("asr")]  # default: one seed per job
    inv = inventory(cfg).filter(task="gender", target="es", donor="-")
    assert inv["log"].to_list() == [f"{cfg.raw['results']}/logs/runs/gender/mhubert/es/seed{g}.log"
                                    for g in ("0+2", "0+2", "5")]
