"""A newcomer's own ImageFolder: configs/imagefolder.yaml, class senses with glosses and a warning
naming the override file, the cluster floor, the per-cluster listing of `relaxkd relax`, the no-KD
comparison `relaxkd run` adds on one's own data."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

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


def test_run_compares_with_the_no_kd_student_on_own_data(tmp_path):
    from relaxkd.stages.plan import run_sweeps

    def families(config, *overrides):
        return run_sweeps(load_config(config, list(overrides)))

    assert families(CONFIG, "data.root=x") == ["compare"]  # your own images: on by default
    assert families(CONFIG, "data.root=x", "compare_no_kd=false") == []
    assert families(REPO / "configs" / "cifar100.yaml") == []  # the paper's data: Table 1 compares
    assert families(REPO / "configs" / "cifar100.yaml", "compare_no_kd=true", "sweeps=[table3]") == ["table3", "compare"]
    assert families(REPO / "configs" / "demo.yaml") == ["table1", "table2"]  # its table1 sweep has the no-KD student


def test_run_headline_says_how_much_the_method_moved_top1(capsys, monkeypatch, tmp_path):
    from conftest import tiny_overrides

    root = write_image_folder(tmp_path / "pics", {"train": {"cat": 4, "dog": 4}, "val": {"cat": 2, "dog": 2}}, ".png")
    args = [
        *tiny_overrides(tmp_path / "runs"),
        "data.dataset=imagefolder",
        f"data.root={root}",
        "compare_no_kd=null",
        "seeds=[0, 1]",
    ]
    result = relaxkd(capsys, monkeypatch, "run", str(REPO / "configs" / "demo.yaml"), *args)
    assert result.code == 0, result.err
    run_dir = tmp_path / "runs" / "pics"  # named after the data folder
    record = json.loads((run_dir / "sweep-compare.json").read_text())
    assert set(record) == {"method", "no-kd"} and set(record["no-kd"]["runs"]) == {"0", "1"}
    main = json.loads((run_dir / "run.json").read_text())["artifacts"]["distill"]
    assert record["method"]["runs"]["0"]["distill"] == main  # seed 0's method student is the run's own
    top1 = {name: [json.loads((Path(r["distill"]) / "metrics.json").read_text())["top1"] for r in entry["runs"].values()]
            for name, entry in record.items()}
    diffs = [m - n for m, n in zip(top1["method"], top1["no-kd"])]
    report = (run_dir / "report" / "report.md").read_text()
    mean, std = statistics.fmean(diffs), statistics.stdev(diffs)
    assert (f"**Did the teachers help?** On this data the distilled student (this config's teachers and KD loss) moved "
            f"top-1 by **{mean:+.1f} ± {std:.1f} points** against the no-KD student of the same recipe "
            f"(mean ± std over 2 seeds, paired by seed)") in report
    assert "`relaxkd sweep CONFIG --family table1`" in report
    # the senses table says how each sense was chosen
    assert re.search(r"^\| cat \| cat\.n\.01 \| .* \| 8 \| the name \(most likely pictured sense\) \|$", report, re.M)


def test_senses_table_says_how_each_sense_was_chosen():
    from relaxkd.report import _chosen_by

    sizes = {"sense_sources": ["images", "override", "default"], "sense_runner_up": ["crane.n.04", None, None],
             "sense_margin": [0.0461, None, None]}
    assert [_chosen_by(sizes, i) for i in range(3)] == [
        "its images (runner-up crane.n.04, cosine margin 0.046)", "your override", "the name (most likely pictured sense)"]
    assert _chosen_by({}, 0) == "–"  # an artifact from before sense sources were recorded


@pytest.mark.slow
def test_the_issue_folder_set_runs_without_an_override_file(capsys, monkeypatch, tmp_path):
    """Issue 24's folders as people name them, configs/imagefolder.yaml with only the offline overrides."""
    names = ["bank", "bat", "crane", "mouse", "seal", "jaguar", "fire_truck", "sea-lion", "Tiger"]
    root = write_image_folder(tmp_path / "my_images", {"train": {n: 6 for n in names}, "val": {n: 2 for n in names}}, ".png")
    args = [f"data.root={root}", f"run_root={tmp_path / 'runs'}", f"cache_root={tmp_path / 'runs' / '_shared'}", *OFFLINE]
    result = relaxkd(capsys, monkeypatch, "run", str(CONFIG), *args)
    assert result.code == 0, result.err
    run_dir = tmp_path / "runs" / "my_images"
    classes = json.loads(next(run_dir.glob("embed-images-*/classes.json")).read_text())
    synsets = dict(zip(classes["classes"], classes["synsets"]))
    assert synsets["sea-lion"] == "sea_lion.n.01" and synsets["Tiger"] == "tiger.n.02" and synsets["crane"] == "crane.n.05"
    assert synsets["seal"] == "seal.n.09" and synsets["fire_truck"] == "fire_engine.n.01"
    report = (run_dir / "report" / "report.md").read_text()
    assert "**Did the teachers help?** On this data the distilled student" in report and "--family table1" in report
