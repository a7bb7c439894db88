"""Killing a run at any moment and rerunning it: finished cells are not recomputed, no output is corrupt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO
from test_workflow import SMALL, make_workdir, snakemake


def test_kill_mid_training_then_rerun_keeps_finished_cells(tmp_path):
    cfg = {**SMALL, "tasks": {"gender": {**SMALL["tasks"]["gender"], "seeds": 2}}}
    cfg["tasks"]["gender"]["architectures"] = {"mhubert": {"model": "tiny", "hparams": {"epochs": 4}}}
    work = make_workdir(tmp_path, cfg)
    runs = work / "results" / "runs"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and len(list(runs.rglob("metrics.json"))) < 3:
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its jobs, mid-write or not
        proc.wait()
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in runs.rglob("metrics.json")}
    assert 3 <= len(before) < 24, len(before)
    assert not (work / "results" / "matrices").exists()

    # SIGKILL leaves Snakemake's lock behind (Ctrl-C or SIGTERM remove it): unlock, as the README says
    snakemake(work, "--unlock")
    rerun = snakemake(work, "--cores", "2")

    after = list(runs.rglob("metrics.json"))
    assert len(after) == 3 * 4 * 2  # 3 targets x (single + self + 2 duals) x 2 seeds
    for p, (mtime, blob) in before.items():
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == blob, f"{p} was recomputed"
    for p in after:
        json.loads(p.read_text())  # every output parses: nothing half-written is taken as done
    summary = json.loads((work / "results" / "matrices" / "gender" / "mhubert" / "summary.json").read_text())
    assert summary["cells_missing"] == 0
    logs = [p.read_text() for p in (work / "results" / "logs" / "runs").rglob("*.log")]
    skipped = sum(int(log.rsplit("'skipped': ", 1)[1].split(",")[0]) for log in logs if "'skipped': " in log)
    # killed at ~3 finished cells, no worker (4 cells each) had finished: the rerun skipped cells, not jobs
    if len(before) < 4:
        assert skipped >= len(before), (skipped, rerun.stdout[-500:])
