"""Bad inputs that reach a stage's work (docs/errors.md): weights files, resume checkpoints, trainer
settings, NaN losses, a full disk, damaged exports.

Every command runs against the session's committed tiny run (`committed_run`, seconds to build) and
`assert_user_error` checks one line, exit code 2, no traceback and that its artifacts are intact.
"""
from __future__ import annotations

import errno
import json
from pathlib import Path

import lightning
import pytest
import torch

from relaxkd.artifacts import ArtifactStore

from cli_helpers import assert_user_error, relaxkd
from conftest import REPO
from data_fixtures import write_image

DEMO = str(REPO / "configs" / "demo.yaml")


def teacher(capsys, monkeypatch, run, *extra: str):
    """`relaxkd teacher --kind unimodal` on the committed run: a new artifact key whenever ``extra`` changes the spec."""
    return relaxkd(capsys, monkeypatch, "teacher", DEMO, *run.args, "--kind", "unimodal", *extra)


def embed_images(capsys, monkeypatch, run, *extra: str):
    return relaxkd(capsys, monkeypatch, "embed", "images", DEMO, *run.args, *extra)


def assert_weights_refused(capsys, monkeypatch, run, intact, weights, *fragments: str) -> None:
    """`relaxkd teacher unimodal.weights=<weights>` fails with one line made of ``fragments``; nothing changes."""
    result = teacher(capsys, monkeypatch, run, f"unimodal.weights={weights}")
    assert_user_error(result, *fragments, after_progress=True, intact=intact)


def tiny_cnn_state(num_classes: int) -> dict[str, torch.Tensor]:
    from relaxkd.models import build_backbone

    return build_backbone("tiny_cnn", num_classes).state_dict()


# -- backbone weights (unimodal.weights) ---------------------------------------------------------
def test_backbone_weights_of_another_architecture_name_both(capsys, monkeypatch, run, intact, tmp_path):
    from relaxkd.models import build_backbone

    path = tmp_path / "resnet18.pt"
    torch.save(build_backbone("resnet18", 3).state_dict(), path)
    assert_weights_refused(
        capsys, monkeypatch, run, intact, path,
        f"error: weights in file '{path}' are a resnet18 state dict (3 classes), but the model is tiny_cnn; "
        "pass weights of tiny_cnn, or use architecture resnet18",
    )


def test_backbone_weights_of_unknown_layout_list_the_differences(capsys, monkeypatch, run, intact, tmp_path):
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in tiny_cnn_state(3).items() if not k.startswith("features.2")}, path)
    assert_weights_refused(
        capsys, monkeypatch, run, intact, path,
        f"error: weights in file '{path}' do not fit backbone tiny_cnn: 6 tensors of tiny_cnn missing from the file "
        "(features.2.0.weight, features.2.1.weight, ...); pass a state dict of tiny_cnn",
    )


@pytest.mark.parametrize("damage", ["truncated", "not-a-checkpoint"])
def test_backbone_weights_file_that_is_no_checkpoint(capsys, monkeypatch, run, intact, tmp_path, damage):
    path = tmp_path / "weights.pt"
    torch.save(tiny_cnn_state(3), path)
    path.write_bytes(path.read_bytes()[:2000] if damage == "truncated" else b"# my notes\n")
    assert_weights_refused(
        capsys, monkeypatch, run, intact, path,
        f"error: weights file '{path}' for tiny_cnn is not a PyTorch or safetensors checkpoint (",
        "); pass a state dict saved with torch.save(model.state_dict()) or safetensors",
    )


def test_backbone_weights_that_pickle_a_whole_model_are_never_unpickled(capsys, monkeypatch, run, intact, tmp_path):
    from relaxkd.models import build_backbone

    path = tmp_path / "model.pt"
    torch.save(build_backbone("tiny_cnn", 3), path)  # the module object, not its state dict
    assert_weights_refused(
        capsys, monkeypatch, run, intact, path,
        f"error: weights file '{path}' for tiny_cnn pickles Python objects (relaxkd.models.backbones.TinyCNN), which are "
        "never loaded (unsafe: torch.load weights_only=True); save model.state_dict() with torch.save or safetensors instead",
    )


