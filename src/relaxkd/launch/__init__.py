"""Dispatch a run's or a sweep's job graph: to SLURM (``--launcher slurm``) or through the same scripts
on this machine (``--launcher local``).

One job per artifact still missing, each waiting (``afterok``) for the jobs of its inputs, the report
last; artifacts on disk get no job, and a job of an earlier launch still queued or running is waited
for instead of submitted again. The record (``<run_dir>/jobs/launch.json``) is what ``relaxkd status``
reads.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from relaxkd.artifacts import stable_hash
from relaxkd.launch import slurm
from relaxkd.launch.jobs import JobRecord, JobSpec, LaunchFolder, artifact_done, now, trains
from relaxkd.launcher_config import SlurmSettings


def launch(jobs: list[JobSpec], run_dir: Path, settings: SlurmSettings, launcher: str,
           say: Callable[[str], None]) -> list[str]:
    """Submit (slurm) or run (local) the jobs of ``jobs`` (inputs before their readers) that are
    still needed; returns the names of the jobs submitted or run."""
    folder = LaunchFolder(run_dir)
    folder.prepare()
    with folder.lock():
        records = folder.records()
        waiting_for: dict[str, str] = {}  # job name -> SLURM job id its dependents wait for
        started = []
        for job in jobs:
            if artifact_done(job.path):
                continue
            pending = _still_pending(records.get(job.name), launcher)
            if pending is not None:
                waiting_for[job.name], state = pending
                say(f"{job.name}: already {state} as job {pending[0]}")
                continue
            script = folder.write_script(job, settings)
            record = JobRecord(job.name, job.kind, job.deps, job.path, str(script), str(folder.log_path(job.name)),
                               launcher, submitted=now())
            if launcher == "slurm":
                record.job_id = slurm.submit(script, [waiting_for[d] for d in job.deps if d in waiting_for])
                waiting_for[job.name] = record.job_id
                say(f"{job.name}: submitted job {record.job_id} ({job.kind}; log {record.log})")
            else:
                record.state = "queued"
            records[job.name] = record
            started.append(job.name)
        folder.save(records)
    if launcher == "local":
        run_local(folder, started, say)
    return started


def _still_pending(record: JobRecord | None, launcher: str) -> tuple[str, str] | None:
    """``(SLURM job id, state)`` of an earlier launch's job for this artifact that is still queued or running."""
    if launcher != "slurm" or record is None or record.launcher != "slurm" or not record.job_id:
        return None
    state = slurm.job_state(record.job_id)[0]
    return (record.job_id, state) if state in ("queued", "running") else None


def run_local(folder: LaunchFolder, names: list[str], say: Callable[[str], None]) -> None:
    """Run the scripts one after the other on this machine; a job whose input failed is cancelled."""
    for name in names:
        records = folder.records()
        record = records[name]
        broken = [d for d in record.deps if d in records and records[d].state in ("failed", "cancelled")]
        if broken:
            folder.update(name, state="cancelled")
            say(f"{name}: cancelled, its input {broken[0]} failed")
            continue
        folder.update(name, state="running", job_id=f"local-{os.getpid()}")
        say(f"{name}: running (log {record.log})")
        with open(record.log, "ab") as log:
            code = subprocess.run(["bash", record.script], check=False, stdout=log, stderr=subprocess.STDOUT).returncode
        folder.update(name, state="done" if code == 0 else "failed")
        if code != 0:
            say(f"{name}: failed (exit {code}); log {record.log}")


def dispatch(ctx, launcher: str, wait_for_end: bool, report_argv: list[str], say: Callable[[str], None],
             family: str | None = None, trials: str | None = None) -> list[str]:
    """``relaxkd run|sweep --launcher local|slurm``: launch the graph's missing jobs; with ``wait_for_end``
    (always for local, whose jobs have ended on return) block until the graph ends. Returns one line
    per job that failed or was cancelled (none: success, or not waited for)."""
    from relaxkd.launch.graph import graph_nodes, jobs_for
    from relaxkd.launch.status import failed_lines, format_status, wait

    nodes = graph_nodes(ctx, family, trials)
    # one report job per command: two sweeps of one family with different trials each have theirs
    report_name = "report" if family is None else f"report-{family}" + (f"-{stable_hash(trials)[:6]}" if trials else "")
    jobs = jobs_for(ctx, nodes, report_name, report_argv)
    started = launch(jobs, ctx.cfg.run_dir, ctx.cfg.launcher.slurm, launcher, say)
    kinds = {job.name: job.kind for job in jobs}
    trained = [name for name in started if trains(kinds[name])]
    say(f"{len(started)} job(s) {'run' if launcher == 'local' else 'submitted'} ({len(trained)} training), "
        f"{len(jobs) - len(started)} artifact(s) on disk or already queued; `relaxkd status {ctx.cfg.run_dir}` shows them")
    if not (wait_for_end or launcher == "local"):
        return []
    statuses = wait(ctx.cfg.run_dir, say)
    for line in format_status(statuses):
        say(line)
    return failed_lines(statuses)
