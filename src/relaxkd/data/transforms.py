"""Image transforms (weak / strong / test / CLIP) and per-model input statistics.

Every transform takes a PIL RGB image and returns a float tensor [3, S, S] normalised with the
statistics of the model that consumes it; :func:`renormalize` converts a normalised batch from one
model's statistics to another's, so every teacher sees the same augmented batch (DESIGN.md §2.7).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from relaxkd.errors import UserError

TRANSFORM_KINDS = ("weak", "strong", "test", "clip")
AUGMENT_POLICIES = ("cifar", "imagenet")


@dataclass(frozen=True)
class Stats:
    """Per-channel (R, G, B) mean and standard deviation of a model's input normalisation."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        # Tuples of floats keep Stats hashable and comparable whatever sequence it was given.
        object.__setattr__(self, "mean", tuple(float(value) for value in self.mean))
        object.__setattr__(self, "std", tuple(float(value) for value in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"Stats needs 3 channel means and stds, got {self.mean} and {self.std}")
        if min(self.std) <= 0:
            raise ValueError(f"Stats std must be positive, got {self.std}")


IMAGENET_STATS = Stats(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CLIP_STATS = Stats(mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
STATS = {"imagenet": IMAGENET_STATS, "clip": CLIP_STATS}


def get_stats(name: str) -> Stats:
    """Named statistics: ``imagenet`` (torchvision ResNets) or ``clip`` (OpenAI CLIP)."""
    try:
        return STATS[name]
    except KeyError:
        raise UserError(f"unknown input statistics {name!r}; valid: {', '.join(STATS)}") from None


class Cutout(torch.nn.Module):
    """Cutout (DeVries & Taylor, 2017): zero one ``length``-pixel square on a [C, H, W] tensor.

    The centre is uniform over the image and the square is clipped at the border, as in the
    original code. Applied after Normalize, so the hole takes the dataset's mean colour.
    torchvision's RandomErasing samples area and aspect instead, hence this small class.
    """

    def __init__(self, length: int):
        super().__init__()
        if length < 1:
            raise ValueError(f"Cutout length must be positive, got {length}")
        self.length = int(length)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        centre_y = int(torch.randint(height, ()))  # torch RNG: reseeded per DataLoader worker
        centre_x = int(torch.randint(width, ()))
        half = self.length // 2
        top, bottom = max(0, centre_y - half), min(height, centre_y + half)
        left, right = max(0, centre_x - half), min(width, centre_x + half)
        image = image.clone()
        image[..., top:bottom, left:right] = 0
        return image

    def extra_repr(self) -> str:
        return f"length={self.length}"


def cutout_length(image_size: int) -> int:
    """Cutout's 16-pixel hole at CIFAR's 32 px, scaled with the image size."""
    return max(1, round(16 * image_size / 32))


def build_transform(
    kind: str,
    image_size: int,
    stats: Stats | None = None,
    policy: str = "cifar",
    crop_ratio: float = 1.0,
) -> T.Compose:
    """PIL image -> normalised float tensor [3, image_size, image_size].

    kind:
      - ``weak``: RandomResizedCrop(scale 0.2-1, bicubic) + horizontal flip + mild colour jitter.
      - ``strong``: RandomResizedCrop + flip + AutoAugment (CIFAR-10 policy) + Cutout (16 px per
        32 px) for ``policy="cifar"``; RandAugment for ``policy="imagenet"``.
      - ``test``: Resize(image_size / crop_ratio, bicubic) + CenterCrop(image_size); the authors
        use crop_ratio 1 (``Resize(224)``), the ImageNet convention is 0.875.
      - ``clip``: CLIP's own test preprocessing: Resize(image_size, bicubic) + CenterCrop.
    ``stats`` defaults to :data:`CLIP_STATS` for ``clip`` and :data:`IMAGENET_STATS` otherwise.
    """
    if kind not in TRANSFORM_KINDS:
        raise UserError(f"unknown transform kind {kind!r}; valid kinds: {', '.join(TRANSFORM_KINDS)}")
    if policy not in AUGMENT_POLICIES:
        raise UserError(f"unknown augmentation policy {policy!r}; valid policies: {', '.join(AUGMENT_POLICIES)}")
    if int(image_size) < 1:
        raise UserError(f"image size must be a positive number of pixels, got {image_size}")
    if not 0.0 < crop_ratio <= 1.0:
        raise UserError(f"crop_ratio must lie in (0, 1], got {crop_ratio}")
    image_size = int(image_size)
    if stats is None:
        stats = CLIP_STATS if kind == "clip" else IMAGENET_STATS
    bicubic = InterpolationMode.BICUBIC
    random_crop = T.RandomResizedCrop(image_size, scale=(0.2, 1.0), interpolation=bicubic)
    to_tensor = [T.ToTensor(), T.Normalize(stats.mean, stats.std)]

    if kind == "weak":
        steps = [random_crop, T.RandomHorizontalFlip(), T.ColorJitter(0.2, 0.2, 0.2), *to_tensor]
    elif kind == "strong" and policy == "cifar":
        steps = [
            random_crop,
            T.RandomHorizontalFlip(),
            T.AutoAugment(T.AutoAugmentPolicy.CIFAR10),
            *to_tensor,
            Cutout(cutout_length(image_size)),
        ]
    elif kind == "strong":
        steps = [random_crop, T.RandomHorizontalFlip(), T.RandAugment(), *to_tensor]
    elif kind == "test":
        resize = max(image_size, round(image_size / crop_ratio))
        steps = [T.Resize(resize, interpolation=bicubic), T.CenterCrop(image_size), *to_tensor]
    else:  # clip
        steps = [T.Resize(image_size, interpolation=bicubic), T.CenterCrop(image_size), *to_tensor]
    return T.Compose(steps)


@lru_cache(maxsize=64)
def _renormalize_affine(
    src: Stats, dst: Stats, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    # (x * s_src + m_src - m_dst) / s_dst = x * (s_src / s_dst) + (m_src - m_dst) / s_dst,
    # computed in float64 once per (src, dst, device, dtype).
    src_mean, src_std = torch.tensor(src.mean, dtype=torch.float64), torch.tensor(src.std, dtype=torch.float64)
    dst_mean, dst_std = torch.tensor(dst.mean, dtype=torch.float64), torch.tensor(dst.std, dtype=torch.float64)
    scale = (src_std / dst_std).view(3, 1, 1)
    shift = ((src_mean - dst_mean) / dst_std).view(3, 1, 1)
    return scale.to(device=device, dtype=dtype), shift.to(device=device, dtype=dtype)


def renormalize(x: torch.Tensor, src: Stats, dst: Stats) -> torch.Tensor:
    """Re-express images normalised with ``src`` in ``dst``'s normalisation: one fused affine per channel.

    ``x``: [B, 3, H, W] (or [3, H, W]) float tensor. Returns ``x`` itself when the statistics agree.
    """
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"renormalize expects [B, 3, H, W] or [3, H, W] images, got shape {tuple(x.shape)}")
    if src == dst:
        return x
    scale, shift = _renormalize_affine(src, dst, x.device, x.dtype)
    return torch.addcmul(shift, x, scale)
