"""Bad input at the `relaxkd` command line: one `error: ...` line on stderr, exit code 2, no traceback.

Most cases call `relaxkd.cli.main()` in-process (fast); `test_real_entry_point_*` run the installed
console script to prove the same holds for what users type. docs/errors.md lists every message.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from relaxkd import cli

from cli_helpers import assert_user_error, relaxkd, relaxkd_subprocess
from conftest import REPO
from data_fixtures import write_corrupt_image, write_image, write_image_folder

DEMO = str(REPO / "configs" / "demo.yaml")


@pytest.fixture
def run_root(committed_run) -> Path:
    return committed_run.root


@pytest.fixture
def tiny(committed_run) -> list[str]:
    """Overrides that point a command at the session's committed tiny run."""
    return committed_run.args


def image_folder_args(tiny: list[str], root: Path) -> list[str]:
    return [*tiny, "data.dataset=imagefolder", f"data.root={root}"]


def cat_dog_folder(root: Path) -> Path:
    return write_image_folder(root, {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}})


# -- good path ---------------------------------------------------------------------------------
def test_validate_demo_config_prints_resolved_yaml(capsys, monkeypatch):
    result = relaxkd(capsys, monkeypatch, "validate", DEMO, "distill.temperature=3")
    assert result.code == 0 and result.err == ""
    resolved = yaml.safe_load(result.out)
    assert resolved["name"] == "demo"
    assert resolved["data"]["dataset"] == "digits"
    assert resolved["distill"]["temperature"] == 3.0


