"""Hostile and careless input, round two (docs/errors.md): every probe ends in one line and exit 2
with nothing written, and committed artifacts stay intact.

Commands run in this process (`relaxkd(...)`) against the session's committed tiny run, like
test_bad_inputs.py; `refused` asserts exit code 2, a single `error: ...` line, no traceback, and
that no committed file changed or appeared.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import RunSnapshot, assert_user_error, committed_files, relaxkd
from conftest import REPO, tiny_overrides
from data_fixtures import write_csv_dataset, write_image, write_image_folder

DEMO = str(REPO / "configs" / "demo.yaml")


def refused(result, *fragments: str, intact: RunSnapshot | None = None, after_progress: bool = False) -> str:
    message = assert_user_error(result, *fragments, intact=intact, after_progress=after_progress)
    if intact is not None:
        assert intact.unchanged(), "the refused command wrote an artifact"
    return message


# -- YAML with limits ---------------------------------------------------------------------------
ALIAS_BOMB = "".join(
    ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)]
)  # ~530 bytes, 9**9 strings once expanded


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ALIAS_BOMB, "uses the YAML alias *a0; aliases are not allowed (write the value out) (line 2)"),
        ("data:\n  params: &p {x: *p}\n", "uses the YAML alias *p; aliases are not allowed"),  # recursive alias
        ("seed: " + "9" * 5000 + "\n", "holds an integer of 5000 digits (at most 30)"),
        ("data:\n  params: " + "[" * 100_000 + "]" * 100_000 + "\n", "nests deeper than 32 levels"),
        ("name: !!binary aGVsbG8=\n", "uses the tag !!binary, which is not allowed"),
        ("name: !!python/object:os.system x\n", "uses the tag !!python/object:os.system, which is not allowed"),
        ("data:\n  params: !!set {a, b}\n", "uses the tag !!set, which is not allowed"),
    ],
    ids=["alias-bomb", "recursive-alias", "5000-digit-int", "100k-nested-brackets", "binary", "python-object", "set"],
)
def test_config_file_yaml_beyond_limits(capsys, monkeypatch, tmp_path, run, intact, text, expected):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    for command in (["validate", path], ["embed", "images", path, *run.args]):
        refused(relaxkd(capsys, monkeypatch, *command), f"error: config file '{path}' {expected}", intact=intact)


def test_oversized_config_file(capsys, monkeypatch, tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * 120_000)
    refused(relaxkd(capsys, monkeypatch, "validate", path), f"error: config file '{path}' is larger than 1024 KiB")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.params={x: &a [1, 2], y: *a}", "error: override data.params=... uses the YAML alias *a; aliases are not allowed"),
        ("seed=" + "9" * 5000, "error: override seed=... holds an integer of 5000 digits (at most 30)"),
        ("name=!!binary aGVsbG8=", "error: override name=... uses the tag !!binary, which is not allowed"),
        ("data.params=" + "[" * 100_000, "error: override data.params=... is longer than 16384 characters"),
    ],
    ids=["alias", "5000-digit-int", "binary", "100k-brackets"],
)
def test_override_yaml_beyond_limits(capsys, monkeypatch, run, intact, override, expected):
    refused(relaxkd(capsys, monkeypatch, "embed", "images", DEMO, *run.args, override), expected, intact=intact)


# -- values rejected at validation (nothing written) ----------------------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seed=-1", "error: config: seed: Input should be greater than or equal to 0 (got -1)"),
        (f"seed={2**70}", f"error: config: seed: Input should be less than or equal to 4294967295 (got {2**70})"),
        (
            "multimodal.proportions={gt: .nan, wn: 1}",
            "error: config: multimodal.proportions.gt: Input should be a finite number (got nan)",
        ),
        ("multimodal.temperature=.inf", "error: config: multimodal.temperature: Input should be a finite number (got inf)"),
        (
            "trainer.devices=-1",
            "error: config: trainer.devices: must be 'auto', a positive number of devices, or device indices like '0,1'",
        ),
        (
            "trainer.devices=abc",
            "error: config: trainer.devices: must be 'auto', a positive number of devices, or device indices like '0,1'",
        ),
        ("data.params={val_fraction: abc}", "error: config: data.params.val_fraction: Input should be a valid number"),
        ("name=../../x", "error: config: name: must be a plain folder name inside run_root"),
        ("name=/tmp/elsewhere", "error: config: name: must be a plain folder name inside run_root"),
        ("trainer.num_nodes=2", "error: trainer.num_nodes=2 needs a multi-node launcher"),
    ],
    ids=[
        "seed-negative",
        "seed-2**70",
        "nan-proportion",
        "inf-temperature",
        "devices-negative",
        "devices-abc",
        "params-not-a-number",
        "name-escapes",
        "name-absolute",
        "nodes-without-launcher",
    ],
)
def test_bad_value_is_refused_before_any_work(capsys, monkeypatch, run, intact, override, expected):
    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "MASTER_ADDR", "NODE_RANK", "RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK",
                "LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "LSB_JOBID"):
        monkeypatch.delenv(var, raising=False)
    # `validate` and a stage command (the digits data: `data.params` applies to it) say the same line
    digits = [a for a in run.args if not a.startswith(("data.dataset=", "data.root="))]
    refused(relaxkd(capsys, monkeypatch, "validate", DEMO, *digits, override), expected, intact=intact)
    refused(relaxkd(capsys, monkeypatch, "teacher", DEMO, *digits, "--kind", "unimodal", override), expected, intact=intact)
    assert not (run.root / "x").exists() and not Path("/tmp/elsewhere").exists()


def test_num_nodes_with_a_launcher_is_accepted(capsys, monkeypatch, run):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("NODE_RANK", "0")
    assert relaxkd(capsys, monkeypatch, "validate", DEMO, *run.args, "trainer.num_nodes=2").code == 0


# -- files that cannot be read as text ------------------------------------------------------------
def test_non_utf8_csv_file(capsys, monkeypatch, tmp_path):
    root = write_csv_dataset(tmp_path / "csvdata", {"train": [("a.png", "cat"), ("b.png", "dog")], "val": [("a.png", "cat")]})
    (root / "train.csv").write_bytes("path,label\na.png,caf\xe9\nb.png,dog\n".encode("latin-1"))
    runs = tmp_path / "runs"
    result = relaxkd(capsys, monkeypatch, "embed", "images", DEMO, *tiny_overrides(runs), "data.dataset=csv", f"data.root={root}")
    refused(result, f"error: train CSV file {root / 'train.csv'} is not UTF-8 text (byte 0xe9 on line 2); save it as UTF-8")
    assert committed_files(runs) == {}


def test_non_utf8_synset_override_file(capsys, monkeypatch, run, intact, tmp_path):
    overrides = tmp_path / "synsets.yaml"
    overrides.write_bytes("cat: caf\xe9.n.01\n".encode("latin-1"))
    result = relaxkd(capsys, monkeypatch, "embed", "images", DEMO, *run.args, f"data.synset_overrides={overrides}")
    refused(result, f"error: synset override file {overrides} is not UTF-8 text (byte 0xe9 on line 1); save it as UTF-8",
            intact=intact, after_progress=True)


# -- datasets -----------------------------------------------------------------------------------
def test_one_class_dataset_is_refused(capsys, monkeypatch, tmp_path):
    data = write_image_folder(tmp_path / "one", {"train": {"cat": 3}, "val": {"cat": 1}})
    runs = tmp_path / "runs"
    result = relaxkd(capsys, monkeypatch, "run", DEMO, *tiny_overrides(runs), "data.dataset=imagefolder", f"data.root={data}")
    refused(result, f"error: dataset in {data} has 1 class (cat); classification needs at least two classes", after_progress=True)
    assert committed_files(runs) == {}


@pytest.mark.parametrize("link", ["loop", "escape"])
def test_symlink_that_loops_or_escapes_the_dataset(capsys, monkeypatch, tmp_path, link):
    data = write_image_folder(tmp_path / "data", {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}})
    if link == "loop":
        os.symlink("..", data / "train" / "dog" / "up")  # once: 8 images became 3,608 samples
        expected = (
            f"error: symbolic link {data / 'train' / 'dog' / 'up'} leads back to {data / 'train'}, a folder it is inside (a loop)"
        )
    else:
        outside = write_image_folder(tmp_path / "elsewhere", {"x": {"cat": 1}})
        os.symlink(outside / "x" / "cat", data / "train" / "dog" / "more")
        expected = f"error: symbolic link {data / 'train' / 'dog' / 'more'} points outside the dataset root {data}"
    runs = tmp_path / "runs"
    result = relaxkd(
        capsys, monkeypatch, "embed", "images", DEMO, *tiny_overrides(runs), "data.dataset=imagefolder", f"data.root={data}"
    )
    refused(result, expected, after_progress=True)
    assert committed_files(runs) == {}


def test_wide_images_are_scaled_or_refused(tmp_path):
    from relaxkd.data.base import load_rgb_image
    from relaxkd.errors import UserError

    sixteen = tmp_path / "sixteen.png"
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(sixteen)  # mid-grey in 16 bits
    assert Image.open(sixteen).mode.startswith("I")
    assert np.asarray(load_rgb_image(sixteen)).max() == 128  # PIL alone: 255 (clipped)
    unit = tmp_path / "unit.tif"
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(unit)
    assert np.asarray(load_rgb_image(unit)).max() == 128  # PIL alone: 0
    wild = tmp_path / "wild.tif"
    Image.fromarray(np.full((4, 4), -3.0, dtype=np.float32)).save(wild)
    with pytest.raises(UserError, match=r"'F' values from -3 to -3 fit no 8-bit range"):
        load_rgb_image(wild)


# -- run_root, cache_root and export --out that cannot be written ----------------------------------
@pytest.mark.parametrize("setting", ["run_root", "cache_root"])
def test_file_valued_store_root(capsys, monkeypatch, run, intact, tmp_path, setting):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = [a for a in run.args if not a.startswith(f"{setting}=")]
    result = relaxkd(capsys, monkeypatch, "embed", "nouns" if setting == "cache_root" else "images", DEMO, *args,
                     f"{setting}={blocker}")
    where = blocker / "demo" if setting == "run_root" else blocker
    message = refused(result, "error: cannot ", f"; set {setting} to a ", intact=intact, after_progress=True)
    assert str(where) in message or str(blocker) in message
    assert blocker.read_text() == "not a folder"


def test_unwritable_run_root(capsys, monkeypatch, run, intact, tmp_path):
    """A read-only folder (simulated: root ignores permissions) is one line naming run_root."""
    import errno

    locked = tmp_path / "locked"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(locked)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    args = [a for a in run.args if not a.startswith("run_root=")]
    result = relaxkd(capsys, monkeypatch, "embed", "images", DEMO, *args, f"run_root={locked}")
    refused(result, f"error: cannot create folder {locked / 'demo'}: Permission denied; set run_root to a writable folder",
            intact=intact)


def test_file_valued_export_out(capsys, monkeypatch, run, tmp_path):
    blocker = tmp_path / "out-file"
    blocker.write_text("x")
    result = relaxkd(capsys, monkeypatch, "export", DEMO, *run.args, "--out", blocker)
    refused(result, f"error: export --out {blocker} is a file; pass a folder")


# -- predict ------------------------------------------------------------------------------------
@pytest.fixture
def export_dir(tmp_path) -> Path:
    from safetensors.torch import save_file

    from relaxkd.models import build_backbone
    from relaxkd.stages.export import _write_export_manifest

    out = tmp_path / "export"
    out.mkdir()
    save_file({k: v.contiguous() for k, v in build_backbone("tiny_cnn", 3, "none").state_dict().items()},
              str(out / "student.safetensors"))
    (out / "student.json").write_text(json.dumps({"arch": "tiny_cnn", "num_classes": 3, "classes": ["cat", "dog", "fish"],
                                                  "image_size": 8}))
    _write_export_manifest(out, [out / "student.safetensors", out / "student.json"])
    return out


def huge_png(path: Path, side: int) -> Path:
    """A PNG header claiming ``side``² pixels (PIL checks the size on open, before any pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    return path


def test_predict_on_a_14000_square_png(capsys, monkeypatch, export_dir, tmp_path):
    image = huge_png(tmp_path / "huge.png", 14000)
    refused(relaxkd(capsys, monkeypatch, "predict", image, "--model", export_dir),
            f"error: image file '{image}' is too large to classify (over 89,478,485 pixels); downscale it first")


def test_predict_on_a_fifo_does_not_hang(capsys, monkeypatch, export_dir, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    refused(relaxkd(capsys, monkeypatch, "predict", fifo, "--model", export_dir),
            f"error: image file '{fifo}' is not a regular file (a folder, FIFO or device); pass image files")


@pytest.mark.parametrize("top", ["-1", "0"])
def test_predict_top_below_one(capsys, monkeypatch, export_dir, tmp_path, top):
    image = write_image(tmp_path / "x.png")
    refused(relaxkd(capsys, monkeypatch, "predict", image, "--model", export_dir, "--top", top),
            "error: Invalid value for '--top': Input should be greater than or equal to 1 (see `relaxkd predict --help`)")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("missing", "is not an export directory (no student.json); run `relaxkd export` first"),
        ("short-classes", "student.json is damaged (classes must list 3 class names, found 2); run `relaxkd export` again"),
        ("image-size-text", "student.json is damaged (image_size must be a whole number of pixels from 1 to 4096, found 'big')"),
        ("tampered-weights", "student.safetensors does not match the export's manifest (changed or replaced after export)"),
    ],
)
def test_predict_with_a_bad_student_json_or_tampered_export(capsys, monkeypatch, export_dir, tmp_path, change, expected):
    from relaxkd.stages.export import _write_export_manifest

    info_path = export_dir / "student.json"
    info = json.loads(info_path.read_text())
    if change == "missing":
        info_path.unlink()
    elif change == "tampered-weights":  # overwritten tensor bytes: once, every image got one class
        weights = export_dir / "student.safetensors"
        data = bytearray(weights.read_bytes())
        data[-64:] = b"\x7f" * 64
        weights.write_bytes(bytes(data))
    else:
        info = {**info, "classes": ["cat", "dog"]} if change == "short-classes" else {**info, "image_size": "big"}
        info_path.write_text(json.dumps(info))
        _write_export_manifest(export_dir, [export_dir / "student.safetensors", info_path])  # consistent, but wrong
    image = write_image(tmp_path / "x.png")
    refused(relaxkd(capsys, monkeypatch, "predict", image, "--model", export_dir), expected)


