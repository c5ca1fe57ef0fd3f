"""Teachers (issue 4): T_x label leakage on the demo data, the relaxed bank, reloading, bad input.

Golden values of eq. 6's terms (hierarchical loss, cosine regulariser) live in test_losses.py.
Config-level bad input (proportions not summing to 1, negative shares, unknown text modes) is
covered by test_config.py::test_bad_config_values_name_the_problem.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from relaxkd.config import load_config
from relaxkd.engine.settings import OptimConfig
from relaxkd.errors import UserError
from relaxkd.stages import multimodal as multimodal_stage
from relaxkd.stages.context import Context
from relaxkd.stages.embed_images import embed_images
from relaxkd.stages.multimodal import multimodal_teacher
from relaxkd.stages.relax import relax
from relaxkd.stages.teacher_loading import load_multimodal
from relaxkd.teachers import MODE_IDS, MultimodalTeacher, TxSettings

from conftest import REPO, tiny_overrides
from data_fixtures import write_scene

#: cheapest T_x schedule measured to keep the leakage ordering: gt 100, wn 87.2, noise 79.2
#: (configs/demo.yaml's 30 epochs give gt 100, wn 90.6, noise 84.2; the tiny fixture's 3 give chance)
LEAKAGE_OPTIM = "multimodal.optim={epochs: 10, batch_size: 128, lr: 0.05, warmup_epochs: 1, milestones: [8]}"


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    return tmp_path_factory.mktemp("teachers") / "runs"


def pipeline(run_root, *overrides: str) -> Context:
    torch.set_num_threads(1)  # module-scoped callers run before the autouse thread fixture
    return Context(load_config(REPO / "configs" / "demo.yaml", tiny_overrides(run_root) + list(overrides)))


def tx_top1(run_root, proportions: str, *extra: str) -> float:
    art = multimodal_teacher(pipeline(run_root, LEAKAGE_OPTIM, f"multimodal.proportions={proportions}", *extra))
    return art.read_json("metrics.json")["top1"]


def test_ground_truth_text_leaks_the_label(run_root):
    # text-only noise (the label stays the target); Table 2's label noise makes the noisy class the
    # target too, and then the class name on the clean validation set leaks the label again
    gt, wn, noise = (tx_top1(run_root, p, "multimodal.noise=text") for p in ("{gt: 1.0}", "{wn: 1.0}", "{noise: 1.0}"))
    assert gt >= 99.0, gt
    # without the class name the teacher relies on the (random-weight) image embedding: clearly worse
    assert wn <= gt - 5.0, (gt, wn)
    assert noise <= gt - 5.0, (gt, noise)
    assert min(wn, noise) > 50.0, (wn, noise)  # but it learned something (chance is 10 %)


def test_learnable_bank_moves_and_stays_unit_norm(run_root):
    p = pipeline(run_root, LEAKAGE_OPTIM, "multimodal.proportions={wn: 1.0}")
    teacher = load_multimodal(p, multimodal_teacher(p))
    relaxed = load_file(str(relax(p).file("bank.safetensors")))["bank"]
    bank = teacher.bank.embeddings.detach()
    torch.testing.assert_close(bank.norm(dim=1), torch.ones(len(bank)), atol=1e-6, rtol=0)
    assert (bank - relaxed).abs().max() > 1e-4  # training did change it, so the norm check means something
    torch.testing.assert_close(teacher.bank.pretrained, relaxed)  # the regulariser's anchor is the relaxed bank


def test_fixed_bank_is_bit_identical_to_the_relaxed_bank(run_root):
    p = pipeline(run_root, "multimodal.proportions={wn: 1.0}", "multimodal.bank=fixed")
    teacher = load_multimodal(p, multimodal_teacher(p))
    relaxed = load_file(str(relax(p).file("bank.safetensors")))["bank"]
    assert not teacher.bank.learnable
    assert torch.equal(teacher.bank.embeddings.detach(), relaxed)


def test_reloaded_teacher_reproduces_its_validation_logits(run_root, monkeypatch):
    trained: list[MultimodalTeacher] = []
    build = multimodal_stage.new_teacher

    def keep_module(self, emb, bank):
        trained.append(build(self, emb, bank))
        return trained[-1]

    monkeypatch.setattr(multimodal_stage, "new_teacher", keep_module)
    # all three text modes, so gt, noise and wn texts must all come back from the artifact
    p = pipeline(run_root, "multimodal.proportions={gt: 0.3, wn: 0.4, noise: 0.3}")
    art = multimodal_teacher(p)
    assert len(trained) == 1, "the teacher must be trained here, not reused"
    reloaded = load_multimodal(p, art)
    emb = load_file(str(embed_images(p).file("embeddings.safetensors")))
    val, labels = emb["val"].float(), emb["val_labels"]

    size = p.cfg.multimodal.optim.batch_size  # the validation loader's batches: the same arithmetic

    def val_logits(module):
        module.eval()
        with torch.no_grad():
            return torch.cat([
                module.logits(val[i:i + size], labels[i:i + size], torch.arange(i, min(i + size, len(val))), "val")
                for i in range(0, len(val), size)
            ])

    after_training = trained[0].last_val_logits
    assert after_training is not None and after_training.shape == (len(val), p.num_classes)
    assert torch.equal(val_logits(trained[0]), after_training)
    assert torch.equal(val_logits(reloaded), after_training)
    top1 = 100.0 * (after_training.argmax(1) == labels).float().mean().item()
    assert top1 == pytest.approx(art.read_json("metrics.json")["top1"])


def test_wn_share_without_a_bank_is_a_user_error():
    teacher = MultimodalTeacher(
        TxSettings(optim=OptimConfig(epochs=1)), embed_dim=4, num_classes=3, bank_size=0, num_train=5, num_val=2
    )
    teacher.train_modes[2] = MODE_IDS["wn"]  # one wn sample is enough
    with pytest.raises(UserError) as err:
        teacher.check_text_modes()
    message = str(err.value)
    assert "multimodal.proportions" in message and "relaxkd relax" in message and "\n" not in message
    with pytest.raises(UserError, match="relaxkd relax"):  # also when logits are asked for directly
        teacher.logits(torch.randn(5, 4), torch.zeros(5, dtype=torch.long), torch.arange(5), "train")


def test_teacher_for_another_dataset_and_class_count_is_refused(run_root, tmp_path):
    art = multimodal_teacher(pipeline(run_root, "multimodal.proportions={gt: 1.0}"))
    scene = write_scene(tmp_path / "scene", [i % 6 for i in range(60)])
    other = pipeline(tmp_path / "other", "data.dataset=scene", f"data.root={scene}")
    with pytest.raises(UserError) as err:
        load_multimodal(other, art)
    message = str(err.value)
    assert "digits with 10 classes" in message and "scene with 6 classes" in message and "\n" not in message


def test_text_modes_follow_the_configured_proportions(run_root):
    metrics = multimodal_teacher(pipeline(run_root, "multimodal.proportions={gt: 0.3, wn: 0.4, noise: 0.3}")).read_json(
        "metrics.json"
    )
    # label noise (the default) relabels training samples only: validation gives noise samples their own class name
    for split, shares in (("train", {"gt": 0.3, "wn": 0.4, "noise": 0.3}), ("val", {"gt": 0.6, "wn": 0.4})):
        measured = metrics["provenance"][f"measured_{split}_proportions"]
        assert set(measured) == set(shares)
        for mode, share in shares.items():
            assert measured[mode] == pytest.approx(share, abs=0.002), (split, measured)
    json.dumps(metrics)  # artifact metrics stay plain JSON
