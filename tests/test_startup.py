"""Start-up: each command loads only what its work uses (issue 28). `predict` runs an export with torch
and PIL alone, `--model` names the export folder or one of its files, bad paths are answered before
torch is imported, `--version` names relaxkd's and torch's versions, and Lightning's SLURM hint stays
out of the stages' output. The timings themselves are in benchmarks/bench_startup.py, not here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from cli_helpers import assert_user_error, relaxkd
from conftest import REPO, tiny_overrides
from data_fixtures import write_image

#: libraries that running an exported student never needs (each costs 0.5-5 s to import)
HEAVY = ("lightning", "pytorch_lightning", "open_clip", "timm", "captum", "faiss", "sklearn", "torchvision", "matplotlib", "nltk")
DEMO = str(REPO / "configs" / "demo.yaml")


def write_export(out: Path, torchscript: bool = True, onnx: bool = False) -> Path:
    """What `relaxkd export` writes, from an untrained tiny student (predict reads only these files)."""
    from safetensors.torch import save_file

    from relaxkd.models import build_backbone
    from relaxkd.stages.export import _write_export_manifest
    from relaxkd.stages.predict import quiet_torchscript

    out.mkdir(parents=True)
    torch.manual_seed(0)
    model = build_backbone("tiny_cnn", 3, "none").eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "student.safetensors"))
    (out / "student.json").write_text(json.dumps({"arch": "tiny_cnn", "num_classes": 3, "classes": ["cat", "dog", "fish"],
                                                  "image_size": 8, "input_stats": "imagenet"}))
    files = [out / "student.safetensors", out / "student.json"]
    if torchscript:
        with quiet_torchscript():
            torch.jit.trace(model, torch.zeros(1, 3, 8, 8)).save(str(out / "student.torchscript.pt"))
        files.append(out / "student.torchscript.pt")
    if onnx:  # predict does not run this file (ONNX Runtime is no dependency): it rebuilds the same weights
        (out / "student.onnx").write_bytes(b"an ONNX graph of the same weights")
        files.append(out / "student.onnx")
    _write_export_manifest(out, files)
    return out


def loaded_after(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `relaxkd ARGS` in a fresh interpreter; the heavy libraries in its sys.modules afterwards."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import atexit, json, sys\n"
        f"atexit.register(lambda: print('LOADED ' + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules))))\n"
        f"sys.argv = ['relaxkd', *{list(args)!r}]\n"
        "from relaxkd.cli import main\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("LOADED ")]
    assert marker, proc.stderr
    return proc, json.loads(marker[-1].removeprefix("LOADED "))


def test_predict_on_a_torchscript_export_loads_none_of_the_heavy_libraries(tmp_path):
    export = write_export(tmp_path / "export")
    image = write_image(tmp_path / "cat.png")
    proc, loaded = loaded_after(tmp_path, "predict", str(image), "--model", str(export))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{image}: ")
    assert loaded == []


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["validate", DEMO],
        ["predict", "missing.png", "--model", "no-such-export"],
        ["export", DEMO, "run_root=runs", "--out", "out"],
        ["report", "runs"],
        ["run", DEMO, "distill.temprature=3"],
    ],
    ids=["help", "validate", "predict-bad-model", "export-before-training", "report-of-nothing", "run-bad-key"],
)
def test_light_commands_load_none_of_the_heavy_libraries(tmp_path, args):
    """`export` and `report` reach their own work (here: nothing to export or report) with none of them
    loaded: the config's registry names are checked from preflight's lists, not by importing every library."""
    (tmp_path / "runs").mkdir()
    proc, loaded = loaded_after(tmp_path, *args)
    assert "Traceback" not in proc.stderr
    assert loaded == []
    if args[0] == "predict":  # answered before torch's import, too
        assert proc.returncode == 2 and proc.stderr.strip() == (
            "error: 'no-such-export' is not an export directory (no student.json); run `relaxkd export` first")
    if args[0] == "run":  # a typo in a key costs no stage imports
        assert proc.returncode == 2 and "distill.temprature" in proc.stderr
    if args[0] == "export":
        assert proc.returncode == 2 and "error: no trained student in 'runs/demo'" in proc.stderr


def test_version_prints_relaxkd_and_torch(capsys, monkeypatch):
    from relaxkd import __version__

    result = relaxkd(capsys, monkeypatch, "--version")
    assert result.code == 0 and result.err == ""
    assert result.out == f"relaxkd {__version__} (torch {torch.__version__})\n"


@pytest.mark.parametrize("named", ["", "student.torchscript.pt", "student.json", "student.safetensors", "manifest.json"])
def test_model_may_name_the_export_folder_or_a_file_in_it(capsys, monkeypatch, tmp_path, named):
    export = write_export(tmp_path / "export")
    image = write_image(tmp_path / "cat.png", colour=(200, 20, 20))
    result = relaxkd(capsys, monkeypatch, "predict", image, "--model", export / named if named else export, "--top", "3")
    assert result.code == 0, result.err
    assert result.out == relaxkd(capsys, monkeypatch, "predict", image, "--model", export, "--top", "3").out
    assert result.out.startswith(f"{image}: ") and sorted(p.split()[0] for p in result.out.split(": ", 1)[1].split(", ")) == [
        "cat", "dog", "fish"]


def test_an_onnx_export_predicts_what_the_torchscript_export_does(capsys, monkeypatch, tmp_path):
    """The .onnx file names its folder; predict rebuilds the student from the same weights."""
    image = write_image(tmp_path / "x.png", colour=(10, 200, 90), size=(13, 9))
    scripted = write_export(tmp_path / "ts")
    onnx = write_export(tmp_path / "onnx", torchscript=False, onnx=True)
    by_file = relaxkd(capsys, monkeypatch, "predict", image, "--model", onnx / "student.onnx", "--top", "3")
    assert by_file.code == 0, by_file.err
    expected = relaxkd(capsys, monkeypatch, "predict", image, "--model", scripted, "--top", "3")
    assert by_file.out == expected.out


def test_predict_matches_the_students_own_forward_on_the_test_view(capsys, monkeypatch, tmp_path):
    """The probabilities printed are the student's softmax on build_transform("test") of the image."""
    from relaxkd.data.transforms import IMAGENET_STATS, build_transform
    from relaxkd.stages.predict import load_student

    export = write_export(tmp_path / "export")
    image = write_image(tmp_path / "x.png", colour=(10, 200, 90), size=(21, 11))
    result = relaxkd(capsys, monkeypatch, "predict", image, "--model", export, "--top", "3")
    model, info = load_student(export, "")
    from PIL import Image

    with torch.no_grad():
        probs = model(build_transform("test", 8, IMAGENET_STATS)(Image.open(image).convert("RGB"))[None]).softmax(1)[0]
    values, indices = probs.topk(3)
    assert (
        result.out
        == f"{image}: " + ", ".join(f"{info['classes'][i]} {v:.3f}" for v, i in zip(values.tolist(), indices.tolist())) + "\n"
    )