# -- sweep ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trials", ["", " , "])
def test_sweep_with_empty_trials(capsys, monkeypatch, run, intact, trials):
    refused(relaxkd(capsys, monkeypatch, "sweep", DEMO, *run.args, "--trials", trials),
            "error: --trials is empty; name trials (comma-separated) or leave the option out to run them all", intact=intact)


# -- readers verify -------------------------------------------------------------------------------
def test_manifest_edited_to_list_no_files_is_not_reused(tmp_path):
    from relaxkd.artifacts import MANIFEST_DIGEST, ArtifactStore, manifest_digest

    store = ArtifactStore(tmp_path)
    spec = {"x": 1}
    with store.create("demo", spec) as out:
        (out / "data.bin").write_bytes(b"payload")
    art = store.lookup("demo", spec)
    (art.path / "data.bin").unlink()
    manifest = json.loads((art.path / "manifest.json").read_text())
    manifest["files"] = {}
    (art.path / "manifest.json").write_text(json.dumps(manifest))  # edited, digest left as it was
    assert store.lookup("demo", spec) is None  # moved aside, rebuilt by its stage
    with store.create("demo", spec) as out:
        (out / "data.bin").write_bytes(b"payload")
    # even with a recomputed digest, a manifest that lists no files is not an artifact
    art = store.lookup("demo", spec)
    manifest = json.loads((art.path / "manifest.json").read_text())
    manifest["files"] = {}
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (art.path / "manifest.json").write_text(json.dumps(manifest))
    assert store.check(art.path)[1] == "manifest.json lists no files"


