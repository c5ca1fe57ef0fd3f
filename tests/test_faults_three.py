"""Faults and hostile input, round three (docs/errors.md, "Round three"): each probe ends in one line
and exit 2 with committed artifacts intact, or works as documented.

Commands run in this process (`relaxkd(...)`) against the session's committed tiny run, like
test_hostile_inputs.py.
"""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from cli_helpers import ENTRY_POINT, assert_user_error, relaxkd
from conftest import REPO

DEMO = str(REPO / "configs" / "demo.yaml")


# -- a section set to null ----------------------------------------------------------------------
@pytest.mark.parametrize("key", ["data", "trainer", "distill.optim"])
def test_section_set_to_null_names_the_key_and_the_fix(capsys, monkeypatch, run, intact, key):
    expected = f"error: config: {key} is null; remove the override (or the empty key in the config file) to use the defaults"
    for command in (["validate", DEMO, f"{key}=null"], ["embed", "images", DEMO, *run.args, f"{key}=null"]):
        message = assert_user_error(relaxkd(capsys, monkeypatch, *command), intact=intact)
        assert message == expected
        assert "Config" not in message  # no internal class names (DataConfig, TrainerConfig, OptimConfig)


def test_section_set_to_a_plain_value_says_it_needs_keys(capsys, monkeypatch):
    message = assert_user_error(relaxkd(capsys, monkeypatch, "validate", DEMO, "unimodal.optim=[1]"))
    assert message == "error: config: unimodal.optim must be a section of keys (e.g. unimodal.optim: {key: value}), not list"


# -- a pipe or device as the config -------------------------------------------------------------
def test_config_from_a_fifo_is_read(capsys, monkeypatch, tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    text = Path(DEMO).read_text() + "seed: 7\n"
    writer = threading.Thread(target=fifo.write_text, args=(text,))
    writer.start()
    result = relaxkd(capsys, monkeypatch, "validate", fifo)
    writer.join(timeout=30)
    assert result.code == 0, result.err
    resolved = yaml.safe_load(result.out)
    assert resolved["seed"] == 7 and resolved["name"] == "demo"  # the file's own name; never 'config' from the pipe


def test_config_from_stdin_and_process_substitution(tmp_path):
    """`relaxkd validate /dev/stdin < C` and `relaxkd validate <(cat C)` through the real console script."""
    text = "seed: 3\ndistill:\n  temperature: 2.5\n"
    piped = subprocess.run([str(ENTRY_POINT), "validate", "/dev/stdin"], input=text, capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
    assert piped.returncode == 0, piped.stderr
    resolved = yaml.safe_load(piped.stdout)
    assert (resolved["seed"], resolved["distill"]["temperature"], resolved["name"]) == (3, 2.5, "experiment")
    substituted = subprocess.run(["bash", "-c", f'"{ENTRY_POINT}" validate <(cat "{DEMO}") seed=4'], capture_output=True,
                                 text=True, cwd=tmp_path, timeout=120)
    assert substituted.returncode == 0, substituted.stderr
    assert yaml.safe_load(substituted.stdout)["seed"] == 4


def test_config_that_is_a_socket_is_not_a_regular_file(capsys, monkeypatch):
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # socket paths must stay under ~100 bytes
        path = Path(folder) / "c.sock"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
            result = relaxkd(capsys, monkeypatch, "validate", path)
    message = assert_user_error(result)
    assert message == (f"error: config file '{path}' is not a regular file (a socket or block device); "
                       "pass a YAML file such as configs/demo.yaml")


def test_endless_device_as_config_stops_at_the_size_limit(capsys, monkeypatch):
    assert_user_error(relaxkd(capsys, monkeypatch, "validate", "/dev/zero"),
                      "error: config file '/dev/zero' is larger than 1024 KiB; a config is a few KiB")


# -- `~` in every path setting ------------------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


def test_tilde_is_expanded_in_every_path_setting(capsys, monkeypatch, home):
    keys = ["run_root", "cache_root", "data.root", "data.synset_overrides", "clip.weights", "unimodal.weights",
            "multimodal.weights"]
    from relaxkd.config import load_config

    cfg = load_config(DEMO, [f"{key}=~/x/{key}" for key in keys])
    for key in keys:
        section, _, name = key.rpartition(".")
        value = getattr(getattr(cfg, section) if section else cfg, name)
        assert value == f"{home}/x/{key}", key
    result = relaxkd(capsys, monkeypatch, "validate", DEMO, "run_root=~/runs")
    assert yaml.safe_load(result.out)["run_root"] == f"{home}/runs"


def test_tilde_run_root_and_cache_root_reuse_the_run_under_home(capsys, monkeypatch, run, home):
    """The committed run's artifacts copied under ~ are found there (reused): no folder named '~'
    appears in the working directory."""
    import shutil

    shutil.copytree(run.root, home / "runs")
    args = [a for a in run.args if not a.startswith(("run_root=", "cache_root="))]
    args += ["run_root=~/runs", "cache_root=~/runs/_shared"]
    result = relaxkd(capsys, monkeypatch, "teacher", DEMO, *args, "--kind", "unimodal", "--member", "strong")
    assert result.code == 0, result.err
    assert f"artifact: {home}/runs/demo/teacher-unimodal-" in result.out
    assert "computing" not in result.err  # reused, not retrained
    assert not Path("~").exists()


def test_tilde_in_command_line_paths(capsys, monkeypatch, home):
    (home / "cfg.yaml").write_text(Path(DEMO).read_text())
    result = relaxkd(capsys, monkeypatch, "validate", "~/cfg.yaml")
    assert result.code == 0, result.err
    result = relaxkd(capsys, monkeypatch, "report", "~/no-run")
    assert_user_error(result, f"'{home}/no-run'")
    assert not Path("~").exists()


def test_tilde_of_an_unknown_user_is_refused(capsys, monkeypatch, home):
    message = assert_user_error(relaxkd(capsys, monkeypatch, "validate", DEMO, "run_root=~nosuchuser-x/runs"))
    assert message == ("error: config: run_root: cannot expand '~nosuchuser-x/runs': no home folder is known for it "
                       "(HOME unset or no such user); give the full path (got '~nosuchuser-x/runs')")
