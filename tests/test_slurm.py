"""The workflow through the SLURM profile: a dry-run of the paper grid without SLURM, and the small demo on a
real one-node SLURM cluster started by this module (root, slurm-wlm and munge; see tests/slurm/README.md),
including a training job cancelled with scancel and the rerun that keeps its finished cells."""

from __future__ import annotations

import copy
import json
import os
import pwd
import re
import shutil
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO
from test_workflow import SMALL, make_workdir

HERE = Path(__file__).resolve().parent / "slurm"
PROFILE = REPO / "profiles" / "slurm"
OVERLAY = HERE / "profile"
# The executor plugin removes SLURM_CONF from job environments: only the default path works inside jobs.
SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = (HERE / "slurm.conf.in").read_text().splitlines()[1]  # second line tags a rendered config as ours
PORTS = (6817, 6818)  # slurm.conf.in: SlurmctldPort, SlurmdPort
SBIN = os.pathsep.join(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
SLURM_COMMANDS = {
    "sacct", "sacctmgr", "salloc", "sattach", "sbatch", "sbcast", "scancel", "scontrol", "scrontab", "sdiag",
    "seff", "sgather", "sh5util", "sinfo", "sjobexitmod", "sjstat", "smail", "sprio", "squeue", "sreport",
    "srun", "sshare", "sstat", "strigger", "sview",
}
CELLS_PER_WORKER = 4  # SMALL: single + self + 2 duals per (target, seed)


# ----------------------------------------------------------------------------------------------------------
# dry-run of the study's grid: needs neither SLURM binaries nor daemons


def _path_without_slurm(bin_dir: Path) -> str:
    """A PATH of symlinks to every command of the usual directories except SLURM's (the plugin calls
    `which`, so a PATH of the venv alone would not do)."""
    bin_dir.mkdir()
    for d in SBIN.split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for entry in sorted(os.listdir(d)):
            if entry in SLURM_COMMANDS or entry.startswith("slurm") or (bin_dir / entry).exists():
                continue
            (bin_dir / entry).symlink_to(Path(d) / entry)
    return str(bin_dir)


def test_dry_run_of_the_paper_grid_with_the_slurm_profile_needs_no_slurm(tmp_path):
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = _path_without_slurm(tmp_path / "bin")
    assert subprocess.run(["which", "sinfo"], env=env, capture_output=True).returncode != 0
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "-n",
           "--profile", str(PROFILE), "--configfile", str(work / "config" / "paper.yaml")]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"Using profiles {PROFILE}" in out, out[:500]
    # the study's full grid: gender 54 locales, SV 44 locales x 4 architectures, ASR 9 locales, 10 seeds
    assert ("grid: 109,800 training cells (gender/mhubert 29,700, asr/mhubert 900, sv/mhubert 19,800, sv/ecapa 19,800, "
            "sv/siamese 19,800, sv/speechllm 19,800) in 2,390 worker jobs") in out, out[:1000]
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["train"] == 540 + 90 + 4 * 440 and counts["embed"] == 44, counts
    assert not (work / "results").exists()


# ----------------------------------------------------------------------------------------------------------
# a one-node SLURM cluster for this session


@dataclass
class Cluster:
    node: str
    cpus: int
    mem_mb: int
    state: Path
    env: dict


def _clean_env() -> dict:
    """This environment without SLURM_* variables (pytest may itself run in a SLURM job), sbin on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), SBIN])
    return env


def _run(*cmd: str, timeout: float = 10, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", _clean_env())
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)


def _popen(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    with open(log, "w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_clean_env(), **kw)


def _munge_works() -> bool:
    try:
        cred = _run("munge", "-n", timeout=5)
        return cred.returncode == 0 and _run("unmunge", input=cred.stdout, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _sinfo_answers(env: dict) -> bool:
    try:
        return _run("sinfo", "-h", env=env).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


def _node_hardware() -> dict:
    """`slurmd -C`'s first line as a dict (NodeName, CPUs, Boards, SocketsPerBoard, ..., RealMemory)."""
    line = _run("slurmd", "-C").stdout.splitlines()[0]
    return dict(item.split("=", 1) for item in line.split())


