"""Heads of the multimodal teacher T_x over concat(image embedding, text embedding) ``[B, 2d]``."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

from relaxkd.errors import UserError
from relaxkd.models import backbones  # its functions looked up when called (tests stand in for the download)
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

    conv1 becomes the authors' new convolution from ``in_dim`` channels, 7×7 / stride 2 / padding 3
    as in ``mainCLIPKD_regularizerV2.py``: on a 1×1 input only its centre tap meets the input (the
    output equals a 1×1 convolution's), but torch's default init over 49 · in_dim inputs starts its
    weights 7× smaller (std 0.0026 for in_dim 1,024). The rest is unchanged (on a 1×1 map the
    stem's max-pool and the strided convolutions all keep size 1×1).
    """

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.resnet = torchvision.models.resnet50(weights=None, num_classes=num_classes)
        self.resnet.conv1 = nn.Conv2d(in_dim, 64, kernel_size=7, stride=2, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet(x[:, :, None, None])


#: the authors' ImageNet classifier: kept when the task has its 1,000 classes, new otherwise
IMAGENET_CLASSES = 1000


def fresh_prefixes(resnet: nn.Module) -> tuple[str, ...]:
    """Parameters of the resnet50-1x1 head that never come from ImageNet weights: conv1 (new
    input channels), and fc unless the head predicts ImageNet's 1,000 classes (the authors replace
    ``fc`` only when ``class_num != 1000``)."""
    return ("conv1.",) if resnet.fc.out_features == IMAGENET_CLASSES else ("conv1.", "fc.")


def init_head_from_imagenet(head: nn.Module, weights: str = "imagenet") -> dict[str, object]:
    """Start a ``resnet50-1x1`` head from ResNet50 weights, all but ``conv1`` and ``fc``.

    The authors load ImageNet ResNet50 weights and then replace ``conv1`` by a conv over the 2d
    channels of the 1x1 input (``mainCLIPKD_regularizerV2.py``); ``fc`` is new for C != 1000 and
    ImageNet's own for C = 1000.
    ``weights``: ``"imagenet"`` (torchvision's, by name; cached by torch hub), ``"none"``, or a
    ResNet50 state-dict file. Returns what happened: ``{"init": "imagenet" | "file" | "random",
    "loaded": n_tensors, "note": one line for the report}``; when ImageNet weights cannot be had
    (offline, no cache), the head keeps its random init and the note says why.
    Other heads (``mlp``) have nothing to load: ``init`` is ``"random"``.
    """
    resnet = getattr(head, "resnet", None)
    if not isinstance(head, ResNet50OneByOneHead) or resnet is None:
        return {"init": "random", "loaded": 0, "note": "random init (this head has no ImageNet counterpart)"}
    if weights == "none":
        return {"init": "random", "loaded": 0, "note": "random init (multimodal.weights=none)"}

    if weights == "imagenet":
        name = backbones.BACKBONES.get("resnet50").imagenet_weights
        try:
            state_dict = backbones._download_imagenet_state_dict(name)
        except Exception as error:  # offline without a cached copy, hash mismatch, ...
            reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
            return {
                "init": "random",
                "loaded": 0,
                "note": f"random init: ImageNet weights {name} unavailable ({reason}); pass a ResNet50 "
                f"state-dict file as multimodal.weights to start from them as the authors do",
            }
        init, source = "imagenet", name
    else:
        state_dict = backbones._read_state_dict_file("resnet50-1x1", Path(weights).expanduser())
        init, source = "file", str(weights)
    own, fresh = resnet.state_dict(), fresh_prefixes(resnet)
    keep = {k: v for k, v in state_dict.items() if not k.startswith(fresh)}
    missing = [k for k in own if not k.startswith(fresh) and k not in keep]
    wrong = [k for k, v in keep.items() if k not in own or own[k].shape != v.shape]
    if missing or wrong:
        raise UserError(
            f"weights {source} do not fit the resnet50-1x1 head (missing {missing[:3]}, unexpected or "
            f"misshapen {wrong[:3]}); pass a torchvision ResNet50 state dict"
        )
    resnet.load_state_dict(keep, strict=False)
    but = "conv1" if "fc." not in fresh else "conv1 and fc"
    return {"init": init, "loaded": len(keep), "note": f"ResNet50 weights {source}, all but {but}"}


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
