"""Table 1's DMAE row fine-tunes with DMAE's own recipe (issue 25 item 4).

References: UCSC-VLAA/DMAE ``finetune.sh`` (batch 128 per GPU, 100 epochs, blr 5e-4, weight decay
0.05, drop path 0.1, mixup 0.8, cutmix 1.0, reprob 0.25) and ``main_finetune.py`` (lr = blr · batch
/ 256, layer decay 0.7, min_lr 1e-6, 5 warm-up epochs, label smoothing 0.1, AdamW over
``param_groups_lrd``, SoftTargetCrossEntropy under mixup).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from relaxkd.config import load_config
from relaxkd.engine import optim
from relaxkd.engine.settings import OptimConfig
from relaxkd.methods.base import MethodContext, build_method
from relaxkd.models import build_backbone

ROOT = Path(__file__).resolve().parents[1]


def _printed(dataset: str) -> dict:
    from relaxkd.stages.plan import trial_config_text

    text = trial_config_text(load_config(ROOT / "configs" / f"{dataset}.yaml"), "table1", "dmae")
    assert text.startswith("# table1/dmae\n")
    return yaml.safe_load(text)


@pytest.mark.parametrize("dataset, batch, lr", [("imagenet", 512, 1e-3), ("cifar100", 128, 2.5e-4)])
def test_print_config_shows_dmaes_recipe_for_the_datasets_batch(dataset, batch, lr):
    d = _printed(dataset)["distill"]
    o = d["optim"]
    assert (o["optimizer"], o["batch_size"], o["base_lr"]) == ("adamw", batch, 5e-4)
    assert o["lr"] == pytest.approx(5e-4 * batch / 256) == pytest.approx(lr)
    assert (o["epochs"], o["schedule"], o["warmup_epochs"], o["min_lr"], o["weight_decay"]) == (
        100,
        "warmup_cosine",
        5,
        1e-6,
        0.05,
    )
    r = d["method_params"]
    assert (r["layer_decay"], r["drop_path"], r["mixup"], r["cutmix"], r["label_smoothing"], r["random_erasing"]) == (
        0.7,
        0.1,
        0.8,
        1.0,
        0.1,
        0.25,
    )


def test_print_config_from_the_command_line(capsys, monkeypatch):
    from cli_helpers import relaxkd

    result = relaxkd(capsys, monkeypatch, "sweep", str(ROOT / "configs" / "imagenet.yaml"), "--family", "table1",
                     "--trials", "dmae", "--print-config")
    assert result.code == 0 and "# table1/dmae" in result.out and "lr: 0.001" in result.out and "layer_decay: 0.7" in result.out


def test_base_lr_is_the_linear_scaling_rule_and_stays_out_of_default_dumps():
    assert OptimConfig(base_lr=5e-4, batch_size=512).lr == pytest.approx(1e-3)
    assert "base_lr" not in OptimConfig().model_dump()


def _dmae(num_classes: int = 10):
    return build_method("dmae", MethodContext(num_classes=num_classes, teacher_names=["strong"]))


def test_layer_decay_groups_drive_the_optimiser_rates():
    """param_groups_lrd: layer l of L blocks gets lr · 0.7^(L + 1 − l); no decay on biases, norms, tokens."""
    method = _dmae()
    student = build_backbone("vit_micro", 10)
    cfg = OptimConfig(optimizer="adamw", base_lr=5e-4, batch_size=256, weight_decay=0.05, schedule="warmup_cosine",
                      warmup_epochs=5, min_lr=1e-6, epochs=100)
    opt = optim.build_optimizer(method.student_param_groups(student, cfg.weight_decay), cfg)
    depth = len(student.blocks)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(student.head.weight)]["lr"] == pytest.approx(5e-4)
    assert by_param[id(student.patch_embed.proj.weight)]["lr"] == pytest.approx(5e-4 * 0.7 ** (depth + 1))
    assert by_param[id(student.blocks[0].attn.qkv.weight)]["lr"] == pytest.approx(5e-4 * 0.7 ** depth)
    assert by_param[id(student.blocks[0].attn.qkv.weight)]["weight_decay"] == 0.05
    assert by_param[id(student.blocks[0].attn.qkv.bias)]["weight_decay"] == 0.0
    assert by_param[id(student.pos_embed)]["weight_decay"] == 0.0


def test_drop_path_rises_to_its_rate_over_the_blocks():
    from timm.layers import DropPath

    method, student = _dmae(), build_backbone("vit_micro", 10)
    method.prepare_student(student)
    rates = [b.drop_path1.drop_prob if isinstance(b.drop_path1, DropPath) else 0.0 for b in student.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.1, len(student.blocks)).tolist())


def test_mixup_cutmix_soft_targets_and_their_loss():
    from relaxkd.methods.base import Outputs, Step

    torch.manual_seed(0)
    method = _dmae(num_classes=5)
    images, targets = torch.randn(8, 3, 16, 16), torch.randint(5, (8,))
    mixed, soft = method.mix_batch(images, targets)
    assert mixed.shape == images.shape and soft.shape == (8, 5)
    assert torch.allclose(soft.sum(1), torch.ones(8)) and float(soft.min()) >= 0.1 / 5 - 1e-6  # smoothing 0.1
    _, odd = method.mix_batch(images[:7], targets[:7])  # an odd last batch: smoothed one-hot only
    assert torch.allclose(odd.max(1).values, torch.full((7,), 0.9 + 0.1 / 5))
    logits = torch.randn(8, 5)
    step = Step(epoch=0, step=0, images=mixed, targets=soft, indices=torch.arange(8), student=Outputs(logits), teachers={})
    soft_target_ce = torch.sum(-soft * torch.log_softmax(logits, -1), -1).mean()  # timm's SoftTargetCrossEntropy
    assert float(method(step)["loss"]) == pytest.approx(float(soft_target_ce))
    assert math.isfinite(float(soft_target_ce))
