"""Faults: the workflow killed (SIGKILL) at many moments across the DAG and rerun, damaged outputs, a full disk,
two runs at once. Nothing done is lost, nothing damaged is taken as done, no job outlives its Snakemake.

The kill battery is one run of the small demo (3 languages, 2 seeds, checkpoints every step) in a directory
whose path holds a space, killed at each position below and restarted, then finished: about one workflow's
time plus a few seconds per position (marked slow; it runs in the README's test command).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import REPO
from test_workflow import SMALL, make_workdir, snakemake

CONFIG = {**SMALL, "tasks": {"gender": {**SMALL["tasks"]["gender"], "architectures": {
    "mhubert": {"model": "tiny", "hparams": {"epochs": 2, "checkpoint_every": 1}}}}}}
CELLS = 3 * 4 * 2  # 3 targets x (single + self + 2 duals) x 2 seeds


def _files(work: Path, pattern: str) -> list[Path]:
    return [p for p in work.glob(pattern) if not p.name.startswith(".")]


def count(pattern: str, n: int):
    """The position is reached once ``n`` files match (skipped if an earlier attempt got there)."""
    return lambda work, t0: len(_files(work, pattern)) >= n


def fresh(pattern: str, n: int = 1):
    """The position is reached once ``n`` matching files were written during this attempt."""
    def reached(work: Path, t0: int) -> bool:
        got = 0
        for p in _files(work, pattern):
            try:
                got += p.stat().st_mtime_ns > t0
            except FileNotFoundError:  # a checkpoint deleted as its cell finished
                pass
        return got >= n
    return reached


RUNS = "results/runs/gender/mhubert"
#: Where the battery kills Snakemake, in DAG order. Together they cover every stage: demo corpus, ingest,
#: evaluation sets, seed tables, model, mid-cell (checkpoints), between cells, between workers, matrix,
#: analyses. A position an earlier attempt already passed is skipped.
POSITIONS = [
    ("demo corpus job started", fresh("results/logs/demo_corpus.log")),
    ("demo corpus written", count("resources/cv-demo/README.txt", 1)),
    ("first ingest job started", fresh("results/logs/ingest/*.log")),
    ("first locale ingested", count("results/ingest/*/utterances.parquet", 1)),
    ("every locale ingested", count("results/ingest/*/utterances.parquet", 3)),
    ("evaluation sets written", count("results/subsets/gender/*/test.tsv", 1)),
    ("seed table written", count("results/subsets/gender/*/seed*.tsv", 1)),
    ("model prepared", count("resources/models/tiny/cltm_model.json", 1)),
    ("mid-cell, a checkpoint written", fresh(f"{RUNS}/*/*/seed*/checkpoint.pt")),
    ("first cell finished", count(f"{RUNS}/*/*/seed*/metrics.json", 1)),
    ("mid-cell again", fresh(f"{RUNS}/*/*/seed*/checkpoint.pt")),
    ("four cells finished", count(f"{RUNS}/*/*/seed*/metrics.json", 4)),
    ("first worker finished", count(f"{RUNS}/*/seed*.done", 1)),
    ("three workers finished", count(f"{RUNS}/*/seed*.done", 3)),
    ("fourteen cells finished", count(f"{RUNS}/*/*/seed*/metrics.json", 14)),
    ("typology written", count("results/typology/uriel.json", 1)),
    ("matrix written", count("results/matrices/gender/mhubert/cltm.tsv", 1)),
    ("analysis written", count("results/matrices/gender/mhubert/analysis.json", 1)),
]


def cltm_jobs(parent: int) -> list[int]:
    """Live processes started for the Snakemake with pid ``parent`` (CLTM_PARENT_PID in their environment)."""
    mark = f"CLTM_PARENT_PID={parent}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                env = (d / "environ").read_bytes().split(b"\0")
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if mark in env and state != "Z":
                pids.append(int(d.name))
    return pids


def corrupt_outputs(work: Path) -> list[str]:
    """Outputs that exist under a final name but do not read back (a half-written file that looks done)."""
    bad = []
    for p in (work / "results").rglob("*"):
        if not p.is_file() or p.name.startswith(".") or "logs" in p.parts:
            continue
        try:
            if p.suffix in (".json", ".done"):
                json.loads(p.read_text(encoding="utf-8"))
            elif p.suffix == ".parquet":
                pl.read_parquet(p)
            elif p.suffix == ".npy":
                np.load(p, mmap_mode="r")
            elif p.suffix == ".tsv" and p.stat().st_size == 0:
                raise ValueError("empty")
        except Exception as exc:  # noqa: BLE001 - any failure to read back is corruption
            bad.append(f"{p}: {type(exc).__name__}: {exc}")
    return bad


def snapshot(work: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (work / "results" / "runs").rglob("metrics.json")}


@dataclass
class Battery:
    work: Path
    reached: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    finished: dict = field(default_factory=dict)
    seconds: float = 0.0


def _start(work: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", "2"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture(scope="module")
def battery(tmp_path_factory) -> Battery:
    work = make_workdir(tmp_path_factory.mktemp("faults") / "kill battery", CONFIG)
    res, t0 = Battery(work), time.monotonic()
    for name, reached in POSITIONS:
        t0_ns = time.time_ns()
        if reached(work, t0_ns):
            continue
        proc = _start(work)
        try:
            while proc.poll() is None and not reached(work, t0_ns):
                time.sleep(0.05)
            if proc.poll() is not None:
                continue  # the run got past this position (or finished) before it was seen
            os.kill(proc.pid, signal.SIGKILL)  # Snakemake alone: its jobs must notice and exit by themselves
            proc.wait()
            res.reached.append(name)
            deadline = time.monotonic() + 60  # ~1 s each, but CI machines can be loaded
            while cltm_jobs(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            left = cltm_jobs(proc.pid)
            res.orphans += [f"{name}: pid {pid}" for pid in left]
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the attempt, orphans included
            except ProcessLookupError:
                pass
            proc.wait()
        res.corrupt += [f"{name}: {c}" for c in corrupt_outputs(work)]
        for p, (mtime, blob) in res.finished.items():
            if p.stat().st_mtime_ns != mtime or p.read_bytes() != blob:
                res.rewritten.append(f"{name}: {p}")
        res.finished = {**snapshot(work), **res.finished}
        snakemake(work, "--unlock")  # SIGKILL leaves Snakemake's lock behind (README, Guarantees and recovery)
    snakemake(work, "--cores", "2")  # one plain rerun finishes the workflow
    res.corrupt += corrupt_outputs(work)
    res.rewritten += [str(p) for p, (mtime, blob) in res.finished.items()
                      if p.stat().st_mtime_ns != mtime or p.read_bytes() != blob]
    res.seconds = time.monotonic() - t0
    print(f"kill battery: {len(res.reached)} positions killed of {len(POSITIONS)} ({', '.join(res.reached)}); "
          f"corrupt outputs {len(res.corrupt)}; finished cells rewritten {len(res.rewritten)} of {len(res.finished)} "
          f"checked; orphan jobs {len(res.orphans)}; {res.seconds:.0f} s")
    return res


@pytest.mark.slow
def test_kill_battery_loses_nothing_done_and_leaves_nothing_corrupt(battery):
    assert len(battery.reached) >= 10, battery.reached
    assert battery.corrupt == []
    assert battery.rewritten == []
    assert battery.orphans == []
    assert len(battery.finished) > 0
    runs = list((battery.work / "results" / "runs").rglob("metrics.json"))
    assert len(runs) == CELLS
    assert not list((battery.work / "results" / "runs").rglob("checkpoint.pt"))  # deleted once a cell is done
    summary = json.loads((battery.work / "results" / "matrices" / "gender" / "mhubert" / "summary.json").read_text())
    assert summary["cells_missing"] == 0
    assert (battery.work / "results" / "report" / "index.html").is_file()
    # the first plain rerun finished everything: nothing is left for a second
    again = snakemake(battery.work, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def status(work: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "cltm_pipeline.cli", "status", "config/config.yaml"],
                          cwd=work, capture_output=True, text=True, check=True)
    return next(line.split() for line in proc.stdout.splitlines() if line.startswith("gender"))


@pytest.mark.slow
def test_corrupt_or_lost_metrics_and_flags_are_retrained_by_a_plain_rerun(battery):
    work = battery.work
    runs = work / "results" / "runs" / "gender" / "mhubert"
    truncated, lost = runs / "es" / "de" / "seed0" / "metrics.json", runs / "fi" / "-" / "seed1" / "metrics.json"
    flag = runs / "de" / "seed1.done"
    truncated.write_bytes(truncated.read_bytes()[:40])
    lost.unlink()
    (lost.parent / "checkpoint.pt").write_bytes(b"not a checkpoint")  # a damaged checkpoint beside a lost cell
    flag.write_text("{garbage")
    assert status(work) == ["gender", "mhubert", str(CELLS - 2), "2", "0", str(CELLS)]
    before = {p: v for p, v in snapshot(work).items() if p != truncated}

    dry = snakemake(work, "-n")
    assert "train" in dry.stdout and "the cell is retrained" in dry.stdout + dry.stderr
    snakemake(work, "--cores", "2")  # a plain rerun, no --forcerun

    assert status(work) == ["gender", "mhubert", str(CELLS), "0", "0", str(CELLS)]
    for p in (truncated, lost):
        assert json.loads(p.read_text())["metrics"]["macro_f1"] >= 0
    changed = [p for p, (mtime, blob) in before.items() if p.stat().st_mtime_ns != mtime or p.read_bytes() != blob]
    assert changed == []  # only the two damaged cells were trained again
    assert json.loads(flag.read_text())["metrics"]  # the garbage flag was rewritten (its cells skipped)
    summary = json.loads((work / "results" / "matrices" / "gender" / "mhubert" / "summary.json").read_text())
    assert summary["cells_missing"] == 0
    again = snakemake(work, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_two_concurrent_runs_the_second_is_refused(battery):
    work = battery.work
    (work / "results" / "report" / "index.html").unlink()
    # give the first run real work (one target's cells to retrain), so it still holds the lock when the second
    # has started up: with the report alone to rebuild it could finish first, and the second find nothing to do
    for p in (work / "results" / "runs" / "gender" / "mhubert" / "es").rglob("metrics.json"):
        p.unlink()
    first = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
                              "--cores", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((work / ".snakemake" / "locks").glob("*")) and time.monotonic() < deadline:
            assert first.poll() is None
            time.sleep(0.05)
        second = snakemake(work, "--cores", "1", check=False)
        assert second.returncode != 0
        assert "LockException" in second.stdout + second.stderr or "locked" in second.stdout + second.stderr
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0 and (work / "results" / "report" / "index.html").is_file()


# ---------------------------------------------------------------------------------------------- disk full

@pytest.fixture()
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped otherwise, saying why)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({proc.stderr.strip() or 'not root'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> None:
    """Fill a filesystem to the last byte."""
    with open(disk / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass


def test_disk_full_at_ingest_is_one_line_and_leaves_no_partial_audio(small_release, tiny_disk):
    out = tiny_disk / "ingest" / "es"
    proc = subprocess.run([sys.executable, "-m", "cltm_pipeline.cli", "ingest", "--release", str(small_release),
                           "--locale", "es", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("cltm ")]
    assert "Traceback" not in proc.stderr and len(err) == 1 and "No space left on device" in err[0], proc.stderr
    assert not (out / "audio.npy").exists() and not (out / "utterances.parquet").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind


@pytest.mark.slow
def test_disk_full_while_training_is_one_line_and_writes_nothing_that_looks_done(battery, tiny_disk):
    work = battery.work / "results"
    sub = work / "subsets" / "gender" / "es"
    fill(tiny_disk)
    runs = tiny_disk / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "cltm_pipeline.cli", "train-cells", "--task", "gender", "--arch", "mhubert",
         "--model-dir", str(battery.work / "resources" / "models" / "tiny"), "--seed-table", str(sub / "seed0.tsv"),
         "--test", str(sub / "test.tsv"), "--dev", str(sub / "dev.tsv"), "--ingest-root", str(work / "ingest"),
         "--target", "es", "--donors", "-", "es", "--seed", "0", "--hparams", '{"epochs": 1}',
         "--runs-dir", str(runs), "--flag", str(runs / "es" / "seed0.done")],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("cltm train-cells: error: ") and "No space left on device" in err[0], err
    assert not list(runs.rglob("metrics.json")) and not (runs / "es" / "seed0.done").exists()


# ------------------------------------------------------------------------------------ parent watchdog

def test_a_job_exits_when_its_snakemake_is_gone(tmp_path):
    # a stand-in parent that dies, and a long `cltm` command started "by" it
    parent = subprocess.Popen(["sleep", "60"])
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from cltm_pipeline.cli import watch_parent; "
         "assert watch_parent() is not None; time.sleep(60)"],
        env={**os.environ, "CLTM_PARENT_PID": str(parent.pid)}, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert child.poll() is None  # alive while its parent is
    parent.kill()
    parent.wait()
    t0 = time.monotonic()
    child.wait(timeout=20)
    assert child.returncode == 143 and time.monotonic() - t0 < 10
    assert f"parent process {parent.pid} (CLTM_PARENT_PID) is gone" in child.stderr.read()


@pytest.mark.slow
def test_an_edited_split_file_reruns_ingestion(battery):
    # train/dev/test.tsv and clip_durations.tsv are inputs of ingest: an edit is not "Nothing to be done"
    test_tsv = battery.work / "resources" / "cv-demo" / "es" / "test.tsv"
    original = test_tsv.read_bytes()
    try:
        test_tsv.write_bytes(b"".join(original.splitlines(keepends=True)[:-1]))  # one test clip fewer
        dry = snakemake(battery.work, "-n").stdout
        planned = {line.split()[0]: int(line.split()[1]) for line in dry.splitlines()
                   if len(line.split()) == 2 and line.split()[1].isdigit()}
        assert planned.get("ingest") == 1 and planned.get("eval_sets") == 1, dry[-1500:]
    finally:
        test_tsv.write_bytes(original)
