"""SLURM through its own commands: ``sbatch`` with ``afterok`` dependencies, and a job's state.

SLURM orders the jobs, cancels the dependents of a failed one (``--kill-on-invalid-dep=yes``) and
requeues a job that asks for it; nothing here schedules.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from relaxkd.errors import UserError

#: SLURM job states -> the states ``relaxkd status`` shows
STATES = {
    "PENDING": "queued", "CONFIGURING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued",
    "REQUEUE_FED": "queued", "RESV_DEL_HOLD": "queued", "SUSPENDED": "queued", "PREEMPTED": "queued",
    "RUNNING": "running", "COMPLETING": "running", "STAGE_OUT": "running", "SIGNALING": "running", "RESIZING": "running",
    "COMPLETED": "done",
    "CANCELLED": "cancelled",
    "FAILED": "failed", "TIMEOUT": "failed", "OUT_OF_MEMORY": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed",
    "DEADLINE": "failed", "SPECIAL_EXIT": "failed", "REVOKED": "failed",
}


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    if shutil.which(argv[0]) is None:
        raise UserError(f"--launcher slurm needs SLURM's `{argv[0]}` on the PATH; run on a cluster's login node "
                        f"or use --launcher local")
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)


def submit(script: Path, after: list[str]) -> str:
    """Submit ``script``; it starts once every job of ``after`` has succeeded (and is cancelled if one fails)."""
    argv = ["sbatch", "--parsable"]
    if after:
        argv += [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
    out = _run([*argv, str(script)])
    if out.returncode != 0:
        raise UserError(f"sbatch refused {script}: {' '.join(out.stderr.split())}")
    return out.stdout.strip().split(";")[0]


def job_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``(state, reason)`` of many jobs with one ``squeue`` (it knows finished jobs for ``MinJobAge``);
    those it has forgotten one by one through :func:`job_state`."""
    found: dict[str, tuple[str, str]] = {}
    if job_ids:
        out = _run(["squeue", "-h", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(job_ids)])
        for line in out.stdout.splitlines() if out.returncode == 0 else []:
            job_id, raw, reason = (line.split("|") + ["", ""])[:3]
            found[job_id] = (STATES.get(raw, "unknown"), reason)
    return {job_id: found.get(job_id) or job_state(job_id) for job_id in job_ids}


def job_state(job_id: str) -> tuple[str, str]:
    """``(state, reason)`` of a job: its SLURM state mapped by :data:`STATES` ('unknown' when SLURM has forgotten it)."""
    out = _run(["scontrol", "show", "job", "-o", job_id])
    if out.returncode == 0 and out.stdout.strip():
        fields = dict(re.findall(r"(\w+)=(\S*)", out.stdout))
        raw = fields.get("JobState", "")
        return STATES.get(raw, "unknown"), fields.get("Reason", "")
    # purged from the controller (MinJobAge): the accounting database, else the job-completion log
    for argv in (["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], ["sacct", "-c", "-n", "-P", "-o", "JobID,State"]):
        out = _run(argv)
        lines = [line.split("|") for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
        if argv[1] == "-c":
            lines = [row[1:] for row in lines if row[0] == job_id]
        if lines:
            raw = lines[-1][0].split()[0]
            return STATES.get(raw, "unknown"), ""
    return "unknown", ""


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _run(["scancel", *job_ids])
