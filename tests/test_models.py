"""Backbones, fusion heads, the text bank and the batched teacher ensemble."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F

from relaxkd.errors import UserError
from relaxkd.models import BACKBONES, FUSION_HEADS, TeacherEnsemble, TextBank, build_backbone, build_fusion_head
from relaxkd.models import backbones as backbones_module


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _images(batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, 3, size, size)


# ---- backbones -----------------------------------------------------------------------------


def test_registry_and_tiny_cnn():
    assert {"resnet18", "resnet50", "tiny_cnn"} <= set(BACKBONES.names())
    model = build_backbone("tiny_cnn", 7).eval()
    assert model(_images()).shape == (2, 7)
    assert model(_images(size=8)).shape == (2, 7)  # the 8×8 digits demo
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert model.input_stats == "imagenet" == BACKBONES.get("tiny_cnn").input_stats


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnets_give_logits(name):
    model = build_backbone(name, 5).eval()
    with torch.no_grad():
        assert model(_images()).shape == (2, 5)
    assert model.input_stats == "imagenet"


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(UserError, match="resnet18.*resnet50.*tiny_cnn"):
        build_backbone("vit", 5)


def test_backbone_from_state_dict_file(tmp_path):
    source = build_backbone("resnet18", 10).eval()
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    x = _images()

    same = build_backbone("resnet18", 10, weights=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(same(x), source(x))

    retargeted = build_backbone("resnet18", 3, weights=path)
    assert retargeted.fc.out_features == 3
    torch.testing.assert_close(retargeted.conv1.weight, source.conv1.weight)

    nested = tmp_path / "nested.ckpt"
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, nested)
    torch.testing.assert_close(build_backbone("resnet18", 10, weights=nested).fc.weight, source.fc.weight)


def test_backbone_weights_mismatch_and_bad_files(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(build_backbone("tiny_cnn", 4).state_dict(), path)
    with pytest.raises(UserError, match=r"resnet18") as info:
        build_backbone("resnet18", 4, weights=path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)

    with pytest.raises(UserError, match="no file"):
        build_backbone("tiny_cnn", 4, weights=tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="is not a PyTorch or safetensors checkpoint"):
        build_backbone("tiny_cnn", 4, weights=garbage)


def test_imagenet_weights_offline_and_online(monkeypatch):
    def offline(_name):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(backbones_module, "_download_imagenet_state_dict", offline)
    with pytest.raises(UserError, match="state-dict file path"):
        build_backbone("resnet18", 5, weights="imagenet")
    with pytest.raises(UserError, match="no ImageNet weights"):
        build_backbone("tiny_cnn", 5, weights="imagenet")

    pretrained = build_backbone("resnet18", 1000).state_dict()
    requested = []
    monkeypatch.setattr(
        backbones_module, "_download_imagenet_state_dict", lambda name: requested.append(name) or pretrained
    )
    model = build_backbone("resnet18", 5, weights="imagenet")
    assert requested == ["ResNet18_Weights.IMAGENET1K_V1"]
    assert model.fc.out_features == 5
    torch.testing.assert_close(model.layer1[0].conv1.weight, pretrained["layer1.0.conv1.weight"])
    assert BACKBONES.get("resnet50").imagenet_weights == "ResNet50_Weights.IMAGENET1K_V2"


# ---- fusion heads --------------------------------------------------------------------------


def test_mlp_head():
    head = build_fusion_head("mlp", 16, 4)
    assert head(torch.randn(3, 16)).shape == (3, 4)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 512), (512, 512), (512, 4)]
    small = build_fusion_head("mlp", 16, 4, hidden_dim=8, dropout=0.5)
    assert [m.p for m in small.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    assert isinstance(list(small.modules())[-1], torch.nn.Linear)  # logits are never dropped
    with pytest.raises(UserError, match="hidden_dim"):
        build_fusion_head("mlp", 16, 4, width=3)
    with pytest.raises(UserError, match="mlp"):
        build_fusion_head("transformer", 16, 4)
    assert FUSION_HEADS.names() == ["mlp", "resnet50-1x1"]


def test_resnet50_1x1_head_runs_on_vectors():
    head = build_fusion_head("resnet50-1x1", 16, 6)
    assert head.resnet.conv1.in_channels == 16 and head.resnet.conv1.kernel_size == (7, 7)  # the authors' stem on a 1×1 input
    assert head(torch.randn(4, 16)).shape == (4, 6)  # train mode (BatchNorm over the batch)
    with torch.no_grad():
        assert head.eval()(torch.randn(2, 16)).shape == (2, 6)


# ---- text bank -----------------------------------------------------------------------------


def test_text_bank_renormalize_and_state():
    bank = TextBank(torch.randn(5, 8) * 3)
    torch.testing.assert_close(bank.embeddings.norm(dim=1), torch.ones(5))
    pretrained = bank.pretrained.clone()
    optimizer = torch.optim.SGD(bank.parameters(), lr=0.5)
    loss = -(bank.embeddings @ torch.randn(8)).sum()
    loss.backward()
    optimizer.step()
    assert not torch.allclose(bank.embeddings.norm(dim=1), torch.ones(5))
    bank.renormalize_()
    torch.testing.assert_close(bank.embeddings.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(bank.pretrained, pretrained)
    assert not bank.pretrained.requires_grad and bank.learnable

    state = bank.state_dict()
    assert set(state) == {"embeddings", "pretrained"}
    restored = TextBank(torch.zeros(5, 8))
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.embeddings, bank.embeddings)
    torch.testing.assert_close(restored.pretrained, pretrained)

    frozen = TextBank(torch.randn(5, 8), learnable=False)
    assert not frozen.learnable and list(frozen.parameters())[0].requires_grad is False


# ---- teacher ensemble ----------------------------------------------------------------------


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Distinct BatchNorm running statistics so eval-mode differences would show."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_teacher_ensemble_batched_equals_loop():
    teachers = [_perturbed(build_backbone("resnet18", 5)) for _ in range(3)]
    ensemble = TeacherEnsemble(teachers)
    assert ensemble.batched
    x = _images(4)
    with torch.no_grad():
        expected = torch.stack([teacher(x) for teacher in teachers])
    logits = ensemble(x)
    assert logits.shape == (3, 4, 5)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)

    ensemble.train()  # a parent going to train mode must not switch the teachers out of eval
    torch.testing.assert_close(ensemble(x), expected, atol=1e-5, rtol=1e-5)
    assert not logits.requires_grad
    assert list(ensemble.parameters()) == [] and list(ensemble.buffers()) == [] and ensemble.state_dict() == {}
    assert ensemble.input_stats == ["imagenet"] * 3
    assert all(not p.requires_grad for teacher in teachers for p in teacher.parameters())


def test_teacher_ensemble_mixed_architectures_loop():
    teachers = [_perturbed(build_backbone("tiny_cnn", 5)), _perturbed(build_backbone("resnet18", 5))]
    ensemble = TeacherEnsemble(teachers)
    assert not ensemble.batched
    ensemble.train()
    assert all(not teacher.training for teacher in teachers)
    x = _images(3)
    with torch.no_grad():
        expected = torch.stack([teacher(x) for teacher in teachers])
    torch.testing.assert_close(ensemble(x), expected, atol=1e-5, rtol=1e-5)
    ensemble.double()  # .to() reaches teachers held outside the module tree
    assert ensemble(x.double()).dtype == torch.float64


def test_teacher_ensemble_moves_with_to():
    teachers = [_perturbed(build_backbone("tiny_cnn", 3)) for _ in range(2)]
    ensemble = TeacherEnsemble(teachers).double()
    x = _images(2).double()
    expected = torch.stack([teacher.double()(x) for teacher in teachers])
    torch.testing.assert_close(ensemble(x), expected)
    assert F.softmax(ensemble(x), dim=-1).shape == (2, 2, 3)


@pytest.mark.parametrize("arch", ["tiny_cnn", "resnet18"])
def test_teacher_ensemble_folds_batch_norm(arch):
    """The fused network folds every BatchNorm into its convolution; the teachers stay as given."""
    teachers = [_perturbed(build_backbone(arch, 7)) for _ in range(3)]
    before = [{k: v.clone() for k, v in teacher.state_dict().items()} for teacher in teachers]
    ensemble = TeacherEnsemble(teachers)
    assert ensemble.strategy == "fused"
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in ensemble._fused[0].modules())
    for teacher, state in zip(teachers, before):
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in teacher.modules()) and not teacher.training
        for key, value in teacher.state_dict().items():
            assert torch.equal(value, state[key]), key
    x = _images(5)
    with torch.no_grad():
        expected = torch.stack([teacher(x) for teacher in teachers])
    scale = expected.abs().max().item()
    torch.testing.assert_close(ensemble(x), expected, atol=1e-4 * scale, rtol=0)
    # channels_last input (as a loader may hand over) and float64 after .double()
    torch.testing.assert_close(ensemble(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-4 * scale, rtol=0)
    ensemble.double()
    with torch.no_grad():
        expected64 = torch.stack([teacher.double()(x.double()) for teacher in teachers])
    torch.testing.assert_close(ensemble(x.double()), expected64, atol=1e-5 * scale, rtol=0)


def test_compiled_teacher_ensemble_matches_the_loop_and_recompiles_after_moving():
    """compiled=True: the fused network through torch.compile (inductor freezing), same logits."""
    teachers = [_perturbed(build_backbone("tiny_cnn", 7)) for _ in range(2)]
    ensemble = TeacherEnsemble(teachers, compiled=True)
    x = _images(5)
    with torch.no_grad():
        expected = torch.stack([teacher(x) for teacher in teachers])
    scale = expected.abs().max().item()
    with torch.inference_mode():  # as TeacherSet.logits calls it
        torch.testing.assert_close(ensemble(x), expected, atol=1e-4 * scale, rtol=0)
        torch.testing.assert_close(ensemble(x[:3]), expected[:, :3], atol=1e-4 * scale, rtol=0)  # another batch size
    compiled_before = ensemble._compiled[0]
    ensemble.to("cpu")  # frozen weights are baked in: any move gives a fresh compiled wrapper
    assert ensemble._compiled[0] is not compiled_before
    with torch.inference_mode():
        torch.testing.assert_close(ensemble(x), expected, atol=1e-4 * scale, rtol=0)
    assert ensemble.state_dict() == {}  # teachers' weights live in their own artifacts


@pytest.mark.parametrize(
    "kernel, stride, padding, size, batch",
    [
        (1, 1, 0, 1, 16),  # 1x1 maps (ResNet50 layer4 at 32 px)
        (1, 1, 0, 2, 16),  # 64 output positions: matmul
        (1, 2, 0, 2, 16),  # strided 1x1 (a downsample)
        (1, 1, 0, 8, 16),  # 1024 positions: the grouped conv runs
        (3, 1, 1, 1, 4),  # 3x3 on a 1x1 map: its centre tap
        (3, 2, 1, 2, 4),  # stride 2, 2x2 -> 1x1: 4 taps
        (3, 1, 1, 2, 4),  # 2x2 output: the grouped conv runs
        (3, 1, 0, 3, 2),  # no padding, 3x3 -> 1x1: every tap
    ],
)
def test_member_convolution_as_matmul_equals_the_grouped_convolution(kernel, stride, padding, size, batch):
    """The fused network's member convolutions take a batched matmul on CPU for tiny maps: same result."""
    from relaxkd.models.ensemble import _MembersConv2d

    members, channels, out = 3, 8, 5
    conv = torch.nn.Conv2d(members * channels, members * out, kernel, stride, padding, groups=members).double()
    fused = _MembersConv2d.from_conv(conv, members)
    x = torch.randn(batch, members * channels, size, size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias, stride, padding, groups=members)
    uses_matmul = fused._as_matmul(x) is not None
    assert uses_matmul == ((kernel == 1 and batch * expected.shape[-1] ** 2 <= 256) or expected.shape[-1] == 1)
    torch.testing.assert_close(fused(x), expected, atol=1e-12, rtol=0)
    fused.float()  # cached window weights follow a cast
    torch.testing.assert_close(fused(x.float()), expected.float(), atol=1e-5, rtol=1e-5)
