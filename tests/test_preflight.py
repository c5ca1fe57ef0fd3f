"""`relaxkd validate`: registry names and the paths a config names, checked without importing torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from relaxkd import preflight
from relaxkd.config import load_config
from relaxkd.errors import UserError

from cli_helpers import assert_user_error, relaxkd
from conftest import REPO

DEMO = str(REPO / "configs" / "demo.yaml")


def test_name_lists_mirror_the_registries():
    from relaxkd.data import DATASETS
    from relaxkd.methods import METHODS
    from relaxkd.models import BACKBONES, FUSION_HEADS

    assert sorted(preflight.DATASETS) == DATASETS.names()
    assert sorted(preflight.BACKBONES) == BACKBONES.names()
    assert sorted(preflight.FUSION_HEADS) == FUSION_HEADS.names()
    assert set(preflight.PLAIN_METHODS) <= set(METHODS.names())
    # the built-in methods (tests register plug-ins of their own)
    assert set(preflight.METHODS) == {n for n in METHODS.names() if METHODS.get(n).__module__.startswith("relaxkd.methods.")}


def test_validate_does_not_import_torch(tmp_path):
    code = (
        f"import sys; from relaxkd import cli; sys.argv = ['relaxkd', 'validate', {DEMO!r}]\n"
        "try:\n    cli.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'validate imported torch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_unknown_names_still_name_the_valid_choices(capsys, monkeypatch):
    assert_user_error(
        relaxkd(capsys, monkeypatch, "validate", DEMO, "distill.student=vgg99"),
        "error: unknown backbone 'vgg99'; valid backbones: resnet18, resnet50, tiny_cnn, vit_base_patch16, vit_micro, "
        "vit_tiny_patch16",
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.dataset=imagefolder"], "dataset 'imagefolder' needs a data directory: set data.root"),
        (["data.dataset=imagefolder", "data.root={missing}"], "data directory '{missing}' (data.root) does not exist"),
        (["data.synset_overrides={missing}"], "synset override file '{missing}' (data.synset_overrides) does not exist"),
        (["unimodal.weights={missing}"], "unimodal.weights: '{missing}' is not a file"),
        (["clip.weights={missing}.pt"], "clip.weights: file '{missing}.pt' does not exist"),
    ],
)
def test_paths_are_checked(tmp_path, overrides, message):
    missing = str(tmp_path / "nope")
    cfg = load_config(DEMO, [o.format(missing=missing) for o in overrides])
    with pytest.raises(
        UserError, match=message.format(missing=missing).replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        preflight.check_paths(cfg)


def test_existing_paths_pass(tmp_path):
    (tmp_path / "overrides.yaml").write_text("zero: zero.n.02\n")
    cfg = load_config(
        DEMO, ["data.dataset=imagefolder", f"data.root={tmp_path}", f"data.synset_overrides={tmp_path / 'overrides.yaml'}"]
    )
    preflight.check_paths(cfg)
    preflight.check_paths(load_config(DEMO, ["data.dataset=cifar100", f"data.root={tmp_path / 'new'}", "data.download=true"]))
