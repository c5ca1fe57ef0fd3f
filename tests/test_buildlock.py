"""The per-artifact build lock (buildlock.py): one builder per key across processes and hosts."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from relaxkd.buildlock import BuildLock, read_holder

from conftest import REPO

RACER = """
import os, sys, time
from pathlib import Path
from relaxkd.config import load_config
import relaxkd.stages.context as context
from relaxkd.stages.context import Context

repo, runs, counter, ready = sys.argv[1:5]
ctx = Context(load_config(Path(repo) / "configs" / "demo.yaml", [f"run_root={runs}", f"cache_root={runs}/_shared"]))
waiting = Path(ready).parent / "waiting"
say = context.log

def log(line):  # the waiter says so, then the builder may finish (no race with a loaded machine)
    say(line)
    if "waiting for it" in line:
        waiting.touch()

context.log = log

def build(out):
    with open(counter, "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    deadline = time.monotonic() + 100
    while not waiting.exists() and time.monotonic() < deadline:  # hold the lock until the other process waits on it
        time.sleep(0.05)
    (out / "result.txt").write_text("built once")

Path(ready, str(os.getpid())).touch()
while len(os.listdir(ready)) < 2:  # both processes ask at the same moment
    time.sleep(0.01)
print(ctx.resolve(ctx.store, "race", {"n": 1}, build).path)
"""


def test_two_processes_racing_for_one_key_build_it_once(tmp_path):
    runs, counter = tmp_path / "runs", tmp_path / "builds.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    ready = tmp_path / "ready"
    ready.mkdir()
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(REPO), str(runs), str(counter), str(ready)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [r.communicate(timeout=120) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], [err for _, err in results]
    assert len(counter.read_text().splitlines()) == 1  # one build
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1 and (Path(paths.pop()) / "result.txt").read_text() == "built once"
    logs = "".join(err for _, err in results)
    assert "being built by" in logs and "waiting for it" in logs  # the other waited, then reused
    assert "race: reusing" in logs
    assert [p.name for p in runs.rglob(".locks/*")] == []  # released, no private link files left


def _lock_file(path: Path, host: str, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "old"}))


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = tmp_path / "locks" / "stage-key.lock"
    _lock_file(path, socket.gethostname(), dead.pid)
    started = time.monotonic()
    with BuildLock(path, heartbeat=0.1, stale_after=60) as lock:
        assert time.monotonic() - started < 5
        assert read_holder(path)["token"] == lock.token and read_holder(path)["pid"] == os.getpid()
    assert not path.exists()


def test_a_lock_of_another_host_is_taken_over_once_its_heartbeat_stops(tmp_path):
    path = tmp_path / "stage-key.lock"
    _lock_file(path, "another-node", 1)  # PID 1 is alive here, but the host is not ours
    waits = []
    started = time.monotonic()
    with BuildLock(path, on_wait=waits.append, heartbeat=0.1, stale_after=1.0):
        waited = time.monotonic() - started
    assert 1.0 <= waited < 10
    assert waits and "another-node" in waits[0]


def test_a_live_holder_whose_heartbeat_moves_is_never_taken_over(tmp_path):
    path = tmp_path / "stage-key.lock"
    holder = BuildLock(path, heartbeat=0.05, stale_after=0.3)
    holder.acquire()
    first_beat = os.stat(path).st_mtime
    releaser = threading.Timer(1.5, holder.release)  # holds five times longer than the stale limit
    releaser.start()
    started = time.monotonic()
    with BuildLock(path, heartbeat=0.05, stale_after=0.3) as waiter:
        assert time.monotonic() - started >= 1.4  # waited for the release, took nothing over
        assert read_holder(path)["token"] == waiter.token
    releaser.join()
    assert not path.exists()
    assert first_beat < time.time()


def test_release_leaves_a_lock_that_was_taken_over(tmp_path):
    path = tmp_path / "stage-key.lock"
    slow = BuildLock(path, heartbeat=60, stale_after=60)
    slow.acquire()
    path.unlink()  # as a takeover does (renamed away), then another holder
    _lock_file(path, "another-node", 7)
    slow.release()
    assert read_holder(path)["host"] == "another-node"
