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
    return subprocess.run([sys.executable, "-m", "relaxkd", *map(str, args)], check=False, cwd=cwd, env=env, capture_output=True,
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
    def metrics(root):
        return json.loads(next(root.glob("demo/distill-*/metrics.json")).read_text())
    resumed, uninterrupted = metrics(tmp_path / "slurm"), metrics(tmp_path / "inline")
    assert {k: resumed[k] for k in ("top1", "top5")} == {k: uninterrupted[k] for k in ("top1", "top5")}


def sweep(root: Path, *extra: str, cwd: Path, family: str = "table1") -> subprocess.CompletedProcess:
    """`relaxkd sweep` of the tiny demo config, one seed."""
    return relaxkd("sweep", REPO / "configs" / "demo.yaml", *tiny_overrides(root), "seeds=[0]", SMALL, "--family", family,
                   *extra, cwd=cwd)


def built(run_dir: Path) -> list[str]:
    """Every artifact a job of this run built, once per build, from the job logs ('computing -> <path>')."""
    found = []
    for log in sorted((run_dir / "jobs" / "logs").glob("*.log")):
        found += [Path(p).name for p in re.findall(r"computing -> (\S+)", log.read_text())]
    return found


def student_metrics(run_dir: Path, family: str = "table1") -> dict[str, dict]:
    record = json.loads((run_dir / f"sweep-{family}.json").read_text())
    return {trial: json.loads((Path(entry["artifacts"]["distill"]) / "metrics.json").read_text())
            for trial, entry in record.items() if "distill" in entry["artifacts"]}


def sacct_jobs() -> dict[str, dict[str, str]]:
    """The job-completion log through `sacct -c`: job id -> State, Eligible, Start, End (the last run of a requeued job)."""
    out = subprocess.run(["sacct", "-c", "-n", "-P", "-o", "JobID,State,Eligible,Start,End"], capture_output=True, text=True,
                         check=True).stdout
    return {row[0]: dict(zip(("State", "Eligible", "Start", "End"), row[1:])) for row in
            (line.split("|") for line in out.splitlines() if line.strip())}


@pytest.fixture(scope="module")
def inline_table1(tmp_path_factory):
    """The reference: table 1 of the tiny config swept inline (one process)."""
    root = tmp_path_factory.mktemp("inline")
    done = sweep(root / "runs", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "runs" / "demo"


def test_table1_on_slurm_equals_inline_each_artifact_built_once_in_dependency_order(cluster, inline_table1, tmp_path):
    done = sweep(tmp_path / "runs", "--launcher", "slurm", "--wait", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "demo"
    slurm, inline = student_metrics(run_dir), student_metrics(inline_table1)
    assert len(inline) >= 6 and set(slurm) == set(inline)
    for trial in inline:  # same seeds, same artifacts: bit-identical metrics
        assert {k: v for k, v in slurm[trial].items() if isinstance(v, float)} == \
               {k: v for k, v in inline[trial].items() if isinstance(v, float)}, trial
    names = built(run_dir)
    assert sorted(names) == sorted(set(names))  # each artifact built by exactly one job
    record = json.loads((run_dir / "jobs" / "launch.json").read_text())["jobs"]
    artifacts = {name for name in record if name != "report-table1"}
    assert set(names) == artifacts  # every job built its own artifact; the report job built none
    assert "computing" not in (run_dir / "jobs" / "logs" / "report-table1.log").read_text()
    # SLURM held each job until the jobs of its inputs had ended (afterok): sacct's eligible times
    jobs, ids = sacct_jobs(), {name: r["job_id"] for name, r in record.items()}
    for name, entry in record.items():
        for dep in entry["deps"]:
            assert jobs[ids[name]]["Eligible"] >= jobs[ids[dep]]["End"] and jobs[ids[name]]["State"] == "COMPLETED"
    assert len(record["report-table1"]["deps"]) == len(artifacts)
    again = sweep(tmp_path / "runs", "--launcher", "slurm", "--wait", cwd=tmp_path)
    assert again.returncode == 0 and "1 job(s) submitted (0 training)" in again.stdout, again.stdout
    assert sorted(built(run_dir)) == sorted(names)  # nothing built a second time
    status = relaxkd("status", run_dir, cwd=tmp_path)
    assert status.returncode == 0 and f"{len(record)} done" in status.stdout


def test_table1_local_launcher_gives_the_same_report(inline_table1, tmp_path):
    done = sweep(tmp_path / "runs", "--launcher", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "demo"
    assert (run_dir / "report" / "report.md").read_text() == (inline_table1 / "report" / "report.md").read_text()
    assert sorted(built(run_dir)) == sorted(set(built(run_dir)))


def test_two_sweeps_sharing_teachers_submitted_at_once_build_each_teacher_once(cluster, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "relaxkd", "sweep", str(REPO / "configs" / "demo.yaml"), *tiny_overrides(tmp_path / "runs"),
            "seeds=[0]", SMALL, "--family", "table1", "--launcher", "slurm", "--wait"]
    # and an inline sweep at the same moment: it shares no launch record with them, only the store's build locks
    inline = [a for a in argv if a not in ("--launcher", "slurm", "--wait")] + ["--trials", "vanilla-kd"]
    sweeps = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for command in ([*argv, "--trials", "vanilla-kd,ensemble-kd"], [*argv, "--trials", "dkd,zscore-kd"], inline)]
    results = [s.communicate(timeout=900) for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0, 0], [out[-2000:] + err[-2000:] for out, err in results]
    names = built(tmp_path / "runs" / "demo") + [Path(p).name for p in re.findall(r"computing -> (\S+)", results[2][1])]
    teachers = [n for n in names if n.startswith("teacher-unimodal-")]
    assert len(teachers) == 3 and len(set(teachers)) == 3  # T1s, T2w, T3s: each built once for both sweeps
    assert sorted(names) == sorted(set(names))
    assert len(student_metrics(tmp_path / "runs" / "demo")) == 4


def test_status_of_a_running_and_of_a_failed_graph(cluster, tmp_path):
    bad = tmp_path / "bad-weights.pt"
    bad.write_bytes(b"not a checkpoint")
    done = sweep(tmp_path / "runs", f"unimodal.weights={bad}", "--trials", "vanilla-kd", "--launcher", "slurm", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "runs" / "demo"
    running = relaxkd("status", run_dir, cwd=tmp_path)  # just submitted: queued or running, nothing failed yet
    assert running.returncode == 0 and re.search(r"\d+ (queued|running)", running.stdout), running.stdout
    waited = relaxkd("status", run_dir, "--wait", cwd=tmp_path)
    assert waited.returncode == 1
    record = json.loads((run_dir / "jobs" / "launch.json").read_text())["jobs"]
    teacher = next(name for name in record if name.startswith("teacher-unimodal-"))
    assert f"error: {teacher}: failed" in waited.stderr and record[teacher]["log"] in waited.stderr
    assert re.search(r"cancelled \(an input failed\) +distill-", waited.stdout), waited.stdout
    assert "error: report-table1" in waited.stderr


def test_a_student_on_two_devices_is_one_two_task_job_under_srun(cluster, tmp_path, monkeypatch):
    """trainer.devices=2 (CPU DDP here, GPUs on a cluster): one job of two tasks, ranks from SLURM's environment."""
    from relaxkd.launch import launch
    from relaxkd.launch.jobs import JobSpec
    from relaxkd.launch.status import graph_status
    from relaxkd.launch.status import wait as wait_for_end
    from relaxkd.launcher_config import SlurmSettings

    monkeypatch.setenv("PYTHONPATH", str(REPO / "src"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = [sys.executable, "-m", "relaxkd", "distill", str(REPO / "configs" / "demo.yaml"), *tiny_overrides(tmp_path / "runs"),
            "distill.loss=none", "distill.teachers=[]", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    run_dir = tmp_path / "runs" / "demo"
    settings = SlurmSettings(resources={"default": {"gpus": 0, "cpus": 1, "mem": "3G", "time": "20"}})
    launch([JobSpec("student", "distill", argv, tasks=2)], run_dir, settings, "slurm", print)
    assert [s.state for s in wait_for_end(run_dir, print, poll=2)] == ["done"]
    log = (run_dir / "jobs" / "logs" / "student.log").read_text()
    assert "#SBATCH --ntasks-per-node=2" in (run_dir / "jobs" / "scripts" / "student.sh").read_text()
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert len(list(run_dir.glob("distill-*/metrics.json"))) == 1 and graph_status(run_dir)[0].state == "done"


def test_run_with_the_local_launcher_equals_the_inline_run(tmp_path):
    """`relaxkd run`: the experiment's own graph (here one teacher and the student), then its report."""
    small = ["distill.teachers=[strong]", "distill.loss=kd", SMALL]
    for launcher, root in (("inline", tmp_path / "inline"), ("local", tmp_path / "local")):
        done = relaxkd("run", REPO / "configs" / "demo.yaml", *tiny_overrides(root), *small, "--launcher", launcher, cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    local, inline = tmp_path / "local" / "demo", tmp_path / "inline" / "demo"
    assert sorted(built(local)) == sorted(p.name for p in inline.iterdir() if p.name.startswith(("teacher-", "distill-")))
    assert (local / "report" / "report.md").read_text() == (inline / "report" / "report.md").read_text()