# -- config: files, keys, values ----------------------------------------------------------------
def test_missing_config_file(capsys, monkeypatch, tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_user_error(
        relaxkd(capsys, monkeypatch, "validate", missing),
        f"error: config file '{missing}' does not exist; pass a YAML file such as configs/demo.yaml",
    )


def test_invalid_yaml_names_the_line(capsys, monkeypatch, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\ndata: [1, 2\n  foo: }\n")
    assert_user_error(
        relaxkd(capsys, monkeypatch, "validate", bad), f"error: config file '{bad}' is not valid YAML at line 3; fix the syntax"
    )


def test_yaml_that_is_not_a_mapping(capsys, monkeypatch, tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    assert_user_error(relaxkd(capsys, monkeypatch, "validate", listing), "must hold a mapping of sections, not list")


def test_config_path_that_is_a_directory(capsys, monkeypatch, tmp_path):
    assert_user_error(
        relaxkd(capsys, monkeypatch, "validate", tmp_path),
        f"error: config file '{tmp_path}' is a directory; pass a YAML file such as configs/demo.yaml",
    )


def test_config_file_that_is_not_text(capsys, monkeypatch, tmp_path):
    image = write_image(tmp_path / "photo.png")
    binary = image.rename(tmp_path / "photo.yaml")
    assert_user_error(
        relaxkd(capsys, monkeypatch, "validate", binary),
        f"error: config file '{binary}' is not a text file (not UTF-8); pass a YAML file such as configs/demo.yaml",
    )


def test_unreadable_config_file(capsys, monkeypatch, tmp_path):
    locked = tmp_path / "locked.yaml"
    locked.write_text("name: x\n")
    open_file = Path.open

    def denied(self, *args, **kwargs):  # chmod 000 does not stop root, who runs some CI machines
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return open_file(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    assert_user_error(
        relaxkd(capsys, monkeypatch, "validate", locked),
        f"error: cannot read config file '{locked}': Permission denied; check its permissions",
    )


def test_unknown_config_key_suggests_the_close_one(capsys, monkeypatch, tiny, intact):
    assert_user_error(
        relaxkd(capsys, monkeypatch, "validate", DEMO, *tiny, "data.datset=digits"),
        "error: config: unknown key 'data.datset' (did you mean 'dataset'?); valid keys here: dataset, root,",
        intact=intact,
    )


def test_unknown_top_level_section(capsys, monkeypatch, tiny, intact):
    assert_user_error(
        relaxkd(capsys, monkeypatch, "validate", DEMO, *tiny, "foo.bar=1"),
        "error: config: unknown key 'foo'; valid keys here: profile, name, seed,",
        intact=intact,
    )


@pytest.mark.parametrize(
    "override, expected",
    [
        ("noequals", "error: override 'noequals' is not key=value; write e.g. distill.temperature=3"),
        (
            "multimodal.proportions={gt: 0.5, wn: 0.6}",
            "error: config: multimodal.proportions: proportions must sum to 1, got 1.1",
        ),
        ("multimodal.proportions={gt: 0.5, xx: 0.5}", "unknown text mode 'xx'; valid modes: gt, wn, noise, none"),
        ("distill.temperature=-1", "error: config: distill.temperature: Input should be greater than 0 (got -1)"),
        (
            "distill.teachers=[strong, nope]",
            "distill.teachers names unknown teacher 'nope'; valid teachers: strong, weak, strong2, tx",
        ),
        ("multimodal.temperature=0", "error: config: multimodal.temperature: Input should be greater than 0 (got 0)"),
        ("unimodal.optim.epochs=-1", "error: config: unimodal.optim.epochs: Input should be greater than 0 (got -1)"),
        ("distill.optim.batch_size=0", "error: config: distill.optim.batch_size: Input should be greater than 0 (got 0)"),
        ("data.image_size=0", "error: config: data.image_size: Input should be greater than 0 (got 0)"),
        ("data.num_workers=-1", "error: config: data.num_workers: Input should be greater than or equal to 0 (got -1)"),
    ],
    ids=[
        "override-without-equals",
        "proportions-not-summing-to-one",
        "unknown-text-mode",
        "value-out-of-range",
        "unknown-teacher",
        "zero-retrieval-temperature",
        "negative-epochs",
        "zero-batch-size",
        "zero-image-size",
        "negative-workers",
    ],
)
def test_bad_override_is_one_line(capsys, monkeypatch, tiny, intact, override, expected):
    assert_user_error(relaxkd(capsys, monkeypatch, "validate", DEMO, *tiny, override), expected, intact=intact)


# -- registry names: rejected before any work starts --------------------------------------------
def test_unknown_dataset_is_rejected_before_the_run_starts(capsys, monkeypatch, tiny, intact):
    result = relaxkd(capsys, monkeypatch, "run", DEMO, *tiny, "data.dataset=nope")
    message = assert_user_error(result, "error: unknown dataset 'nope'; valid datasets: ", intact=intact)
    assert "imagefolder" in message and "digits" in message
    assert intact.unchanged()  # nothing was written


def test_unknown_student_model(capsys, monkeypatch, tiny, intact):
    message = assert_user_error(
        relaxkd(capsys, monkeypatch, "validate", DEMO, *tiny, "distill.student=vgg99"),
        "error: unknown backbone 'vgg99'; valid backbones: ",
        intact=intact,
    )
    assert "resnet18" in message and "resnet50" in message


# -- data on disk ---------------------------------------------------------------------------------
def test_missing_data_directory(capsys, monkeypatch, tiny, intact, tmp_path):
    missing = tmp_path / "nonexistent"
    assert_user_error(
        relaxkd(capsys, monkeypatch, "embed", "images", DEMO, *image_folder_args(tiny, missing)),
        f"error: data directory {missing} for dataset 'imagefolder' does not exist: set data.root to the folder holding "
        f"train/<class>/<image>",
        after_progress=True,
        intact=intact,
    )


def test_empty_class_folder(capsys, monkeypatch, tiny, intact, tmp_path):
    root = write_image_folder(tmp_path / "data", {"train": {"cat": 2, "dog": 0}, "val": {"cat": 1, "dog": 1}})
    assert_user_error(
        relaxkd(capsys, monkeypatch, "embed", "images", DEMO, *image_folder_args(tiny, root)),
        f"error: empty class folder {root / 'train' / 'dog'}: each class folder needs at least one image",
        after_progress=True,
        intact=intact,
    )


def test_guessed_senses_are_repicked_by_the_class_images_with_clip_weights(capsys, monkeypatch, tiny, tmp_path):
    """With a CLIP weights file (here the tiny model's random weights: the pick itself is arbitrary) the
    embed stage re-picks every guessed sense by the class images and records runner-up and margin;
    the neighbourhood nouns use those senses."""
    import open_clip

    from relaxkd.clip import TINY_MODEL, register_tiny_model
    from relaxkd.config import load_config
    from relaxkd.stages.context import Context
    from relaxkd.stages.embed_images import class_synsets

    register_tiny_model()
    weights = tmp_path / "clip.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model(TINY_MODEL).state_dict(), weights)
    root = write_image_folder(
        tmp_path / "data", {"train": {"crane": 2, "seal": 2, "goldfish": 2}, "val": {"crane": 1, "seal": 1, "goldfish": 1}}
    )
    args = [*image_folder_args(tiny, root), f"clip.weights={weights}"]
    result = relaxkd(capsys, monkeypatch, "embed", "images", DEMO, *args)
    assert result.code == 0, result.err
    assert "[relaxkd] senses re-picked by the class images (2):" in result.err
    found = re.search(
        r"crane +-> crane\.n\.0(\d) \(closest of 5 noun senses to the class's images; runner-up crane\.n\.0(\d) by \d\.\d{3} "
        r"cosine\)",
        result.err,
    )
    assert found and "1" not in found.groups(), result.err  # never crane.n.01, the writer (an instance)
    classes = json.loads((Path(result.out.split("image embeddings: ")[1].strip()).parent / "classes.json").read_text())
    assert classes["classes"] == ["crane", "goldfish", "seal"] and classes["sense_sources"] == ["images", "default", "images"]
    assert (
        classes["sense_margin"][0] >= 0
        and classes["sense_margin"][1] is None
        and classes["sense_runner_up"][2] not in (None, classes["synsets"][2])
    )
    assert class_synsets(Context(load_config(DEMO, args))) == classes["synsets"]


def test_hidden_and_system_folders_are_not_classes(capsys, monkeypatch, tiny, tmp_path):
    train = {"cat": 2, "dog": 2, ".ipynb_checkpoints": 0, ".thumbnails": 1, "__MACOSX": 1}
    root = write_image_folder(tmp_path / "data", {"train": train, "val": {"cat": 1, "dog": 1, ".ipynb_checkpoints": 0}})
    result = relaxkd(capsys, monkeypatch, "embed", "images", DEMO, *image_folder_args(tiny, root))
    assert result.code == 0, result.err
    said = (
        f"[relaxkd] skipped 3 hidden or system folder(s) in {root / 'train'}, not classes: .ipynb_checkpoints, .thumbnails, "
        f"__MACOSX"
    )
    assert result.err.count(said) == 1, result.err
    assert (
        result.err.count(f"[relaxkd] skipped 1 hidden or system folder(s) in {root / 'val'}, not classes: .ipynb_checkpoints")
        == 1
    )
    classes = json.loads((Path(result.out.split("image embeddings: ")[1].strip()).parent / "classes.json").read_text())
    assert classes["classes"] == ["cat", "dog"] and classes["synsets"] == ["cat.n.01", "dog.n.01"]


@pytest.mark.parametrize("num_workers", [0, 2], ids=["main-process", "dataloader-workers"])
def test_corrupt_image_file_is_one_line_even_from_dataloader_workers(capsys, monkeypatch, tiny, intact, tmp_path, num_workers):
    root = cat_dog_folder(tmp_path / "data")
    bad = write_corrupt_image(root / "train" / "dog" / "bad.jpg")
    assert_user_error(
        relaxkd(capsys, monkeypatch, "embed", "images", DEMO, *image_folder_args(tiny, root), f"data.num_workers={num_workers}"),
        f"error: cannot read image {bad}: not an image file PIL can identify; replace or remove the file",
        after_progress=True,
        intact=intact,
    )


def test_class_missing_from_wordnet_says_how_to_override_then_the_override_works(capsys, monkeypatch, tiny, intact, tmp_path):
    folders = {"cat": 2, "qwxzzyv": 2, "sea-lyon": 2, "sea-lion": 2}
    root = write_image_folder(tmp_path / "data", {"train": folders, "val": {name: 1 for name in folders}})
    args = ["embed", "images", DEMO, *image_folder_args(tiny, root)]
    message = assert_user_error(
        relaxkd(capsys, monkeypatch, *args),
        "error: WordNet 3.0 has no noun for 2 classes 'qwxzzyv', 'sea-lyon'; write a YAML file with one "
        "`class_name: synset_name` line per class and set data.synset_overrides=<that file>. Closest nouns: ",
        "'qwxzzyv': no WordNet noun is spelled like it; choose the nearest thing it shows, e.g. `qwxzzyv: object.n.01`",
        "'sea-lyon': `sea-lyon: sea_lion.n.01` (any of several large eared seals",
        after_progress=True,
        intact=intact,
    )
    assert "'cat'" not in message and "'sea-lion'" not in message  # names WordNet knows are not listed
    # following the message's advice fixes it
    overrides = tmp_path / "synsets.yaml"
    overrides.write_text("qwxzzyv: fish.n.01\nsea-lyon: sea_lion.n.01\n")
    result = relaxkd(capsys, monkeypatch, *args, f"data.synset_overrides={overrides}")
    assert result.code == 0, result.err
    classes = json.loads((Path(result.out.split("image embeddings: ")[1].strip()).parent / "classes.json").read_text())
    assert classes["synsets"] == ["cat.n.01", "fish.n.01", "sea_lion.n.01", "sea_lion.n.01"]
    assert classes["sense_sources"] == ["default", "override", "default", "override"]


# -- other subcommands --------------------------------------------------------------------------
def test_report_on_an_empty_run_directory(capsys, monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(
        relaxkd(capsys, monkeypatch, "report", empty), f"error: no results in '{empty}': run `relaxkd run CONFIG` first"
    )


def test_sweep_unknown_family_fails_before_any_work(capsys, monkeypatch, tiny, intact):
    assert_user_error(
        relaxkd(capsys, monkeypatch, "sweep", DEMO, *tiny, "--family", "nope"),
        "error: unknown sweep family 'nope'; valid families: table1, table2, table3, figure2",
        intact=intact,
    )
    assert intact.unchanged()


def test_sweep_unknown_trial_lists_the_trials(capsys, monkeypatch, tiny, intact):
    assert_user_error(
        relaxkd(capsys, monkeypatch, "sweep", DEMO, *tiny, "--trials", "nope"),
        "error: unknown trial 'nope' in sweep table2; valid trials: gt100-wn0/tx-s, gt100-wn0/tm-tx-s,",
        intact=intact,
    )
    assert intact.unchanged()


def test_export_unknown_format(capsys, monkeypatch, tiny, intact, tmp_path):
    assert_user_error(
        relaxkd(capsys, monkeypatch, "export", DEMO, *tiny, "--format", "xyz", "--out", tmp_path / "export"),
        "error: unknown export format 'xyz'; valid formats: torchscript, onnx",
        intact=intact,
    )


def test_export_without_a_trained_student(capsys, monkeypatch, tiny, intact, run_root, tmp_path):
    assert_user_error(
        relaxkd(capsys, monkeypatch, "export", DEMO, *tiny, "--out", tmp_path / "export"),
        f"error: no trained student in '{run_root / 'demo'}'; run `relaxkd distill` first",
        intact=intact,
    )


@pytest.fixture
def export_dir(tmp_path) -> Path:
    """What `relaxkd export` writes, from an untrained tiny student (predict only needs the files)."""
    from safetensors.torch import save_file

    from relaxkd.models import build_backbone

    out = tmp_path / "export"
    out.mkdir()
    model = build_backbone("tiny_cnn", 3, "none")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "student.safetensors"))
    info = {"arch": "tiny_cnn", "num_classes": 3, "classes": ["cat", "dog", "fish"], "image_size": 8}
    (out / "student.json").write_text(json.dumps(info))
    from relaxkd.stages.export import _write_export_manifest

    _write_export_manifest(out, [out / "student.safetensors", out / "student.json"])  # as `relaxkd export` does
    return out


def test_predict_good_image_prints_a_class(capsys, monkeypatch, export_dir, tmp_path):
    image = write_image(tmp_path / "cat.png")
    result = relaxkd(capsys, monkeypatch, "predict", image, "--model", export_dir)
    assert result.code == 0, result.err
    assert re.fullmatch(rf"{re.escape(str(image))}: (cat|dog|fish) \d\.\d{{3}}\n", result.out)


def test_predict_missing_image(capsys, monkeypatch, export_dir, tmp_path):
    missing = tmp_path / "missing.png"
    assert_user_error(
        relaxkd(capsys, monkeypatch, "predict", missing, "--model", export_dir), f"error: image file '{missing}' does not exist"
    )


@pytest.mark.parametrize("name", ["notes.txt", "garbage.jpg"])
def test_predict_non_image_file(capsys, monkeypatch, export_dir, tmp_path, name):
    path = write_corrupt_image(tmp_path / name)
    assert_user_error(
        relaxkd(capsys, monkeypatch, "predict", path, "--model", export_dir),
        f"error: image file '{path}' is not a readable image",
    )


def test_predict_with_a_folder_that_is_no_export(capsys, monkeypatch, tmp_path):
    assert_user_error(
        relaxkd(capsys, monkeypatch, "predict", tmp_path / "x.png", "--model", tmp_path),
        f"error: '{tmp_path}' is not an export directory (no student.json); run `relaxkd export` first",
    )


# -- command-line syntax (click/typer usage errors) ---------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bogus"], "error: No such command 'bogus'. (see `relaxkd --help`)"),
        (["validate"], "error: Missing argument 'config'. (see `relaxkd validate --help`)"),
        (["validate", DEMO, "--nope"], "error: No such option: --nope (see `relaxkd validate --help`)"),
        (
            ["teacher", DEMO, "--kind", "bogus"],
            "error: Invalid value for '--kind': 'bogus' is not one of 'unimodal', 'multimodal'.",
        ),
        (
            ["predict", "x.png", "--model", ".", "--top", "abc"],
            "error: Invalid value for '--top': Input should be a valid integer",
        ),
    ],
    ids=["unknown-command", "missing-argument", "unknown-option", "bad-choice", "bad-integer"],
)
def test_usage_errors(capsys, monkeypatch, args, expected):
    assert_user_error(relaxkd(capsys, monkeypatch, *args), expected)


def test_group_without_a_subcommand_prints_its_help(capsys, monkeypatch):
    result = relaxkd(capsys, monkeypatch, "embed")
    assert result.code == 2
    assert "Traceback" not in result.err
    shown = result.out + result.err  # typer prints help with rich on stdout, plain click on stderr
    assert "images" in shown and "nouns" in shown


def test_ctrl_c_says_how_to_resume(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("relaxkd.config.load_config", interrupted)
    result = relaxkd(capsys, monkeypatch, "validate", DEMO)
    assert result.code == 130
    assert result.err == "interrupted: completed artifacts are kept; rerun the same command to resume\n"


def test_a_bug_keeps_its_traceback(capsys, monkeypatch):
    """Only bad input is shortened: an unexpected error must stay debuggable."""
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("relaxkd.config.load_config", bug)
    monkeypatch.setattr(sys, "argv", ["relaxkd", "validate", DEMO])
    with pytest.raises(ZeroDivisionError):
        cli.main()


# -- the installed console script ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["validate", DEMO, "data.datset=digits"], "error: config: unknown key 'data.datset' (did you mean 'dataset'?)"),
        (["bogus"], "error: No such command 'bogus'."),
    ],
    ids=["config-error", "usage-error"],
)
def test_real_entry_point_prints_one_line(tmp_path, args, expected):
    assert_user_error(relaxkd_subprocess(*args, cwd=tmp_path), expected)