def test_backbone_weights_file_that_does_not_exist(capsys, monkeypatch, run, intact, tmp_path):
    missing = tmp_path / "missing.pt"
    assert_weights_refused(
        capsys, monkeypatch, run, intact, missing,
        f"error: weights for tiny_cnn must be 'none', 'imagenet' or a state-dict file; no file {missing}",
    )


# -- CLIP weights (clip.weights) -----------------------------------------------------------------
def test_clip_weights_of_another_model_name_both(capsys, monkeypatch, run, intact, tmp_path):
    import open_clip

    from relaxkd.clip import TINY_MODEL, register_tiny_model

    register_tiny_model()
    path = tmp_path / "other-clip.pt"
    torch.save(open_clip.create_model(TINY_MODEL, embed_dim=32).state_dict(), path)  # same family, other width
    assert_user_error(
        embed_images(capsys, monkeypatch, run, f"clip.weights={path}"),
        f"error: CLIP weights file '{path}' does not fit CLIP model 'relaxkd-tiny': text_projection is [32, 32] in the "
        "file but [32, 64] in relaxkd-tiny, visual.proj is [64, 32] in the file but [64, 64] in relaxkd-tiny; set "
        "clip.model to the model the file was saved from, or clip.weights to a checkpoint of relaxkd-tiny",
        after_progress=True,
        intact=intact,
    )


def test_clip_weights_file_that_is_no_checkpoint(capsys, monkeypatch, run, intact, tmp_path):
    path = tmp_path / "clip.safetensors"
    path.write_bytes(b"\x00" * 64)
    assert_user_error(
        embed_images(capsys, monkeypatch, run, f"clip.weights={path}"),
        f"error: CLIP weights file '{path}' is not a PyTorch or safetensors checkpoint (truncated or another kind of file: ",
        "); clip.weights must be an open_clip/OpenAI checkpoint of relaxkd-tiny",
        after_progress=True,
        intact=intact,
    )


# -- resume checkpoints ----------------------------------------------------------------------------
def foreign_checkpoint(num_classes: int) -> bytes:
    """A Lightning checkpoint of a unimodal teacher with ``num_classes`` classes."""
    import io

    from relaxkd.teachers import UnimodalTeacher

    module = UnimodalTeacher("tiny_cnn", num_classes, {"epochs": 2}, "none", None)
    buffer = io.BytesIO()
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "epoch": 0,
        "global_step": 3,
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def plant_resume_checkpoint(monkeypatch, content: bytes) -> list[Path]:
    """Put ``content`` where the next training stage looks for its resume checkpoint."""
    planted: list[Path] = []
    work_dir = ArtifactStore.work_dir

    def with_checkpoint(self, stage, key):
        path = work_dir(self, stage, key)
        (path / "checkpoints").mkdir(exist_ok=True)
        (path / "checkpoints" / "last.ckpt").write_bytes(content)
        planted.append(path)
        return path

    monkeypatch.setattr(ArtifactStore, "work_dir", with_checkpoint)
    return planted


def test_resume_checkpoint_of_another_model_names_both_and_the_advice_works(capsys, monkeypatch, run, intact):
    planted = plant_resume_checkpoint(monkeypatch, foreign_checkpoint(num_classes=10))
    result = teacher(capsys, monkeypatch, run, "--aug", "weak")
    work = planted[0]
    assert_user_error(
        result,
        f"error: cannot resume from {work / 'checkpoints' / 'last.ckpt'}: it was saved by another model (checkpoint has "
        "num_classes=10; this run has num_classes=3: model.fc.weight is [10, 128] in the checkpoint but [3, 128] in this "
        f"run, model.fc.bias is [10] in the checkpoint but [3] in this run); delete {work} to train this stage from the "
        "start (completed artifacts are kept)",
        after_progress=True,
        intact=intact,
    )
    # following the advice: delete the work dir, rerun
    monkeypatch.undo()
    import shutil

    shutil.rmtree(work)
    assert teacher(capsys, monkeypatch, run, "--aug", "weak").code == 0