def test_report_leaves_out_an_edited_metrics_file(capsys, monkeypatch, run, tmp_path):
    import shutil

    shutil.copytree(run.root, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "demo"
    teacher = next(run_dir.glob("teacher-unimodal-*"))
    metrics = json.loads((teacher / "metrics.json").read_text())
    (teacher / "metrics.json").write_text(json.dumps({**metrics, "top1": 99.99}))
    result = relaxkd(capsys, monkeypatch, "report", run_dir)
    assert result.code == 0, result.err
    assert f"[relaxkd] report: leaving out {teacher}: metrics.json does not match its manifest" in result.err
    assert "99.99" not in (run_dir / "report" / "report.md").read_text()


def test_export_refuses_a_damaged_student(capsys, monkeypatch, tmp_path):
    from relaxkd.artifacts import ArtifactStore

    store = ArtifactStore(tmp_path / "runs" / "demo")
    with store.create("distill", {"x": 1}) as out:
        (out / "student.safetensors").write_bytes(b"weights")
        (out / "student.json").write_text("{}")
    art = store.lookup("distill", {"x": 1})
    (art.path / "student.safetensors").write_bytes(b"WEIGHTS")
    result = relaxkd(capsys, monkeypatch, "export", DEMO, f"run_root={tmp_path / 'runs'}", "--out", tmp_path / "out")
    refused(result, f"error: distill artifact {art.path} is damaged (student.safetensors does not match its manifest "
                    "(changed after it was written)); rerun `relaxkd distill` to rebuild it")
    assert not (tmp_path / "out").exists()


# -- checkpoints: written atomically, verified on resume ---------------------------------------------
def test_checkpoint_write_that_fails_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    import torch

    from relaxkd.engine.trainer import AtomicCheckpointIO, digest_path

    io = AtomicCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 0, "w": torch.ones(3)}, last)
    good = last.read_bytes()
    real_save = torch.save

    def full_disk(obj, fh, *args, **kwargs):
        real_save(obj, fh, *args, **kwargs)
        fh.truncate(100)  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        io.save_checkpoint({"epoch": 1, "w": torch.zeros(3)}, last)
    assert last.read_bytes() == good  # the previous checkpoint, whole
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]  # no temporary left
    monkeypatch.undo()
    io.save_checkpoint({"epoch": 1, "w": torch.zeros(3)}, last)
    assert len(digest_path(last).read_text().split()) == 2  # the new one and the one it replaced


