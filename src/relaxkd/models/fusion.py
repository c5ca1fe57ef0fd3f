"""Heads of the multimodal teacher T_x over concat(image embedding, text embedding) ``[B, 2d]``."""
from __future__ import annotations

import inspect
from typing import Callable

import torch
import torchvision
from torch import nn

from relaxkd.errors import UserError
from relaxkd.registry import Registry

FUSION_HEADS: Registry[Callable[..., nn.Module]] = Registry("fusion head")


@FUSION_HEADS.register("mlp")
class MLPHead(nn.Module):
    """in_dim → hidden → hidden → num_classes with ReLU and dropout (paper default: 512, 0.1).

    ``batch_norm=True`` adds BatchNorm after each hidden linear layer: it conditions inputs whose
    rows are nearly parallel (e.g. a random-weight CLIP's embeddings); the paper's head has none.
    """

    def __init__(
        self, in_dim: int, num_classes: int, hidden_dim: int = 512, dropout: float = 0.1, batch_norm: bool = False
    ):
        super().__init__()
        layers = torchvision.ops.MLP(
            in_dim,
            [hidden_dim, hidden_dim, num_classes],
            norm_layer=nn.BatchNorm1d if batch_norm else None,
            activation_layer=nn.ReLU,
            dropout=dropout,
        )
        # torchvision's MLP also puts dropout after the output layer; logits must not be dropped.
        self.net = nn.Sequential(*[layer for layer in layers][:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@FUSION_HEADS.register("resnet50-1x1")
class ResNet50OneByOneHead(nn.Module):
    """The authors' head: torchvision ResNet50 on the 2d-vector seen as a 1×1 image with 2d channels.

    conv1 becomes a 1×1 convolution from ``in_dim`` channels; the rest is unchanged (on a 1×1
    map the stem's max-pool and the strided convolutions all keep size 1×1).
    """

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.resnet = torchvision.models.resnet50(weights=None, num_classes=num_classes)
        self.resnet.conv1 = nn.Conv2d(in_dim, 64, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet(x[:, :, None, None])


def build_fusion_head(name: str, in_dim: int, num_classes: int, **kwargs) -> nn.Module:
    """Build fusion head ``name``; ``kwargs`` are the head's options (e.g. ``hidden_dim``, ``dropout``)."""
    head_cls = FUSION_HEADS.get(name)
    options = [p for p in inspect.signature(head_cls).parameters if p not in ("in_dim", "num_classes")]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for fusion head {name}; "
            f"valid options: {', '.join(options) or 'none'}"
        )
    return head_cls(in_dim, num_classes, **kwargs)