def test_damaged_resume_checkpoint(capsys, monkeypatch, run, intact):
    planted = plant_resume_checkpoint(monkeypatch, foreign_checkpoint(num_classes=3)[:3000])  # truncated
    result = teacher(capsys, monkeypatch, run, "--aug", "weak", "--seed", "7")
    work = planted[0]
    assert_user_error(
        result,
        f"error: resume checkpoint {work / 'checkpoints' / 'last.ckpt'} is not a PyTorch or safetensors checkpoint (",
        f"); delete {work} to train this stage from the start (completed artifacts are kept)",
        after_progress=True,
        intact=intact,
    )


# -- training ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("trainer.precision=bogus", "error: trainer settings: Precision 'bogus' is invalid. Allowed precision values: ("),
        pytest.param(
            "trainer.accelerator=cuda",
            "error: trainer settings: `CUDAAccelerator` can not run on your system since the accelerator is not available.",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA"),
        ),
    ],
    ids=["precision", "accelerator"],
)
def test_bad_trainer_setting(capsys, monkeypatch, run, intact, setting, expected):
    assert_user_error(
        teacher(capsys, monkeypatch, run, setting, "--seed", "3"),  # --seed: a member not trained yet
        expected,
        "; check trainer.accelerator, devices, strategy and precision",
        after_progress=True,
        intact=intact,
    )


def test_nan_loss_names_the_step_and_the_last_good_checkpoint(capsys, monkeypatch, run, intact):
    # lr 0.05 for epoch 0, then 0.05 * 1e38 (the milestone at 2: epoch 1 trains at λ(2)): overflow early in epoch 1
    exploding = "unimodal.optim={epochs: 2, batch_size: 8, lr: 0.05, warmup_epochs: 0, milestones: [2], gamma: 1.0e38}"
    message = assert_user_error(
        teacher(capsys, monkeypatch, run, exploding),
        "error: training stopped: non-finite loss at epoch 1, step ",
        f"; last good checkpoint: {run.root / 'demo' / '.work'}/teacher-unimodal-",
        "/checkpoints/last.ckpt; lower the learning rate or check the data",
        after_progress=True,
        intact=intact,
    )
    assert Path(message.split("last good checkpoint: ")[1].split(";")[0]).is_file()


# -- a full disk -----------------------------------------------------------------------------------
DISK_FULL = {
    "enospc": OSError(errno.ENOSPC, "No space left on device"),
    "edquot": OSError(errno.EDQUOT, "Disk quota exceeded"),
    # safetensors reports the OS error inside its own exception's message
    "wrapped": RuntimeError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    ),
}