def test_model_naming_another_file_is_refused(capsys, monkeypatch, tmp_path):
    export = write_export(tmp_path / "export")
    other = export / "notes.txt"
    other.write_text("mine")
    assert_user_error(
        relaxkd(capsys, monkeypatch, "predict", write_image(tmp_path / "x.png"), "--model", other),
        f"error: --model '{other}' is not a file `relaxkd export` writes (student.torchscript.pt, student.onnx, student.json); "
        f"give the export folder",
    )


def test_a_bad_image_path_is_answered_before_the_model_is_loaded(capsys, monkeypatch, tmp_path):
    export = write_export(tmp_path / "export")
    (export / "student.torchscript.pt").write_bytes(b"damaged")  # would be refused if it were read
    good, missing = write_image(tmp_path / "x.png"), tmp_path / "missing.png"
    assert_user_error(relaxkd(capsys, monkeypatch, "predict", good, missing, "--model", export),
                      f"error: image file '{missing}' does not exist")


def test_a_replaced_torchscript_file_is_refused(capsys, monkeypatch, tmp_path):
    export = write_export(tmp_path / "export")
    (export / "student.torchscript.pt").write_bytes(b"damaged")
    assert_user_error(
        relaxkd(capsys, monkeypatch, "predict", write_image(tmp_path / "x.png"), "--model", export),
        f"error: {export / 'student.torchscript.pt'} does not match the export's manifest (changed or replaced after export); "
        f"run `relaxkd export` again",
    )


# -- Lightning's SLURM hint ----------------------------------------------------------------------
@pytest.fixture
def fake_srun(tmp_path, monkeypatch) -> Path:
    """An `srun` on PATH, as on every cluster login node (this process was not started by it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    return srun


def test_the_fake_srun_makes_lightning_print_its_hint(fake_srun):
    """The control: without relaxkd's filter, Lightning warns about the srun on PATH."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SLURMEnvironment.detect()
    assert any("`srun` command is available" in str(w.message) for w in caught)


def test_no_srun_hint_from_a_stage_with_srun_on_path(capsys, monkeypatch, fake_srun, committed_run, tmp_path):
    """A training stage (the one place relaxkd builds a Lightning Trainer) prints no SLURM hint."""
    args = [*tiny_overrides(tmp_path / "runs"), "data.dataset=imagefolder", f"data.root={committed_run.data_root}",
            "unimodal.optim={epochs: 1, batch_size: 128, lr: 0.05, warmup_epochs: 0, milestones: []}", "name=login-node"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = relaxkd(capsys, monkeypatch, "teacher", DEMO, *args, "--kind", "unimodal", "--member", "strong")
    assert result.code == 0, result.err
    assert "`srun`" not in result.err + result.out
    assert not [w for w in caught if "`srun`" in str(w.message)]
