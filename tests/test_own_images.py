"""A newcomer's own ImageFolder: configs/imagefolder.yaml, class senses with glosses and a warning
naming the override file, the cluster floor, the per-cluster listing of `relaxkd relax`."""
from __future__ import annotations

import re

from relaxkd.config import load_config
from relaxkd.preflight import check_paths

from cli_helpers import assert_user_error, relaxkd, relaxkd_subprocess
from conftest import REPO
from data_fixtures import write_image_folder

CONFIG = REPO / "configs" / "imagefolder.yaml"
SHAPES = ("circle", "cross", "heart", "square", "star", "triangle")
#: offline and small: a random tiny CLIP, tiny CNNs, neighbourhood nouns
OFFLINE = ["clip.model=relaxkd-tiny", "clip.weights=none", "unimodal.arch=tiny_cnn", "unimodal.weights=none",
           "distill.student=tiny_cnn", "data.image_size=16", "data.num_workers=0", "nouns.candidates=neighbourhood",
           "nouns.hypernym_depth=1", "trainer.accelerator=cpu", "trainer.logger=none"]


def shapes(tmp_path):
    return write_image_folder(tmp_path / "shapes", {"train": {c: 12 for c in SHAPES}, "val": {c: 3 for c in SHAPES}}, ".png")


def test_starting_point_validates_against_your_folder_and_names_the_run_after_it(tmp_path):
    root = shapes(tmp_path)
    cfg = load_config(CONFIG, [f"data.root={root}"])
    check_paths(cfg)
    assert cfg.name == "shapes" and cfg.data.dataset == "imagefolder"
    assert cfg.multimodal.proportions == {"wn": 1.0} and cfg.relax.num_clusters is None


def test_relax_prints_senses_warnings_and_the_cluster_listing(capsys, monkeypatch, tmp_path):
    root = shapes(tmp_path)
    args = [f"data.root={root}", f"run_root={tmp_path / 'runs'}", f"cache_root={tmp_path / 'runs' / '_shared'}", *OFFLINE]
    result = relaxkd(capsys, monkeypatch, "relax", str(CONFIG), *args)
    assert result.code == 0, result.err
    err = result.err
    # each class's sense with its gloss, at the embed stage
    assert "[relaxkd]   star     -> star.n.01 (guess among" in err and "celestial body" in err
    assert "or star.n.05: a plane figure with 5 or more points" in err
    # the warning names the file that fixes it
    assert "warning: class names with several WordNet noun senses:" in err
    assert f"data.synset_overrides={root / 'synsets.yaml'}" in err
    # 72 images -> round(72/300) = 0 -> 1 cluster: raised to the 6 classes, with a warning
    assert "gives 1 cluster(s), fewer than the 6 classes" in err and "using 6 clusters" in err
    # the per-cluster listing on stdout, then the files
    assert "6 clusters" in result.out and re.search(r"^cluster +\d+: \w", result.out, re.M)
    assert result.out.strip().splitlines()[-1].startswith("nouns per cluster: ")
    # the report carries the senses too
    assert (tmp_path / "runs" / "shapes").is_dir()  # named after the data folder


def test_offline_shipped_config_fails_with_relaxkds_line_only(monkeypatch, tmp_path):
    """No weights and no network: relaxkd's one error line, nothing from open_clip's or
    huggingface_hub's loggers (open_clip's `ERROR:root:Failed to download weights ...`)."""
    root = write_image_folder(tmp_path / "pics", {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}}, ".png")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # fails at once, as without a network after its retries
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    result = relaxkd_subprocess("embed", "images", CONFIG, f"data.root={root}", f"run_root={tmp_path / 'runs'}",
                                f"cache_root={tmp_path / 'runs' / '_shared'}", "data.num_workers=0", cwd=tmp_path)
    assert_user_error(result, "error: could not download pretrained weights 'openai' for CLIP model 'ViT-B-32' (offline? ",
                      "pass a local file path with clip.weights=/path", after_progress=True)
    assert "ERROR:" not in result.err and "WARNING:" not in result.err