@pytest.mark.parametrize(
    ("command", "stage", "store", "setting", "error"),
    [
        (["embed", "images"], "embed-images", "demo", "run_root", "enospc"),
        (["embed", "images"], "embed-images", "demo", "run_root", "edquot"),
        (["embed", "nouns"], "embed-nouns", "_shared", "cache_root", "wrapped"),
    ],
    ids=["enospc", "edquot", "wrapped-in-cache-root"],
)
def test_full_disk_while_writing_an_artifact(capsys, monkeypatch, run, intact, command, stage, store, setting, error):
    def full_disk(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a file")  # the disk filled up mid-write
        raise DISK_FULL[error]

    monkeypatch.setattr(f"relaxkd.stages.{stage.replace('-', '_')}.save_file", full_disk)
    result = relaxkd(capsys, monkeypatch, *command, DEMO, *run.args, "clip.seed=11")  # another random CLIP: a new artifact key
    assert_user_error(
        result,
        f"error: no space left on device while writing {stage} artifact to {run.root / store / stage}-",
        f"; free space or set {setting} to another disk (completed artifacts are kept)",
        after_progress=True,
        intact=intact,
    )
    assert intact.unchanged()


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_full_disk_while_writing_the_report_keeps_the_previous_report(capsys, monkeypatch, run, tmp_path):
    """Outside the artifact store too: one line naming the file, and every file stays whole (old or new)."""
    import shutil

    import matplotlib.figure

    shutil.copytree(run.root, tmp_path / "runs")  # the report is written inside the run directory
    run_dir = tmp_path / "runs" / "demo"
    assert relaxkd(capsys, monkeypatch, "report", run_dir).code == 0
    before = _files(run_dir / "report")
    assert "report.md" in before and any(name.endswith(".png") for name in before)

    def full_disk(figure, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a png")  # the disk filled up mid-write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_disk)
    result = relaxkd(capsys, monkeypatch, "report", run_dir)
    assert_user_error(
        result,
        f"error: no space left on device while writing {run_dir / 'report'}/",
        ".png; free space or write to another disk (completed artifacts are kept, files already written are whole)",
    )
    assert _files(run_dir / "report") == before  # no temporary left, no half-written figure


def test_full_disk_while_exporting_leaves_no_half_written_file(capsys, monkeypatch, tmp_path):
    from relaxkd.stages import export

    out = tmp_path / "export"
    out.mkdir()
    (out / "student.json").write_text("{}")  # from an earlier export

    def full_disk(source, target, *args, **kwargs):
        Path(target).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    class Artifact:
        path = tmp_path

    monkeypatch.setattr(export, "_find_student", lambda ctx, artifact: Artifact)
    monkeypatch.setattr(export, "load_student", lambda folder, advice: (torch.nn.Identity(), {}))
    monkeypatch.setattr(export.shutil, "copyfile", full_disk)
    result = relaxkd(capsys, monkeypatch, "export", DEMO, f"run_root={tmp_path / 'runs'}", "--out", out)
    assert_user_error(result, f"error: no space left on device while writing {out / 'student.safetensors'}; free space")
    assert _files(out) == {"student.json": b"{}"}


# -- damaged exports (predict) ---------------------------------------------------------------------
@pytest.fixture
def export_dir(tmp_path) -> Path:
    from safetensors.torch import save_file

    out = tmp_path / "export"
    out.mkdir()
    save_file(tiny_cnn_state(3), str(out / "student.safetensors"))
    info = {"arch": "tiny_cnn", "num_classes": 3, "classes": ["cat", "dog", "fish"], "image_size": 8}
    (out / "student.json").write_text(json.dumps(info))
    reseal(out)
    return out


def reseal(export: Path) -> None:
    """Record the export's current files in its manifest, as `relaxkd export` does: the files below are
    then damaged *consistently* (as a buggy exporter would), which the loader itself must catch."""
    from relaxkd.stages.export import _write_export_manifest

    _write_export_manifest(export, [export / "student.safetensors", export / "student.json"])


def test_predict_with_damaged_export_weights(capsys, monkeypatch, export_dir, tmp_path):
    weights = export_dir / "student.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    reseal(export_dir)
    assert_user_error(
        relaxkd(capsys, monkeypatch, "predict", write_image(tmp_path / "x.png"), "--model", export_dir),
        f"error: student weights {weights} is not a PyTorch or safetensors checkpoint (",
        "); run `relaxkd export` again",
    )


def test_predict_with_export_files_that_do_not_fit_together(capsys, monkeypatch, export_dir, tmp_path):
    info = json.loads((export_dir / "student.json").read_text())
    (export_dir / "student.json").write_text(json.dumps({**info, "num_classes": 5}))
    reseal(export_dir)
    assert_user_error(
        relaxkd(capsys, monkeypatch, "predict", write_image(tmp_path / "x.png"), "--model", export_dir),
        f"error: {export_dir} holds student files that do not fit together (fc.weight is [3, 128] in student.safetensors "
        "but [5, 128] in the tiny_cnn with 5 classes of student.json, fc.bias is [3] in student.safetensors but [5] in "
        "the tiny_cnn with 5 classes of student.json); run `relaxkd export` again",
    )
