"""A real single-node SLURM cluster for the slow launcher tests (Debian's munge, slurmctld, slurmd).

Everything lives in one folder (config, munge key and socket, state, logs, job-completion file) and
uses its own ports, so it touches neither a system SLURM nor a system munged; ``stop`` ends exactly
the daemons it started, by PID. Needs root (slurmd runs jobs as their user). ``sacct -c`` reads the
job-completion file (``jobcomp/filetxt``: no slurmdbd); ``scontrol show job`` keeps finished jobs
(with their ``Dependency=``) for ``MinJobAge`` seconds.

    python tests/slurm_cluster.py start DIR   # prints `export SLURM_CONF=...`; `stop DIR` ends it
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing_tools() -> list[str]:
    tools = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sacct", "scancel"]
    return [t for t in tools if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512
    return 1024


class SlurmCluster:
    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()
        self.conf = self.folder / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.jobcomp = self.folder / "jobcomp.txt"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _pid_file(self, daemon: str) -> Path:
        return self.folder / f"{daemon}.pid"

    def write_config(self) -> None:
        f = self.folder
        for sub in ("state", "spool", "munge"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(f / "munge", 0o700)
        key = f / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o600)
        cpus = os.cpu_count() or 1
        self.conf.write_text("\n".join([
            "ClusterName=relaxkdtest",
            f"SlurmctldHost={self.node}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={f / 'munge' / 'munge.sock'}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={f / 'state'}",
            f"SlurmdSpoolDir={f / 'spool'}",
            f"SlurmctldPidFile={self._pid_file('slurmctld')}",
            f"SlurmdPidFile={self._pid_file('slurmd')}",
            f"SlurmctldLogFile={f / 'slurmctld.log'}",
            f"SlurmdLogFile={f / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "ReturnToService=2",
            "JobRequeue=1",
            "MinJobAge=3600",
            "KillWait=10",
            "InactiveLimit=0",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp}",
            "SlurmctldParameters=enable_configless",
            f"NodeName={self.node} CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def start(self, timeout: float = 60) -> SlurmCluster:
        self.write_config()
        f = self.folder
        munge = f / "munge"
        self._spawn("munged", ["munged", "--force", f"--socket={munge / 'munge.sock'}", f"--key-file={munge / 'munge.key'}",
                               f"--pid-file={self._pid_file('munged')}", f"--log-file={munge / 'munged.log'}",
                               f"--seed-file={munge / 'munged.seed'}"])
        self._spawn("slurmctld", ["slurmctld", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-f", str(self.conf)])
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], check=False, env=self.env, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"SLURM did not come up in {timeout:.0f}s; see {f}/slurmctld.log and {f}/slurmd.log")

    def _spawn(self, daemon: str, argv: list[str]) -> None:
        """Start a daemon (it forks into the background) and wait for its PID file."""
        pid_file = self._pid_file(daemon)
        pid_file.unlink(missing_ok=True)
        subprocess.run(argv, env=self.env, check=True, capture_output=True, timeout=30)
        deadline = time.time() + 15
        while time.time() < deadline:
            if pid_file.exists() and pid_file.read_text().strip().isdigit():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{daemon} wrote no PID file {pid_file}")

    def stop(self) -> None:
        """End the daemons this cluster started (by the PIDs in its own PID files), slurmd first."""
        for daemon in reversed(DAEMONS):
            pid_file = self._pid_file(daemon)
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.time() + 20
            while time.time() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    def sbatch(self, *args: str) -> str:
        out = subprocess.run(["sbatch", "--parsable", *args], env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip().split(";")[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    action, folder = sys.argv[1], Path(sys.argv[2])
    cluster = SlurmCluster(folder)
    if action == "start":
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
