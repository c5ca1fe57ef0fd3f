"""Ctrl-C and SIGTERM through the real CLI (docs/errors.md, "Interruptions").

Each test starts `relaxkd` in a subprocess on the tiny demo, stops it at a named point (see HOOK),
sends SIGINT or SIGTERM there, and checks that the process says one line and exits with 130 or
143, that no temporary directory is left and every committed artifact is intact, and that the
same command then resumes (training from its last checkpoint) and succeeds.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli_helpers import RunSnapshot
from conftest import REPO, tiny_overrides

CONFIG = REPO / "configs" / "demo.yaml"
PAUSED = "[test-hook] paused at "
LINES = {
    signal.SIGINT: "interrupted: completed artifacts are kept; rerun the same command to resume",
    signal.SIGTERM: "terminated (SIGTERM): completed artifacts are kept; rerun the same command to resume",
}

# Runs in the child in place of `python -m relaxkd`; RELAXKD_TEST_PAUSE names where it stops:
#   startup        inside load_config (before any work)
#   build:<stage>  once the stage's first tensor file is in its temporary directory
#   fit:<stage>    after the first epoch's checkpoint of a fit of <stage> that starts from scratch
HOOK = r'''
import os, sys, time
from pathlib import Path

def pause(where):
    print(f"[test-hook] paused at {where}", file=sys.stderr, flush=True)
    while True:
        time.sleep(60)

kind, _, stage = os.environ.get("RELAXKD_TEST_PAUSE", "").partition(":")
if kind == "startup":
    import relaxkd.config as config
    load = config.load_config

    def paused_load(*args, **kwargs):
        cfg = load(*args, **kwargs)
        pause("load_config")
    config.load_config = paused_load
elif kind == "build":
    import safetensors.torch as st  # before any stage module imports save_file from it
    save = st.save_file

    def paused_save(tensors, filename, *args, **kwargs):
        save(tensors, filename, *args, **kwargs)
        if f"/.tmp-{stage}-" in str(filename):
            pause(filename)
    st.save_file = paused_save
elif kind == "fit":
    import relaxkd.engine.trainer as trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    fresh, fit, save = [], trainer.fit, ModelCheckpoint._save_checkpoint

    def watched_fit(tr, module, data, work_dir):
        work_dir = Path(work_dir)
        if not fresh and work_dir.name.startswith(stage + "-") and not (work_dir / "checkpoints" / "last.ckpt").exists():
            fresh.append(work_dir)
        return fit(tr, module, data, work_dir)

    def watched_save(self, tr, filepath):
        save(self, tr, filepath)
        if fresh and Path(filepath).parent.parent == fresh[0]:
            pause(filepath)

    trainer.fit, ModelCheckpoint._save_checkpoint = watched_fit, watched_save
from relaxkd.cli import main

sys.argv = ["relaxkd", *sys.argv[1:]]
main()
'''


def env(pause: str | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("RELAXKD_TEST_PAUSE", None)
    if pause:
        env["RELAXKD_TEST_PAUSE"] = pause
    return env


def command(root: Path, *args: str) -> list[str]:
    """``relaxkd SUBCOMMAND CONFIG <tiny overrides> EXTRA``; ``args`` = subcommand words, then extras."""
    words = 2 if args[:1] == ("embed",) else 1
    return [*args[:words], str(CONFIG), *tiny_overrides(root), *args[words:]]


def signalled(root: Path, args: list[str], pause: str, signum: int, timeout: float = 300) -> tuple[int, str]:
    """Run ``relaxkd ARGS`` with the hook, send ``signum`` once it pauses; (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-c", HOOK, *args], env=env(pause), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith(PAUSED):
                proc.send_signal(signum)
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    text = "".join(lines)
    assert PAUSED in text, text
    return proc.returncode, text


def rerun(root: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relaxkd", *args], env=env(), capture_output=True, text=True, timeout=600)


def assert_stopped(code: int, err: str, signum: int) -> None:
    """The documented line last, exit 128 + signal, no traceback."""
    assert code == 128 + signum, err
    assert "Traceback" not in err, err
    assert err.rstrip("\n").splitlines()[-1] == LINES[signum], err


CASES = {
    # id: (command, pause point, what the rerun must say)
    "embedding": (["embed", "images"], "build:embed-images", None),
    "teacher": (["teacher", "--kind", "unimodal"], "fit:teacher-unimodal", "resuming from checkpoint"),
    "distill": (["distill", "distill.teachers=[strong]"], "fit:distill", "resuming from checkpoint"),
    "sweep": (
        ["sweep", "--family", "table1", "--trials", "no-kd", "sweep_students=true"],
        "fit:distill",
        "resuming from checkpoint",
    ),
}
#: the default suite sends each signal once into training (what Lightning used to misreport); the
#: whole matrix (each signal at each point, a few minutes on two cores) is marked slow
FAST = {("teacher", signal.SIGINT), ("distill", signal.SIGTERM)}


def _params():
    for name, (args, pause, resumed) in CASES.items():
        for signum, sig in ((signal.SIGINT, "sigint"), (signal.SIGTERM, "sigterm")):
            marks = () if (name, signum) in FAST else (pytest.mark.slow,)
            yield pytest.param(args, pause, resumed, signum, id=f"{name}-{sig}", marks=marks)


@pytest.mark.parametrize(("args", "pause", "resumed", "signum"), list(_params()))
def test_signal_during_a_stage_says_one_line_exits_128_plus_signal_and_the_rerun_resumes(tmp_path, args, pause, resumed, signum):
    root = tmp_path / "runs"
    full = command(root, *args)
    code, err = signalled(root, full, pause, signum)
    assert_stopped(code, err, signum)
    assert not list(root.rglob(".tmp-*")), "the interrupted stage left its temporary directory"
    kept = RunSnapshot.of(root)  # artifacts completed before the signal (e.g. the teacher of distill)
    again = rerun(root, full)
    assert again.returncode == 0, again.stderr
    if resumed:
        assert resumed in again.stderr, again.stderr
    kept.check()  # reused as they were, not rebuilt


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_at_start_up_writes_nothing(tmp_path, signum):
    root = tmp_path / "runs"
    code, err = signalled(root, command(root, "run"), "startup", signum)
    assert_stopped(code, err, signum)
    assert not root.exists()


#: modules imported after cli.py installs its start-up handler: a traceback through one of them means
#: Ctrl-C met Python's default handler where relaxkd's should have answered
AFTER_HANDLER = ("click", "typer", "relaxkd/errors.py", "relaxkd/versions.py", "relaxkd/commands.py", "torch")

#: A script named ``relaxkd`` (the name cli.py looks for) that stops just before cli.py imports its
#: commands, i.e. after the start-up handler is installed and while the heavy imports run.
IMPORT_HOOK = r'''
import sys, time

class PauseAtCommands:
    def find_spec(self, name, path=None, target=None):
        if name == "relaxkd.commands":
            print("[test-hook] paused at import relaxkd.commands", file=sys.stderr, flush=True)
            while True:
                time.sleep(60)

sys.meta_path.insert(0, PauseAtCommands())
from relaxkd.cli import main
main()
'''


def _ctrl_c_as_in_a_terminal() -> None:
    """The child's SIGINT at its default. A job started in the background (``cmd &`` without job
    control, nohup, some CI runners) inherits SIGINT ignored, and relaxkd, like any program, then
    leaves it ignored during start-up: the test would send a Ctrl-C nobody listens to."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_imports_is_the_documented_line(tmp_path):
    """Ctrl-C while relaxkd imports its commands (typer, ...): deterministic, whatever the machine's load."""
    script = tmp_path / "relaxkd"
    script.write_text(IMPORT_HOOK)
    proc = subprocess.Popen(
        [sys.executable, str(script), "validate", str(CONFIG)],
        env=env(),
        preexec_fn=_ctrl_c_as_in_a_terminal,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(300, proc.kill)  # a child that never pauses fails the test, never hangs it
    watchdog.start()
    try:
        first = proc.stderr.readline()
        assert first.startswith(PAUSED), first
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_stopped(proc.returncode, first + err, signal.SIGINT)


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0])
def test_ctrl_c_at_any_moment_of_the_console_script(delay):
    """The real console script, interrupted after ``delay`` s. How far a loaded machine got by then is
    not the test's business: every moment has an accepted outcome."""
    entry = Path(sys.executable).with_name("relaxkd")
    proc = subprocess.Popen([str(entry), "validate", str(CONFIG)], env=env(), preexec_fn=_ctrl_c_as_in_a_terminal,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # finished before the signal came
        return
    if proc.returncode in (-signal.SIGINT, 1):
        # before cli.py installed its handler: Python's own behaviour (killed by SIGINT, or a
        # KeyboardInterrupt traceback through the interpreter's start-up and relaxkd's first lines)
        assert not [m for m in AFTER_HANDLER if m in err], err
        assert "Traceback" not in err or err.rstrip("\n").splitlines()[-1] == "KeyboardInterrupt", err
        return
    assert_stopped(proc.returncode, err, signal.SIGINT)
