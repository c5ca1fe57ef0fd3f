"""Image classifier backbones: torchvision ResNets, timm ViTs and tiny models for tests and the demo.

Every backbone maps images ``[B, 3, H, W]`` to logits ``[B, num_classes]`` and carries
``input_stats`` (the name of the normalisation statistics it expects). CNNs name their classifier
``fc``, ViTs (``family="vit"``, timm's VisionTransformer) ``head``; ViTs take any image size that
is a multiple of their patch size (positional embeddings are resampled).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.ops import Conv2dNormActivation

from relaxkd.checkpoints import differences, read_checkpoint, tensors_of
from relaxkd.errors import UserError
from relaxkd.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    factory: Callable[[int], nn.Module]  # num_classes -> randomly initialised model
    input_stats: str
    imagenet_weights: str | None = None  # torchvision weights name, e.g. "ResNet50_Weights.IMAGENET1K_V2"
    family: str = "cnn"  # "cnn" or "vit" (methods such as DMAE need a ViT student)


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


class TinyCNN(nn.Module):
    """Three conv-BN-ReLU blocks and a linear classifier (~95k parameters); any input size ≥ 4 px."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            Conv2dNormActivation(3, width, kernel_size=3),
            Conv2dNormActivation(width, 2 * width, kernel_size=3, stride=2),
            Conv2dNormActivation(2 * width, 4 * width, kernel_size=3, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


BACKBONES.register("resnet18")(
    BackboneSpec(
        lambda c: torchvision.models.resnet18(weights=None, num_classes=c),
        input_stats="imagenet",
        imagenet_weights="ResNet18_Weights.IMAGENET1K_V1",  # the only ImageNet weights for resnet18
    )
)
BACKBONES.register("resnet50")(
    BackboneSpec(
        lambda c: torchvision.models.resnet50(weights=None, num_classes=c),
        input_stats="imagenet",
        imagenet_weights="ResNet50_Weights.IMAGENET1K_V2",
    )
)
BACKBONES.register("tiny_cnn")(BackboneSpec(TinyCNN, input_stats="imagenet"))


def _vit(patch_size: int, embed_dim: int, depth: int, num_heads: int, img_size: int = 224) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        from timm.models.vision_transformer import VisionTransformer  # noqa: PLC0415 - timm only on this path (ViTs, timm's RandAugment): start-up

        return VisionTransformer(
            img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            num_classes=num_classes, dynamic_img_size=True,
        )

    return build


# timm's ViT-Ti/16 and ViT-B/16 architectures (DMAE's student is ViT-B/16), randomly initialised
BACKBONES.register("vit_tiny_patch16")(BackboneSpec(_vit(16, 192, 12, 3), input_stats="imagenet", family="vit"))
BACKBONES.register("vit_base_patch16")(BackboneSpec(_vit(16, 768, 12, 12), input_stats="imagenet", family="vit"))
# a ViT small enough for tests and the offline demo (4-pixel patches, 4 blocks of width 48)
BACKBONES.register("vit_micro")(BackboneSpec(_vit(4, 48, 4, 3, img_size=32), input_stats="imagenet", family="vit"))


def _download_imagenet_state_dict(weights_name: str) -> dict[str, Any]:
    """Fetch (or read from torch hub's cache) torchvision's ImageNet weights."""
    return torchvision.models.get_weight(weights_name).get_state_dict(progress=False, check_hash=True)


def _read_state_dict_file(name: str, path: Path) -> dict[str, Any]:
    subject = f"weights file {str(path)!r} for {name}"
    loaded = read_checkpoint(path, subject, "pass a state dict saved with torch.save(model.state_dict()) or safetensors")
    state_dict = tensors_of(loaded)
    if state_dict is None:
        raise UserError(f"{subject} holds no state dict of tensors; save model.state_dict() with torch.save or safetensors")
    return state_dict


def _guess_backbone(state_dict: dict[str, Any]) -> str | None:
    """The registered backbone whose keys and shapes ``state_dict`` has exactly, if any."""
    fc = state_dict.get("fc.weight")
    classes = fc.shape[0] if isinstance(fc, torch.Tensor) and fc.dim() == 2 else 1
    for name in BACKBONES.names():
        expected = BACKBONES.get(name).factory(classes).state_dict()
        if expected.keys() == state_dict.keys() and all(expected[k].shape == state_dict[k].shape for k in expected):
            return name
    return None


def _mismatch(name: str, state_dict: dict[str, Any], source: str) -> UserError:
    """Name both sides: what the file holds (a known backbone, or how it differs) and the model."""
    other = _guess_backbone(state_dict)
    if other is not None:
        classes = state_dict["fc.weight"].shape[0]
        return UserError(
            f"weights {source} are a {other} state dict ({classes} classes), but the model is {name}; "
            f"pass weights of {name}, or use architecture {other}"
        )
    fc = state_dict.get("fc.weight")
    expected = BACKBONES.get(name).factory(fc.shape[0] if isinstance(fc, torch.Tensor) and fc.dim() == 2 else 1).state_dict()
    detail = differences(state_dict, expected, "the file", name)
    return UserError(f"weights {source} do not fit backbone {name}: {detail}; pass a state dict of {name}")


def _load_with_new_classifier(
    spec: BackboneSpec, name: str, state_dict: dict[str, Any], num_classes: int, source: str
) -> nn.Module:
    """Build the model with the state dict's classifier size, load strictly, then swap ``fc``."""
    fc_weight = state_dict.get("fc.weight")
    if not isinstance(fc_weight, torch.Tensor) or fc_weight.dim() != 2:
        raise _mismatch(name, state_dict, source)
    model = spec.factory(fc_weight.shape[0])
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError:
        raise _mismatch(name, state_dict, source) from None
    if fc_weight.shape[0] != num_classes:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def build_backbone(name: str, num_classes: int, weights: str | Path = "none") -> nn.Module:
    """Build backbone ``name`` with a ``num_classes``-way classifier.

    ``weights``: ``"none"`` (random init), ``"imagenet"`` (torchvision's ImageNet weights,
    downloaded when online) or a path to a state-dict file; pretrained classifiers of another
    size are replaced by a fresh ``fc``.
    """
    spec = BACKBONES.get(name)
    if num_classes < 1:
        raise UserError(f"num_classes must be ≥ 1, got {num_classes}")
    weights_str = str(weights)
    if weights_str == "none":
        model = spec.factory(num_classes)
    elif weights_str == "imagenet":
        if spec.imagenet_weights is None:
            raise UserError(f"backbone {name} has no ImageNet weights; use weights=none or a state-dict file")
        try:
            state_dict = _download_imagenet_state_dict(spec.imagenet_weights)
        except (OSError, RuntimeError) as error:
            raise UserError(
                f"cannot get ImageNet weights {spec.imagenet_weights} for {name} ({error}); "
                f"offline, download them elsewhere and pass the state-dict file path as weights"
            ) from None
        model = _load_with_new_classifier(spec, name, state_dict, num_classes, f"in {spec.imagenet_weights}")
    else:
        path = Path(weights_str).expanduser()
        if not path.is_file():
            raise UserError(
                f"weights for {name} must be 'none', 'imagenet' or a state-dict file; no file {path}"
            )
        model = _load_with_new_classifier(spec, name, _read_state_dict_file(name, path), num_classes, f"in file {str(path)!r}")
    model.input_stats = spec.input_stats
    return model