def _ensure_munge_key() -> None:
    key = Path("/etc/munge/munge.key")
    if key.exists():
        return
    key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if shutil.which("mungekey", path=SBIN):
        _run("mungekey", "--create", f"--keyfile={key}", timeout=30).check_returncode()
    else:
        key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    try:
        munge = pwd.getpwnam("munge")
        os.chown(key.parent, munge.pw_uid, munge.pw_gid)
        os.chown(key, munge.pw_uid, munge.pw_gid)
    except KeyError:
        pass


def _start_munged(state: Path) -> subprocess.Popen | None:
    """Our own munged on the default socket, unless one already answers (then it is left alone)."""
    if _munge_works():
        return None
    _ensure_munge_key()
    try:
        munge = pwd.getpwnam("munge")
    except KeyError:
        munge = None
    for d in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
        if munge:
            os.chown(d, munge.pw_uid, munge.pw_gid)
    as_user = {"user": munge.pw_uid, "group": munge.pw_gid, "extra_groups": []} if munge else {}
    cmd = ["munged", "--foreground", *([] if munge else ["--force"])]
    proc = _popen(cmd, state / "munged.out", **as_user)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None and not _munge_works():
        time.sleep(0.2)
    return proc


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, n: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """munged, slurmctld and slurmd as root daemons for the session; stopped by PID at teardown, and
    /etc/slurm/slurm.conf restored."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM tests start slurmctld/slurmd and write /etc/slurm/slurm.conf: run them as root")
    missing = [c for c in ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo",
                           "scancel") if not shutil.which(c, path=SBIN)]
    if missing:
        pytest.skip(f"SLURM not installed (missing {', '.join(missing)}): apt-get install -y slurm-wlm munge")
    env = _clean_env()
    previous = SLURM_CONF.read_bytes() if SLURM_CONF.exists() else None
    ours = previous is not None and previous.decode(errors="replace").splitlines()[1:2] == [MARKER]
    if previous is not None and not ours and _sinfo_answers(env):
        pytest.skip(f"{SLURM_CONF} belongs to a running SLURM cluster: not replacing it")
    busy = [p for p in PORTS if _port_busy(p)]
    if busy:
        pytest.skip(f"port(s) {busy} in use (another slurmctld/slurmd?): the test cluster needs {PORTS}")

    try:
        hw = _node_hardware()
    except (OSError, subprocess.TimeoutExpired, IndexError, ValueError) as exc:
        pytest.skip(f"`slurmd -C` did not describe this node: {exc!r}")
    node = hw.get("NodeName") or socket.gethostname().split(".")[0]
    cpus, mem = int(hw["CPUs"]), int(int(hw["RealMemory"]) * 0.9)  # slurmd drains a node short of RealMemory
    if cpus < 2 or mem < 4000:
        pytest.skip(f"node {node} has {cpus} CPUs and {mem} MB for jobs: the demo's jobs ask 2 CPUs and 4000 MB")
    state = tmp_path_factory.mktemp("slurm")
    for d in ("ctld", "slurmd"):
        (state / d).mkdir()
    conf = string.Template((HERE / "slurm.conf.in").read_text()).substitute(
        host=node, ctld_port=PORTS[0], slurmd_port=PORTS[1], state=state, cpus=cpus, boards=hw["Boards"],
        sockets=hw["SocketsPerBoard"], cores=hw["CoresPerSocket"], threads=hw["ThreadsPerCore"], mem=mem)
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(conf)

    procs: list[subprocess.Popen | None] = []

    def teardown():
        try:  # jobs a failed test left behind: the cluster is ours, so all of its jobs are
            ids = _run("squeue", "-h", "-o", "%i", env=env).stdout.split()
            if ids:
                _run("scancel", *ids, env=env)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and _run("squeue", "-h", "-t", "R,CG", "-o", "%i",
                                                           env=env).stdout.strip():
                    time.sleep(0.5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for proc in reversed(procs):  # slurmd, slurmctld, then our munged
            _stop(proc)
        if previous is not None and not ours:
            SLURM_CONF.write_bytes(previous)
        else:
            SLURM_CONF.unlink(missing_ok=True)

    try:
        procs.append(_start_munged(state))
        if not _munge_works():
            reason = f"munged did not come up:\n{_tail(state / 'munged.out')}"
        else:
            for daemon in ("slurmctld", "slurmd"):
                procs.append(_popen([daemon, "-D"], state / f"{daemon}.out"))
            reason, deadline = None, time.monotonic() + 30
            while True:
                states = _run("sinfo", "-h", "-N", "-n", node, "-o", "%t", env=env).stdout.split()
                if states == ["idle"]:
                    break
                dead = [p.args[0] for p in procs[1:] if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    reason = (f"SLURM did not come up in 30 s (node state {states}, exited: {dead}):\n"
                              + "\n".join(f"--- {d}\n{_tail(state / f'{d}.out')}" for d in ("slurmctld", "slurmd")))
                    break
                time.sleep(0.5)
    except BaseException:
        teardown()
        raise
    if reason:
        teardown()
        pytest.skip(reason)
    try:
        yield Cluster(node=node, cpus=cpus, mem_mb=mem, state=state, env=env)
    finally:
        teardown()


# ----------------------------------------------------------------------------------------------------------
# the workflow through profiles/slurm on that cluster


def _snakemake_cmd(work: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
            "--profile", str(PROFILE), "--profile", str(OVERLAY), *args]


def _slurm_logs(work: Path, n: int = 3) -> str:
    logs = sorted((work / ".snakemake" / "slurm_logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
    return "\n".join(f"--- {p.relative_to(work)}\n{_tail(p)}" for p in logs[-n:])


def run_profile(cluster: Cluster, work: Path, *args: str, check: bool = True) -> str:
    log = work / f"snakemake-{time.monotonic_ns()}.out"
    with open(log, "w") as out:
        proc = subprocess.run(_snakemake_cmd(work, *args), cwd=work, env=cluster.env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{text[-3000:]}\n{_slurm_logs(work)}")
    return text


def squeue_jobs(cluster: Cluster, *args: str) -> list[dict]:
    out = _run("squeue", "-h", "--states=all", "-o", "%i|%T|%m|%l|%k", *args, env=cluster.env).stdout
    return [dict(zip(("id", "state", "mem", "time", "comment"), line.split("|"))) for line in out.splitlines()]


def train_key(comment: str) -> tuple[str, int] | None:
    """(target, seed) of a train job from its SLURM comment, rule_train_wildcards_<task>_<arch>_<target>_<seed>."""
    m = re.fullmatch(r"rule_train_wildcards_gender_mhubert_(.+)_(\d+)", comment)
    return (m[1], int(m[2])) if m else None


def cells(work: Path, target: str = "*", seed: str | int = "*") -> list[Path]:
    return sorted((work / "results" / "runs" / "gender" / "mhubert").glob(f"{target}/*/seed{seed}/metrics.json"))


def small_config(**hparams) -> dict:
    cfg = copy.deepcopy(SMALL)
    if hparams:
        cfg["tasks"]["gender"]["architectures"]["mhubert"]["hparams"] = hparams
    return cfg


@pytest.fixture(scope="module")
def slurm_demo(slurm_cluster, tmp_path_factory):
    work = make_workdir(tmp_path_factory.mktemp("slurm-demo"), small_config())
    t0 = time.monotonic()
    out = run_profile(slurm_cluster, work)
    return work, out, time.monotonic() - t0


@pytest.mark.slurm
def test_small_demo_through_the_slurm_profile(slurm_cluster, slurm_demo):
    work, out, seconds = slurm_demo
    results = work / "results"
    summary = json.loads((results / "matrices" / "gender" / "mhubert" / "summary.json").read_text())
    assert summary["cells_missing"] == 0, summary
    assert (results / "matrices" / "gender" / "mhubert" / "cltm.tsv").is_file()
    assert (results / "report" / "index.html").stat().st_size > 10_000
    assert len(cells(work)) == 3 * 2 * CELLS_PER_WORKER
    for p in cells(work):
        json.loads(p.read_text())
    # the jobs ran as SLURM jobs, with the rule's resources: 4000 MB, 4 cells x 30 min
    run_id = re.search(r"SLURM run ID: (\S+)", out)[1]
    jobs = squeue_jobs(slurm_cluster, "--name", run_id)
    train = [j for j in jobs if train_key(j["comment"])]
    assert sorted(train_key(j["comment"]) for j in train) == [(t, s) for t in ("de", "es", "fi") for s in (0, 1)]
    assert {(j["state"], j["mem"], j["time"]) for j in train} == {("COMPLETED", "4000M", "2:00:00")}, train
    assert sum(j["comment"].startswith("rule_ingest") for j in jobs) == 3, jobs
    print(f"small demo through SLURM: {seconds:.0f} s, {len(jobs)} SLURM jobs")


@pytest.mark.slurm
def test_cancelled_training_job_is_rerun_keeping_its_finished_cells(slurm_cluster, slurm_demo, tmp_path):
    demo, _, _ = slurm_demo
    work = make_workdir(tmp_path, small_config(epochs=6))  # ~2 s a cell: time to cancel mid-job
    # the demo's corpus, model, ingestion and subsets are reused (hparams change only the training cells)
    shutil.copytree(demo / "resources", work / "resources")
    for part in ("ingest", "subsets"):
        shutil.copytree(demo / "results" / part, work / "results" / part)

    # --retries 0: the cancelled job fails this run (the profile's retries would resubmit it at once)
    log = work / "first.out"
    t0 = time.monotonic()
    with open(log, "w") as out:
        head = subprocess.Popen(_snakemake_cmd(work, "--retries", "0"), cwd=work, env=slurm_cluster.env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    cancelled = None
    try:
        deadline = time.monotonic() + 300
        while cancelled is None:
            assert head.poll() is None, f"the run ended before a job could be cancelled:\n{log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no training job was caught with some but not all cells done"
            for job in squeue_jobs(slurm_cluster, "-t", "RUNNING"):
                key = train_key(job["comment"])
                if key and 0 < len(cells(work, *key)) < CELLS_PER_WORKER:
                    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in cells(work)}
                    _run("scancel", job["id"], env=slurm_cluster.env)
                    cancelled = (job["id"], key, len(cells(work, *key)))
                    break
            else:
                time.sleep(0.2)
        first_rc = head.wait(timeout=400)
    finally:
        if head.poll() is None:
            os.killpg(head.pid, 15)
            head.wait(timeout=30)
    first = log.read_text()
    first_seconds = time.monotonic() - t0
    job_id, (target, seed), done_at_cancel = cancelled
    assert first_rc != 0, first[-2000:]
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'" in first, first[-3000:]
    flags = work / "results" / "runs" / "gender" / "mhubert"
    assert not (flags / target / f"seed{seed}.done").exists()
    assert len(list(flags.glob("*/seed*.done"))) == 5, "keep-going: the other workers finished"
    assert len(cells(work, target, seed)) < CELLS_PER_WORKER

    t1 = time.monotonic()
    rerun = run_profile(slurm_cluster, work)
    rerun_seconds = time.monotonic() - t1
    assert any(line.split() == ["train", "1"] for line in rerun.splitlines()), rerun[-3000:]
    after = cells(work)
    assert len(after) == 3 * 2 * CELLS_PER_WORKER
    for p in after:
        json.loads(p.read_text())  # nothing half-written is taken as done
    for p, (mtime, blob) in before.items():
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == blob, f"{p} was recomputed"
    summary = json.loads((work / "results" / "matrices" / "gender" / "mhubert" / "summary.json").read_text())
    assert summary["cells_missing"] == 0
    assert (work / "results" / "report" / "index.html").is_file()
    worker_log = (work / "results" / "logs" / "runs" / "gender" / "mhubert" / target / f"seed{seed}.log").read_text()
    counts = re.search(r"\{'trained': (\d+), 'skipped': (\d+), 'failed': 0\}", worker_log)
    assert counts and int(counts[2]) >= done_at_cancel and int(counts[1]) + int(counts[2]) == CELLS_PER_WORKER, \
        worker_log[-1000:]
    print(f"cancelled SLURM job {job_id} ({target}/seed{seed}) with {done_at_cancel} of {CELLS_PER_WORKER} cells "
          f"done; first run {first_seconds:.0f} s, rerun {rerun_seconds:.0f} s, skipped {counts[2]}")
