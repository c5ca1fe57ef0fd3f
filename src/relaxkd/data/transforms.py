"""Image transforms (weak / strong / test / CLIP) and per-model input statistics.

Every transform takes a PIL RGB image and returns a float tensor [3, S, S] normalised with the
statistics of the model that consumes it; :func:`renormalize` converts a normalised batch from one
model's statistics to another's, so every teacher sees the same augmented batch (docs/method.md §8).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from relaxkd.data.augment import BATCH_STAGES, AutoAugmentDraw, ColorJitterDraw, TimmRandAugmentDraw, TrainingTransform
from relaxkd.errors import UserError
from relaxkd.images import IMAGENET_STATS, Stats, normalized_pixels

TRANSFORM_KINDS = ("weak", "strong", "test", "clip")
# Bump whenever the same (seed, epoch, index) yields a different augmented image, so that
# artifacts recording augmented views (cached teacher targets) are rebuilt, not replayed.
# 2: the fast steps below (same distributions, different random streams than torchvision's).
# 3: photometric/geometric ops, normalisation and Cutout per batch on uint8 tensors (data/augment.py).
# 4: Cutout's hole is a fixed length (16 px, the reference policy) instead of 16 px per 32 px.
AUGMENTATION_VERSION = 4
#: the "imagenet" strong policy's own version (in the views spec of that policy only):
#: 2: the authors' crop scale (0.08, 1) + ColorJitter 0.4 + timm's rand-n2-m10-mstd0.5
IMAGENET_STRONG_VERSION = 2
AUGMENT_POLICIES = ("cifar", "imagenet")

CLIP_STATS = Stats(mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
STATS = {"imagenet": IMAGENET_STATS, "clip": CLIP_STATS}


def get_stats(name: str) -> Stats:
    """Named statistics: ``imagenet`` (torchvision ResNets) or ``clip`` (OpenAI CLIP)."""
    try:
        return STATS[name]
    except KeyError:
        raise UserError(f"unknown input statistics {name!r}; valid: {', '.join(STATS)}") from None


# --- fast per-image steps ----------------------------------------------------------------------
# A demo-size image (16 px) costs microseconds of pixel work but tens of Python and tensor-op
# overhead in torchvision's generic transforms, and the DataLoader runs them one image at a time
# (benchmarks/bench_train.py, loader_headroom). These subclasses keep torchvision's ops and
# distributions, draw their randomness from torch's CPU generator only (what SeededAugmentation
# seeds) in fewer, cheaper calls, and take a PIL fast path; any other input goes to torchvision's
# implementation. Everything after crop and flip runs per batch (data/augment.py).


class ToNormalizedTensor(torch.nn.Module):
    """``ToTensor`` + ``Normalize(stats)`` fused: uint8 PIL RGB -> normalised float [3, H, W] in one pass."""

    def __init__(self, stats: Stats):
        super().__init__()
        self.stats = stats
        self._scale, self._shift = stats.uint8_affine()
        self._generic = T.Compose([T.ToTensor(), T.Normalize(stats.mean, stats.std)])

    def forward(self, image) -> torch.Tensor:
        if not (isinstance(image, Image.Image) and image.mode == "RGB"):
            return self._generic(image)
        return torch.from_numpy(normalized_pixels(image, self._scale, self._shift))

    def extra_repr(self) -> str:
        return f"mean={self.stats.mean}, std={self.stats.std}"


class FastRandomResizedCrop(T.RandomResizedCrop):
    """torchvision's RandomResizedCrop (same rejection sampling of area and log-aspect, same
    fallback) drawing all its randomness as :attr:`UNIFORMS` uniforms in one ``torch.rand`` call
    (or taking them from the caller), then PIL crop + resize directly."""

    #: 10 attempts x (area, log-aspect) + the position
    UNIFORMS = 21

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))

    def crop_box(self, height: int, width: int, uniforms: Sequence[float]) -> tuple[int, int, int, int]:
        """(top, left, h, w) from :attr:`UNIFORMS` uniforms in [0, 1), distributed as ``RandomResizedCrop.get_params``."""
        area = height * width
        (scale_lo, scale_hi), (ratio_lo, ratio_hi) = self.scale, self._log_ratio
        for attempt in range(10):
            u_area, u_ratio = uniforms[2 * attempt], uniforms[2 * attempt + 1]
            target_area = area * (scale_lo + (scale_hi - scale_lo) * u_area)
            aspect_ratio = math.exp(ratio_lo + (ratio_hi - ratio_lo) * u_ratio)
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                positions = (height - h + 1) * (width - w + 1)  # every valid corner equally likely
                top, left = divmod(min(int(uniforms[20] * positions), positions - 1), width - w + 1)
                return top, left, h, w
        # fallback to a central crop, as torchvision
        in_ratio = float(width) / float(height)
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h, w = height, int(round(height * max(self.ratio)))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def crop(self, image: Image.Image, uniforms: Sequence[float]) -> Image.Image:
        top, left, h, w = self.crop_box(image.height, image.width, uniforms)
        cropped = image.crop((left, top, left + w, top + h))
        return cropped.resize((self.size[1], self.size[0]), F.pil_modes_mapping[self.interpolation])

    def forward(self, image):
        if not isinstance(image, Image.Image):
            return super().forward(image)
        return self.crop(image, torch.rand(self.UNIFORMS).tolist())


class Compose(T.Compose):
    """``T.Compose`` calling each ``nn.Module`` step's ``forward`` directly: ``Module.__call__``'s
    hook handling costs ~5 us a step, per sample, and nothing hooks a transform."""

    def __call__(self, image):
        for step in self.transforms:
            image = step.forward(image) if isinstance(step, torch.nn.Module) else step(image)
        return image


#: Cutout's hole length in the reference strong policy: the authors' ``Cutout(n_holes=1, length=16)``
#: after ``RandomResizedCrop(224)`` (data_loader/DataLoaderCIFAR.py), i.e. 16 px whatever the size.
CUTOUT_LENGTH = 16


def build_transform(
    kind: str,
    image_size: int,
    stats: Stats | None = None,
    policy: str = "cifar",
    crop_ratio: float = 1.0,
    cutout: int = CUTOUT_LENGTH,
    batch_stage: str = "loader",
) -> Compose | TrainingTransform:
    """PIL image -> normalised float tensor [3, image_size, image_size].

    ``weak`` and ``strong`` return a :class:`~relaxkd.data.augment.TrainingTransform` (crop and
    flip per image, the rest per batch when a loader batches it); ``test`` and ``clip`` a Compose.
    ``batch_stage`` (training kinds only): ``loader`` runs the batch stage in the loader (CPU);
    ``device`` defers it to the training device (``SeededDataModule`` hands over uint8 crops and
    draws), with tensor ops at every image size, so above ``BATCH_OPS_MAX_SIZE`` px its views differ
    from the loader's PIL regime (a different ``augmentation_spec``).

    kind:
      - ``weak``: RandomResizedCrop(scale 0.2-1, bicubic) + horizontal flip + mild colour jitter.
      - ``strong``: RandomResizedCrop + flip + AutoAugment (CIFAR-10 policy) + Cutout with a
        ``cutout``-pixel hole (default 16, the reference policy's, at any image size; 0: none) for
        ``policy="cifar"``; for ``policy="imagenet"`` the authors' RandomResizedCrop (scale
        0.08-1, bilinear) + flip + ColorJitter(0.4, 0.4, 0.4, 0) + timm's RandAugment
        ``rand-n2-m10-mstd0.5`` (:class:`~relaxkd.data.draws.TimmRandAugmentDraw`).
      - ``test``: Resize(image_size / crop_ratio, bicubic) + CenterCrop(image_size); the authors
        use crop_ratio 1 (``Resize(224)``), the ImageNet convention is 0.875.
      - ``clip``: CLIP's own test preprocessing: Resize(image_size, bicubic) + CenterCrop.
    ``stats`` defaults to :data:`CLIP_STATS` for ``clip`` and :data:`IMAGENET_STATS` otherwise.
    """
    if kind not in TRANSFORM_KINDS:
        raise UserError(f"unknown transform kind {kind!r}; valid kinds: {', '.join(TRANSFORM_KINDS)}")
    if policy not in AUGMENT_POLICIES:
        raise UserError(f"unknown augmentation policy {policy!r}; valid policies: {', '.join(AUGMENT_POLICIES)}")
    if batch_stage not in BATCH_STAGES:
        raise UserError(f"unknown batch stage {batch_stage!r}; valid: {', '.join(BATCH_STAGES)}")
    if int(image_size) < 1:
        raise UserError(f"image size must be a positive number of pixels, got {image_size}")
    if int(cutout) < 0:
        raise UserError(f"Cutout hole length must be 0 (none) or a positive number of pixels, got {cutout}")
    if not 0.0 < crop_ratio <= 1.0:
        raise UserError(f"crop_ratio must lie in (0, 1], got {crop_ratio}")
    image_size = int(image_size)
    if stats is None:
        stats = CLIP_STATS if kind == "clip" else IMAGENET_STATS
    bicubic = InterpolationMode.BICUBIC
    if kind in ("weak", "strong"):
        crop = FastRandomResizedCrop(image_size, scale=(0.2, 1.0), interpolation=bicubic)
        if kind == "weak":
            draw = ColorJitterDraw(0.2, 0.2, 0.2)
        elif policy == "cifar":
            draw = AutoAugmentDraw(T.AutoAugmentPolicy.CIFAR10, image_size)
        else:  # the authors' DataLoaderImageNet.py: RandomResizedCrop(224, scale=(0.08, 1.)) (bilinear), then the draw's ops
            crop = FastRandomResizedCrop(image_size, scale=(0.08, 1.0), interpolation=InterpolationMode.BILINEAR)
            draw = TimmRandAugmentDraw(image_size)
        hole = int(cutout) if kind == "strong" and policy == "cifar" else 0
        return TrainingTransform(crop, draw, stats, image_size, cutout_length=hole, batch_stage=batch_stage)
    resize = max(image_size, round(image_size / crop_ratio)) if kind == "test" else image_size
    return Compose([T.Resize(resize, interpolation=bicubic), T.CenterCrop(image_size), ToNormalizedTensor(stats)])


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
