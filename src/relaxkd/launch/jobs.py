"""A run's job graph as files: one batch script per job and the launch record ``<run_dir>/jobs/launch.json``.

The same script runs under SLURM (``sbatch``: its ``#SBATCH`` lines ask for the stage kind's
resources) and on this machine (``--launcher local``: ``bash`` runs it). It starts the command in
the background so that the batch shell can answer SLURM's signal before the time limit: it stops
the command with SIGTERM (the command line's own stop: the last epoch checkpoint is kept), asks
SLURM to requeue the job, and the requeued job resumes from that checkpoint.
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from relaxkd.artifacts import ArtifactStore, make_dir, write_json
from relaxkd.buildlock import BuildLock
from relaxkd.launcher_config import SlurmSettings

#: the signal SLURM sends the batch shell before the time limit (``--signal=B:USR1@seconds``)
REQUEUE_SIGNAL = "USR1"


def trains(kind: str) -> bool:
    """Whether a job's stage trains with Lightning (its record says so): the only jobs that become
    multi-task jobs under ``srun``."""
    from relaxkd.stages.graph import STAGES

    return kind in STAGES and STAGES[kind].trains


@dataclass
class JobSpec:
    """One job: it builds one artifact (``path``), or writes the report (``path`` None)."""

    #: the artifact directory's name (``<stage>-<key>``), or ``report``
    name: str
    #: the stage kind whose resources it asks for
    kind: str
    #: the command it runs
    argv: list[str]
    #: the jobs (by name) whose success it waits for
    deps: list[str] = field(default_factory=list)
    path: str | None = None
    #: processes per node and nodes (trainer.devices / trainer.num_nodes of a training stage)
    tasks: int = 1
    nodes: int = 1


@dataclass
class JobRecord:
    """A submitted (or run) job, as the launch record keeps it."""

    name: str
    kind: str
    deps: list[str]
    path: str | None
    script: str
    log: str
    launcher: str
    job_id: str | None = None
    #: the local launcher's own account of the job: queued, running, done, failed, cancelled
    state: str | None = None
    submitted: str = ""


class LaunchFolder:
    """``<run_dir>/jobs``: scripts, logs and the record of every job launched for this run."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "jobs"
        self.record_path = self.root / "launch.json"

    def prepare(self) -> None:
        for sub in ("scripts", "logs", "configs"):
            make_dir(self.root / sub, "run_root")

    def lock(self) -> BuildLock:
        """Held while a launcher reads and extends the record (two sweeps submitted at once)."""
        return BuildLock(self.root / "launch.lock")

    def records(self) -> dict[str, JobRecord]:
        try:
            data = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {}
        return {name: JobRecord(**entry) for name, entry in data.get("jobs", {}).items()}

    def save(self, records: dict[str, JobRecord]) -> None:
        write_json(self.record_path, {"jobs": {name: asdict(r) for name, r in records.items()}})

    def update(self, name: str, **changes) -> None:
        records = self.records()
        for key, value in changes.items():
            setattr(records[name], key, value)
        self.save(records)

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def write_script(self, job: JobSpec, settings: SlurmSettings) -> Path:
        path = self.root / "scripts" / f"{job.name}.sh"
        path.write_text(render_script(job, settings, self.log_path(job.name), Path.cwd()))
        return path


def artifact_done(path: str | None) -> bool:
    """Whether ``path`` holds a whole artifact (manifest intact and complete; files not re-hashed)."""
    if path is None:
        return False
    return ArtifactStore(Path(path).parent).check(Path(path), verify=False)[0] is not None


def sbatch_lines(job: JobSpec, settings: SlurmSettings, log: Path) -> list[str]:
    """The ``#SBATCH`` options of ``job``: its kind's resources, the settings' account/partition, requeue."""
    res = settings.resources_for(job.kind)
    options = [f"--job-name=relaxkd-{job.name}", f"--output={log}", "--open-mode=append", "--requeue",
               f"--signal=B:{REQUEUE_SIGNAL}@{settings.signal_seconds}", f"--time={res.time}", f"--mem={res.mem}",
               f"--nodes={job.nodes}", f"--cpus-per-task={res.cpus}"]
    if job.tasks > 1 or job.nodes > 1:
        options.append(f"--ntasks-per-node={job.tasks}")
    if res.gpus:
        options.append(f"--gpus-per-node={max(res.gpus, job.tasks)}")
    for flag, value in (("--partition", settings.partition), ("--account", settings.account), ("--qos", settings.qos)):
        if value:
            options.append(f"{flag}={value}")
    return [f"#SBATCH {option}" for option in [*options, *settings.sbatch_args]]


def render_script(job: JobSpec, settings: SlurmSettings, log: Path, cwd: Path) -> str:
    command = shlex.join(job.argv)
    launch = "srun " if job.tasks > 1 or job.nodes > 1 else ""
    return "\n".join([
        "#!/bin/bash",
        *sbatch_lines(job, settings, log),
        "# written by relaxkd: one job of the run's graph (see README, 'On a cluster')",
        "set -u",
        f"cd {shlex.quote(str(cwd))}",
        f'echo "[relaxkd] job ${{SLURM_JOB_ID:-local}} (restart ${{SLURM_RESTART_COUNT:-0}}) on $(hostname): {job.name}"',
        "requeue() {",
        '    echo "[relaxkd] time limit near: stopping at the last checkpoint and requeueing"',
        '    kill -TERM "$child" 2>/dev/null; wait "$child"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        "    exit 0",
        "}",
        f"trap requeue {REQUEUE_SIGNAL}",
        f"{launch}{command} &",
        "child=$!",
        'wait "$child"',
        "exit $?",
        "",
    ])


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
