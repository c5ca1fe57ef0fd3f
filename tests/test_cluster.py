"""`--launcher slurm` on a real single-node SLURM cluster (tests/slurm_cluster.py) and `--launcher local`:
the graph's jobs, their dependencies, requeue on the time-limit signal, one build per artifact, and
`relaxkd status`. Slow: minutes, root and Debian's munge/slurmctld/slurmd/slurm-client
(`apt-get install munge slurmctld slurmd slurm-client`); skipped where those are missing.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, tiny_overrides
from slurm_cluster import SlurmCluster, missing_tools

pytestmark = pytest.mark.slow

#: every job small enough for a 2-core test machine
SMALL = "launcher.slurm.resources={default: {gpus: 0, cpus: 1, mem: 600M, time: '30:00'}}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0 or missing_tools():
        pytest.skip(f"needs root and SLURM's tools ({', '.join(missing_tools()) or 'not root'})")
    found = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(found.conf)  # relaxkd's sbatch/scontrol calls and the jobs read it
    yield found
    found.stop()
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def relaxkd(*args, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "relaxkd", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True).stdout


def job_field(job_id: str, name: str) -> str:
    return dict(re.findall(r"(\w+)=(\S*)", scontrol("show", "job", "-o", job_id))).get(name, "")


def wait_until(condition, timeout: float, what: str, poll: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def test_time_limit_signal_requeues_and_resumes_to_the_uninterrupted_metrics(cluster, tmp_path, monkeypatch):
    """A student's job gets SLURM's pre-time-limit signal (``--signal=B:USR1``, sent here by
    ``scancel --signal=USR1 --batch`` at a known moment) after its first epoch: it stops at its
    checkpoint, requeues, and the requeued job resumes and ends with an uninterrupted run's numbers."""
    from relaxkd.launch import launch
    from relaxkd.launch.jobs import JobSpec
    from relaxkd.launcher_config import SlurmSettings

    student = ["distill.loss=none", "distill.teachers=[]",
               "distill.optim={epochs: 6, batch_size: 32, lr: 0.05, warmup_epochs: 1, milestones: [4]}"]
    reference = relaxkd("distill", REPO / "configs" / "demo.yaml", *tiny_overrides(tmp_path / "inline"), *student, cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    args = [*tiny_overrides(tmp_path / "slurm"), *student]
    argv = [sys.executable, "-m", "relaxkd", "distill", str(REPO / "configs" / "demo.yaml"), *args]
    run_dir = tmp_path / "slurm" / "demo"
    settings = SlurmSettings(resources={"default": {"gpus": 0, "cpus": 1, "mem": "600M", "time": "30:00"}})
    monkeypatch.setenv("PYTHONPATH", str(REPO / "src"))  # what sbatch hands the job (--export=ALL)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    launch([JobSpec("student", "distill", argv)], run_dir, settings, "slurm", print)
    job_id = json.loads((run_dir / "jobs" / "launch.json").read_text())["jobs"]["student"]["job_id"]
    checkpoints = run_dir / ".work"
    wait_until(lambda: list(checkpoints.glob("distill-*/checkpoints/last.ckpt")), 600, "the first epoch's checkpoint")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    wait_until(lambda: job_field(job_id, "Restarts") == "1" and job_field(job_id, "JobState") == "PENDING", 120, "the requeue")
    scontrol("update", f"JobId={job_id}", "StartTime=now")  # SLURM holds a requeued job 2 minutes; no need here
    wait_until(lambda: job_field(job_id, "JobState") in ("COMPLETED", "FAILED", "CANCELLED"), 600, "the resumed job")
    log = (run_dir / "jobs" / "logs" / "student.log").read_text()
    assert job_field(job_id, "JobState") == "COMPLETED", log
    assert "time limit near: stopping at the last checkpoint and requeueing" in log
    assert f"[relaxkd] job {job_id} (restart 1)" in log and "resuming from checkpoint" in log
    metrics = lambda root: json.loads(next(root.glob("demo/distill-*/metrics.json")).read_text())  # noqa: E731
    resumed, uninterrupted = metrics(tmp_path / "slurm"), metrics(tmp_path / "inline")
    assert {k: resumed[k] for k in ("top1", "top5")} == {k: uninterrupted[k] for k in ("top1", "top5")}