def test_resume_checkpoint_changed_after_it_was_written_is_refused(tmp_path):
    import torch

    from relaxkd.engine.trainer import AtomicCheckpointIO, check_resumable
    from relaxkd.errors import UserError

    last = tmp_path / "work" / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, last)
    torch.save({"state_dict": {"w": torch.full((3,), 7.0)}}, last)  # a valid checkpoint, but not the one written
    with pytest.raises(UserError, match=r"resume checkpoint .*last.ckpt is not the file relaxkd wrote \(its SHA-256 is not in "
                                        r"last.ckpt.sha256: changed or damaged since\); delete .*work to train this stage"):
        check_resumable(last, torch.nn.Module(), tmp_path / "work")


def test_csv_path_out_of_the_dataset_root(tmp_path):
    from relaxkd.data import build_dataset
    from relaxkd.errors import UserError

    root = write_csv_dataset(tmp_path / "csvdata", {"train": [("a.png", "cat"), ("b.png", "dog")], "val": [("a.png", "cat")]})
    write_image(tmp_path / "secret.png")
    (root / "train.csv").write_text("path,label\na.png,cat\n../secret.png,dog\n")
    with pytest.raises(UserError, match=r"train.csv lists .*secret.png, which is outside the dataset root"):
        build_dataset("csv", root, "train")
