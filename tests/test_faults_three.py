"""Faults and hostile input, round three (docs/errors.md, "Round three"): each probe ends in one line
and exit 2 with committed artifacts intact, or works as documented.

Commands run in this process (`relaxkd(...)`) against the session's committed tiny run, like
test_hostile_inputs.py.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
import yaml
from PIL import Image

from cli_helpers import ENTRY_POINT, RunSnapshot, assert_user_error, committed_files, relaxkd
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
    piped = subprocess.run([str(ENTRY_POINT), "validate", "/dev/stdin"], check=False, input=text, capture_output=True,
                           text=True, cwd=tmp_path, timeout=120)
    assert piped.returncode == 0, piped.stderr
    resolved = yaml.safe_load(piped.stdout)
    assert (resolved["seed"], resolved["distill"]["temperature"], resolved["name"]) == (3, 2.5, "experiment")
    substituted = subprocess.run(
        ["bash", "-c", f'"{ENTRY_POINT}" validate <(cat "{DEMO}") seed=4'],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
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


# -- export: never into an artifact, one export per folder --------------------------------------
class DistilledRun:
    """A copy of the committed run with a trained student (module-scoped: the session's run stays as it is)."""

    def __init__(self, root: Path, args: list[str]):
        self.root, self.args = root, args

    @property
    def student(self) -> Path:
        return next((self.root / "demo").glob("distill-*"))


@pytest.fixture(scope="module")
def distilled(committed_run, tmp_path_factory) -> DistilledRun:
    import shutil

    from relaxkd.config import load_config
    from relaxkd.stages.context import Context
    from relaxkd.stages.distill import distill

    root = tmp_path_factory.mktemp("distilled") / "runs"
    shutil.copytree(committed_run.root, root)
    args = [a for a in committed_run.args if not a.startswith(("run_root=", "cache_root="))]
    args += [f"run_root={root}", f"cache_root={root / '_shared'}"]
    distill(Context(load_config(DEMO, args)))  # reuses the copied teacher
    return DistilledRun(root, args)


def _intact_artifact(path: Path) -> None:
    from relaxkd.artifacts import ArtifactStore

    manifest, reason = ArtifactStore(path.parent).check(path, verify=True)
    assert manifest is not None, reason


@pytest.mark.parametrize("where", ["distill", "distill/sub", "teacher", "work", "cache"])
def test_export_into_an_artifact_is_refused_and_the_artifact_still_verifies(capsys, monkeypatch, distilled, where):
    from relaxkd.artifacts import ArtifactStore

    shared = ArtifactStore(distilled.root / "_shared", setting="cache_root")
    with shared.create("embed-nouns", {"probe": where}) as tmp:
        (tmp / "embeddings.safetensors").write_bytes(b"x")
    cached = shared.lookup("embed-nouns", {"probe": where})
    run_dir = distilled.root / "demo"
    teacher = next(run_dir.glob("teacher-unimodal-*"))
    out = {"distill": distilled.student, "distill/sub": distilled.student / "sub", "teacher": teacher,
           "work": run_dir / ".work" / "x", "cache": cached.path}[where]
    owner = {"work": run_dir / ".work"}.get(where, out if where != "distill/sub" else distilled.student)
    before = RunSnapshot.of(distilled.root)
    result = relaxkd(capsys, monkeypatch, "export", DEMO, *distilled.args, "--out", out)
    message = assert_user_error(result, intact=before)
    assert message.startswith(f"error: export --out {out} is inside ") and str(owner) in message
    assert message.endswith("pass a folder outside the run's artifacts, e.g. --out export")
    for artifact in (distilled.student, teacher, cached.path):
        _intact_artifact(artifact)
    assert not (distilled.student / "sub").exists()
    # the next run reuses the student: nothing was moved aside or retrained
    again = relaxkd(capsys, monkeypatch, "distill", DEMO, *distilled.args)
    assert again.code == 0, again.err
    assert "computing" not in again.err and f"artifact: {distilled.student}" in again.out
    assert not list(run_dir.glob(".corrupt-*"))


def test_export_replaces_the_previous_export_and_keeps_other_files(capsys, monkeypatch, distilled, tmp_path):
    out = tmp_path / "export"
    first = relaxkd(capsys, monkeypatch, "export", DEMO, *distilled.args, "--out", out, "--format", "torchscript")
    assert first.code == 0, first.err
    assert "replaced" not in first.err
    (out / "notes.txt").write_text("mine")
    second = relaxkd(capsys, monkeypatch, "export", DEMO, *distilled.args, "--out", out, "--format", "onnx")
    assert second.code == 0, second.err
    assert (f"[relaxkd] export: replaced the previous export in {out} (student.json, student.safetensors, "
            "student.torchscript.pt); removed student.torchscript.pt, which this export does not have") in second.err
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.txt", "student.json", "student.onnx",
                                                     "student.safetensors"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["student.json", "student.onnx", "student.safetensors"]
    assert manifest["source"] == str(distilled.student)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(image)
    predicted = relaxkd(capsys, monkeypatch, "predict", image, "--model", out)
    assert predicted.code == 0, predicted.err


def test_export_refuses_a_folder_whose_manifest_it_did_not_write(capsys, monkeypatch, distilled, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "manifest.json").write_text('{"name": "my web app"}')
    result = relaxkd(capsys, monkeypatch, "export", DEMO, *distilled.args, "--out", out)
    assert_user_error(result, f"error: --out {out} holds a manifest.json that `relaxkd export` did not write; "
                              "pass another folder, or move that file away")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


def test_export_out_with_tilde_writes_under_home(capsys, monkeypatch, distilled, home):
    result = relaxkd(capsys, monkeypatch, "export", DEMO, *distilled.args, "--out", "~/exp")
    assert result.code == 0, result.err
    assert (home / "exp" / "student.safetensors").is_file() and not Path("~").exists()


# -- BatchNorm and a last training batch of one sample ------------------------------------------
def test_batch_norm_guard_trains_a_batch_of_one_and_changes_nothing_else():
    import torch

    from relaxkd.engine.batch_norm import guard_single_value_batches

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).train()
    guarded = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).train()
    guarded.load_state_dict(plain.state_dict())
    assert guard_single_value_batches(guarded) == 1 and guard_single_value_batches(guarded) == 1  # once
    batch = torch.randn(5, 4)
    torch.testing.assert_close(guarded(batch), plain(batch), rtol=0, atol=0)  # several values: as before
    torch.testing.assert_close(guarded.state_dict(), plain.state_dict(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        plain(batch[:1])
    bn = guarded[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    one = guarded(batch[:1])
    expected = (guarded[0](batch[:1]) - before["running_mean"]) / torch.sqrt(before["running_var"] + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(one, expected)  # normalised with the running statistics
    one.sum().backward()  # and trains (gradients reach the affine parameters and the layer before)
    assert bn.weight.grad is not None and guarded[0].weight.grad is not None
    assert bn.training and torch.equal(bn.running_mean, before["running_mean"])
    assert int(bn.num_batches_tracked) == int(before["num_batches_tracked"])
    # a 2-D layer over a feature map larger than 1x1 has several values per channel: batch statistics
    conv = torch.nn.BatchNorm2d(2).train()
    guard_single_value_batches(conv)
    conv(torch.randn(1, 2, 3, 3))
    assert int(conv.num_batches_tracked) == 1


def test_training_set_of_one_more_than_a_multiple_of_the_batch_size_trains_every_stage(
    capsys, monkeypatch, committed_run, tmp_path
):
    """18 training images, batch size 17: T_m (a ResNet18 whose last stage is 1x1 at 32 px), T_x with
    batch_norm, and students from online teachers and from cached targets all finish (each used to
    stop at the end of epoch 0 with "Expected more than 1 value per channel")."""
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(committed_run.root, root)
    args = [a for a in committed_run.args if not a.startswith(("run_root=", "cache_root=", "distill.teachers="))]
    one = "{epochs: 1, batch_size: 17, lr: 0.01, warmup_epochs: 0, milestones: []}"
    args += [f"run_root={root}", f"cache_root={root / '_shared'}", "data.image_size=32", "unimodal.arch=resnet18",
             "unimodal.weights=none", f"unimodal.optim={one}", "multimodal.batch_norm=true", f"multimodal.optim={one}",
             "distill.student=resnet18", f"distill.optim={one}", "distill.teachers=[strong, tx]"]
    tx = relaxkd(capsys, monkeypatch, "teacher", DEMO, *args, "--kind", "multimodal")
    assert tx.code == 0, tx.err
    for targets in ("online", "cached"):
        student = relaxkd(capsys, monkeypatch, "distill", DEMO, *args, f"distill.targets={targets}")
        assert student.code == 0, student.err
        assert "distill: top1" in student.out


# -- sweeps: nothing to run, invalid trials -----------------------------------------------------
@pytest.mark.parametrize("before", ["fresh", "after-a-run"])
def test_sweep_whose_students_are_all_left_out_says_so(capsys, monkeypatch, run, intact, tmp_path, before):
    args = list(run.args)
    if before == "fresh":
        args += [f"run_root={tmp_path / 'fresh'}", f"cache_root={tmp_path / 'fresh' / '_shared'}"]
    result = relaxkd(capsys, monkeypatch, "sweep", DEMO, *args, "sweep_students=false", "--family", "table1")
    assert assert_user_error(result, intact=intact) == (
        "error: sweep table1: sweep_students=false leaves out the student of every selected trial, and these trials "
        "train nothing else; set sweep_students=true, or list the trials whose students train (e.g. sweep_students=[table1/*])")
    assert not committed_files(tmp_path / "fresh")  # at most the run directory's lock file
    patterns = relaxkd(
        capsys, monkeypatch, "sweep", DEMO, *args, "sweep_students=[table2/*]", "--family", "table1", "--trials", "no-kd"
    )
    assert assert_user_error(patterns, intact=intact).startswith("error: sweep table1: sweep_students=[table2/*] leaves out")


def test_run_warns_when_sweep_students_leaves_a_sweep_nothing(capsys, tiny_cfg):
    from relaxkd.stages.context import Context
    from relaxkd.stages.plan import sweep_steps

    tiny_cfg.sweep_students = False
    capsys.readouterr()
    assert sweep_steps(Context(tiny_cfg), "table1") == []
    assert (
        "[relaxkd] warning: sweep table1: sweep_students=false leaves out the student of every selected trial"
        in capsys.readouterr().err
    )
    tiny_cfg.sweep_students = ["table1/no-kd"]
    assert {step.name.split(" seed")[0] for step in sweep_steps(Context(tiny_cfg), "table1")} == {"table1 no-kd"}


def test_trial_with_an_invalid_config_is_refused_before_any_stage(capsys, monkeypatch, run, intact):
    members = "unimodal.members=[{name: strong, aug: strong}, {name: weak, aug: weak}]"
    for command in (["sweep", DEMO, *run.args, "sweep_students=true", members, "--family", "table1"],
                    ["run", DEMO, *run.args, "sweeps=[table1]", members]):
        message = assert_user_error(relaxkd(capsys, monkeypatch, *command), intact=intact)
        assert message == (
            "error: sweep table1, trial 'ensemble-kd': config: distill.teachers names unknown teacher 'strong2'; valid "
            "teachers: strong, weak, tx, expert_many, expert_medium, expert_few (unimodal.members defines the image "
            "teachers); or leave the trial out with --trials")
