"""Artifact keys follow the data on disk, not only its path (data/files.py, Context.data_fingerprint).

Keys are computed without building anything (as in test_stage_keys.py): a stage that reads data
gets a new key when an image is replaced, added or removed, when a class appears, or when the
synset-override file changes; an untouched tree keeps its key, wherever the run root is.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from relaxkd.config import load_config
from relaxkd.stages.context import Context
from relaxkd.stages.specs import data_spec

from conftest import REPO, tiny_overrides
from data_fixtures import write_image, write_image_folder


def key(tmp_path: Path, data: Path, *extra: str) -> str:
    from relaxkd.artifacts import ArtifactStore

    cfg = load_config(REPO / "configs" / "demo.yaml", [*tiny_overrides(tmp_path / "runs"), "data.dataset=imagefolder",
                                                      f"data.root={data}", *extra])
    ctx = Context(cfg)
    return ArtifactStore(tmp_path).key("embed-images", {"data": data_spec(ctx)})


@pytest.fixture
def data(tmp_path) -> Path:
    return write_image_folder(tmp_path / "data", {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}})


def _touch_later(path: Path) -> None:
    stamp = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(stamp, stamp))


def test_same_files_same_key_anywhere(tmp_path, data):
    assert key(tmp_path / "a", data) == key(tmp_path / "b", data)


@pytest.mark.parametrize("change", ["replace-image", "add-image", "remove-image", "add-class", "touch"])
def test_changed_data_changes_the_key(tmp_path, data, change):
    before = key(tmp_path, data)
    first = sorted((data / "train" / "cat").iterdir())[0]
    if change == "replace-image":
        write_image(first, colour=(1, 2, 3), size=(9, 9))
        _touch_later(first)
    elif change == "add-image":
        write_image(data / "train" / "cat" / "extra.png")
    elif change == "remove-image":
        first.unlink()
    elif change == "add-class":
        write_image(data / "train" / "fish" / "0.png")
        write_image(data / "val" / "fish" / "0.png")
    else:  # same bytes, new modification time: stat mode cannot tell, and says the data may differ
        _touch_later(first)
    assert key(tmp_path, data) != before


def test_content_mode_ignores_mtime_but_not_bytes(tmp_path, data):
    before = key(tmp_path, data, "data.fingerprint=content")
    first = sorted((data / "train" / "cat").iterdir())[0]
    _touch_later(first)
    assert key(tmp_path, data, "data.fingerprint=content") == before
    first.write_bytes(first.read_bytes() + b"\0")
    assert key(tmp_path, data, "data.fingerprint=content") != before


def test_synset_override_file_content_is_part_of_the_key(tmp_path, data):
    overrides = tmp_path / "synsets.yaml"
    overrides.write_text("cat: cat.n.01\n")
    before = key(tmp_path, data, f"data.synset_overrides={overrides}")
    overrides.write_text("cat: true_cat.n.01\n")
    assert key(tmp_path, data, f"data.synset_overrides={overrides}") != before


def test_csv_label_file_is_part_of_the_key(tmp_path):
    root = tmp_path / "csvdata"
    for i, _label in enumerate(["cat", "dog", "cat", "dog"]):
        write_image(root / "img" / f"{i}.png")
    (root / "train.csv").write_text("path,label\nimg/0.png,cat\nimg/1.png,dog\nimg/2.png,cat\nimg/3.png,dog\n")
    (root / "val.csv").write_text("path,label\nimg/0.png,cat\nimg/1.png,dog\n")
    before = key(tmp_path, root, "data.dataset=csv")
    (root / "train.csv").write_text("path,label\nimg/0.png,dog\nimg/1.png,cat\nimg/2.png,cat\nimg/3.png,dog\n")
    assert key(tmp_path, root, "data.dataset=csv") != before


def test_packaged_data_has_no_file_fingerprint():
    """digits ships inside scikit-learn: its keys are those of the config alone (test_stage_keys pins them)."""
    cfg = load_config(REPO / "configs" / "demo.yaml", [])
    assert "files" not in data_spec(Context(cfg))
