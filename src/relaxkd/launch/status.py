"""``relaxkd status RUN_DIR``: the state of every job of a run's launched graph, and waiting for its end."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from relaxkd.buildlock import pid_alive
from relaxkd.errors import UserError
from relaxkd.launch import slurm
from relaxkd.launch.jobs import JobRecord, LaunchFolder, artifact_done

ACTIVE = ("queued", "running")


@dataclass
class JobStatus:
    name: str
    kind: str
    state: str
    job_id: str
    log: str
    reason: str = ""


def graph_status(run_dir: Path) -> list[JobStatus]:
    folder = LaunchFolder(run_dir)
    records = folder.records()
    if not records:
        raise UserError(f"{run_dir} has no launched jobs ({folder.record_path} is missing); "
                        f"start them with `relaxkd run|sweep ... --launcher slurm`")
    done = {name for name, r in records.items() if artifact_done(r.path)}
    asked = [r.job_id for name, r in records.items() if r.launcher == "slurm" and r.job_id and name not in done]
    states = slurm.job_states(asked)
    return [_status(r, states, name in done) for name, r in records.items()]


def _status(record: JobRecord, states: dict[str, tuple[str, str]], done: bool) -> JobStatus:
    reason = ""
    if done:
        state = "done"
    elif record.launcher == "slurm":
        state, reason = states.get(record.job_id or "", ("unknown", ""))
        if state == "done" and record.path is not None:  # the job ended well but left no artifact
            state, reason = "failed", "no artifact"
    else:
        state = record.state or "unknown"
        runner = (record.job_id or "").removeprefix("local-")
        if state == "running" and runner.isdigit() and not pid_alive(int(runner)):
            state, reason = "failed", "the local launcher stopped"
    if state == "cancelled" and "Dependency" in reason:
        reason = "an input failed"
    return JobStatus(record.name, record.kind, state, record.job_id or "-", record.log, reason)


def format_status(statuses: list[JobStatus]) -> list[str]:
    lines = []
    for s in statuses:
        why = f" ({s.reason})" if s.reason and s.reason not in ("None", "Dependency", "Resources", "Priority") else ""
        lines.append(f"{s.state + why:<28} {s.name:<44} job {s.job_id:<10} log {s.log}")
    counts = {state: sum(s.state == state for s in statuses) for state in dict.fromkeys(s.state for s in statuses)}
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items()))
    return lines


def failed_lines(statuses: list[JobStatus]) -> list[str]:
    return [f"{s.name}: {s.state}{f' ({s.reason})' if s.reason else ''}; log {s.log}"
            for s in statuses if s.state in ("failed", "cancelled", "unknown")]


def wait(run_dir: Path, say: Callable[[str], None], poll: float = 5.0) -> list[JobStatus]:
    """Block until no job is queued or running, saying each change of state; the final states."""
    seen: dict[str, str] = {}
    while True:
        statuses = graph_status(run_dir)
        for s in statuses:
            if seen.get(s.name) != s.state:
                seen[s.name] = s.state
                say(f"{s.name}: {s.state}" + (f" (job {s.job_id})" if s.job_id != "-" else ""))
        if not any(s.state in ACTIVE for s in statuses):
            return statuses
        time.sleep(poll)
