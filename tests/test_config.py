"""Configuration: every shipped config validates; bad keys and values are rejected by name."""
from pathlib import Path

import pytest

from relaxkd.config import check_names, load_config
from relaxkd.errors import UserError

from conftest import REPO

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_all_expected_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"demo", "cifar100", "cifar100_lt", "imagenet", "imagenet_lt", "scene", "utkface"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_file_validates(path):
    cfg = load_config(path)
    check_names(cfg)
    assert cfg.name == path.stem
    assert abs(sum(cfg.multimodal.proportions.values()) - 1) < 1e-9


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["distill.temperature=3", "multimodal.proportions={gt: 0.5, noise: 0.5}", "seed=7"])
    assert cfg.distill.temperature == 3.0
    assert cfg.multimodal.proportions == {"gt": 0.5, "noise": 0.5}
    assert cfg.seed == 7


def test_presets_fill_unset_values_only():
    cfg = load_config(None, ["multimodal.preset=authors_code", "distill.preset=authors_code"])
    assert (cfg.multimodal.lambda_hier, cfg.multimodal.lambda_cos) == (0.2, 0.005)
    assert (cfg.distill.ce_weight, cfg.distill.kd_weight, cfg.distill.temperature) == (0.6, 0.4, 3.0)
    assert cfg.distill.aggregate == "mean_losses"
    cfg = load_config(None, ["multimodal.preset=authors_code", "multimodal.lambda_hier=0.3"])
    assert cfg.multimodal.lambda_hier == 0.3
    assert load_config(None).multimodal.lambda_hier == 0.1


@pytest.mark.parametrize(
    "override, expected",
    [
        (["distill.tempreature=2"], "unknown key 'distill.tempreature' (did you mean 'temperature'?)"),
        (["bogus=1"], "unknown key 'bogus'"),
        (["distill.aggregate=median"], "'mean_logits', 'mean_losses' or 'adaptive'"),
        (["multimodal.proportions={gt: 0.5, wn: 0.6}"], "proportions must sum to 1"),
        (["multimodal.proportions={gt: 1.5, wn: -0.5}"], "proportions must be non-negative"),
        (["multimodal.proportions={gt: 0.5, words: 0.5}"], "unknown text mode 'words'; valid modes: gt, wn, noise, none"),
        (["multimodal.temperature=0"], "multimodal.temperature: Input should be greater than 0"),
        (["relax.temperature=0.01"], "relax.temperature is now multimodal.temperature"),
        (["distill.teachers=[strong, teacher9]"], "unknown teacher 'teacher9'"),
        (["noequals"], "is not key=value"),
    ],
)
def test_bad_config_values_name_the_problem(override, expected):
    with pytest.raises(UserError) as err:
        load_config(None, override)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.dataset=mnist", "unknown dataset 'mnist'; valid datasets:"),
        ("distill.student=vgg", "unknown backbone 'vgg'"),
        ("multimodal.head=transformer", "unknown fusion head 'transformer'"),
    ],
)
def test_unknown_registry_names_list_valid_ones(override, expected):
    cfg = load_config(None, [override])
    with pytest.raises(UserError, match=expected.split("'")[0]) as err:
        check_names(cfg)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_unknown_dataset_lists_every_registered_one():
    from relaxkd.data import DATASETS

    with pytest.raises(UserError) as err:
        check_names(load_config(None, ["data.dataset=mnist"]))
    listed = str(err.value).split("valid datasets: ")[1]
    assert sorted(n.strip() for n in listed.split(",")) == sorted(DATASETS.names()) and "digits" in listed


def test_whether_a_method_needs_teachers_is_the_methods_to_say():
    with pytest.raises(UserError, match="KD method 'kd' needs teachers; list them in distill.teachers"):
        check_names(load_config(None, ["distill.teachers=[]"]))
    check_names(load_config(None, ["distill.teachers=[]", "distill.loss=none"]))


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


def test_default_run_name_follows_the_data_not_another_run(tmp_path):
    from relaxkd.config import load_config

    shapes = tmp_path / "shapes"
    shapes.mkdir()
    demo = REPO / "configs" / "demo.yaml"
    assert load_config(demo).name == "demo"
    # pointing the demo config at your own images does not write into runs/demo
    assert load_config(demo, ["data.dataset=imagefolder", f"data.root={shapes}"]).name == "shapes"
    assert load_config(demo, ["data.dataset=scene"]).name == "scene"
    assert load_config(demo, ["data.dataset=imagefolder", f"data.root={shapes}", "name=mine"]).name == "mine"
    own = tmp_path / "myconfig.yaml"
    own.write_text(f"data: {{dataset: imagefolder, root: {shapes}}}\n")
    assert load_config(own).name == "myconfig"  # a config file of its own: named after the file
