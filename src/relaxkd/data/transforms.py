"""Image transforms (weak / strong / test / CLIP) and per-model input statistics.

Every transform takes a PIL RGB image and returns a float tensor [3, S, S] normalised with the
statistics of the model that consumes it; :func:`renormalize` converts a normalised batch from one
model's statistics to another's, so every teacher sees the same augmented batch (DESIGN.md §2.7).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F
from torchvision.transforms.autoaugment import _apply_op

from relaxkd.errors import UserError

TRANSFORM_KINDS = ("weak", "strong", "test", "clip")
# Bump whenever the same (seed, epoch, index) yields a different augmented image, so that
# artifacts recording augmented views (cached teacher targets) are rebuilt, not replayed.
# 2: the fast steps below (same distributions, different random streams than torchvision's).
AUGMENTATION_VERSION = 2
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
        # one draw, uniform over the H x W centres (torch RNG: seeded per sample by SeededAugmentation)
        centre_y, centre_x = divmod(int(torch.randint(height * width, ())), width)
        half = self.length // 2
        top, bottom = max(0, centre_y - half), min(height, centre_y + half)
        left, right = max(0, centre_x - half), min(width, centre_x + half)
        image = image.clone()
        if image.is_cpu and not image.requires_grad:
            image.numpy()[..., top:bottom, left:right] = 0  # numpy slicing: ~20x cheaper than torch's
        else:
            image[..., top:bottom, left:right] = 0
        return image

    def extra_repr(self) -> str:
        return f"length={self.length}"


# --- fast per-sample steps ---------------------------------------------------------------------
# A demo-size sample (16 px) costs tens of microseconds of pixel work but hundreds of Python and
# tensor-op overhead in torchvision's generic transforms, and the DataLoader runs them one sample
# at a time (benchmarks/bench_train.py, loader_headroom). These subclasses keep torchvision's ops,
# magnitudes and distributions, draw their randomness from torch's CPU generator only (what
# SeededAugmentation seeds) in fewer, cheaper calls, and take a PIL fast path; any other input
# goes to torchvision's implementation.


class ToNormalizedTensor(torch.nn.Module):
    """``ToTensor`` + ``Normalize(stats)`` fused: uint8 PIL RGB -> normalised float [3, H, W] in one pass."""

    def __init__(self, stats: Stats):
        super().__init__()
        self.stats = stats
        mean, std = np.asarray(stats.mean, np.float64), np.asarray(stats.std, np.float64)
        # (x / 255 - mean) / std = x * (1 / (255 std)) - mean / std, in float64 once
        self._scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(3, 1, 1)
        self._shift = (-mean / std).astype(np.float32).reshape(3, 1, 1)
        self._generic = T.Compose([T.ToTensor(), T.Normalize(stats.mean, stats.std)])

    def forward(self, image) -> torch.Tensor:
        if not (isinstance(image, Image.Image) and image.mode == "RGB"):
            return self._generic(image)
        width, height = image.size
        pixels = np.frombuffer(image.tobytes(), np.uint8).reshape(height, width, 3).transpose(2, 0, 1)
        out = np.empty((3, height, width), np.float32)
        np.multiply(pixels, self._scale, out=out)
        out += self._shift
        return torch.from_numpy(out)

    def extra_repr(self) -> str:
        return f"mean={self.stats.mean}, std={self.stats.std}"


class FastRandomResizedCrop(T.RandomResizedCrop):
    """torchvision's RandomResizedCrop (same rejection sampling of area and log-aspect, same
    fallback), drawing each attempt's pair with one ``torch.rand(2)`` and the position with one
    ``torch.randint`` over all valid corners, then PIL crop + resize directly."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, h, w), distributed as ``RandomResizedCrop.get_params``."""
        area = height * width
        (scale_lo, scale_hi), (ratio_lo, ratio_hi) = self.scale, self._log_ratio
        for _ in range(10):
            u_area, u_ratio = torch.rand(2).tolist()
            target_area = area * (scale_lo + (scale_hi - scale_lo) * u_area)
            aspect_ratio = math.exp(ratio_lo + (ratio_hi - ratio_lo) * u_ratio)
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                top, left = divmod(int(torch.randint((height - h + 1) * (width - w + 1), ())), width - w + 1)
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

    def forward(self, image):
        if not isinstance(image, Image.Image):
            return super().forward(image)
        top, left, h, w = self.crop_box(image.height, image.width)
        cropped = image.crop((left, top, left + w, top + h))
        return cropped.resize((self.size[1], self.size[0]), F.pil_modes_mapping[self.interpolation])


class FastRandomHorizontalFlip(T.RandomHorizontalFlip):
    """RandomHorizontalFlip with a scalar draw and PIL's transpose directly."""

    def forward(self, image):
        if not isinstance(image, Image.Image):
            return super().forward(image)
        if float(torch.rand(())) < self.p:
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image


class FastAutoAugment(T.AutoAugment):
    """torchvision's AutoAugment (same policies, magnitudes and ops) without rebuilding its table
    of magnitude tensors on every call (~0.1 ms): the table is kept per image size as floats, the
    sub-policy, probabilities and signs come from one ``torch.rand(5)``, and Equalize,
    AutoContrast and Solarize build PIL's lookup tables with numpy (PIL loops in Python)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._spaces: dict[tuple[int, int], dict[str, tuple[list[float] | None, bool]]] = {}

    def _space(self, height: int, width: int) -> dict[str, tuple[list[float] | None, bool]]:
        space = self._spaces.get((height, width))
        if space is None:
            space = {
                name: (magnitudes.reshape(-1).tolist() if magnitudes.dim() else None, signed)
                for name, (magnitudes, signed) in self._augmentation_space(10, (height, width)).items()
            }
            self._spaces[(height, width)] = space
        return space

    def forward(self, image):
        if not isinstance(image, Image.Image):
            return super().forward(image)
        space = self._space(image.height, image.width)
        u_policy, *draws = torch.rand(5).tolist()  # policy, 2 probabilities, 2 signs
        policy = self.policies[min(int(u_policy * len(self.policies)), len(self.policies) - 1)]
        for i, (op_name, p, magnitude_id) in enumerate(policy):
            if draws[i] <= p:
                magnitudes, signed = space[op_name]
                magnitude = float(magnitudes[magnitude_id]) if magnitude_id is not None else 0.0
                if signed and draws[2 + i] < 0.5:
                    magnitude = -magnitude
                lut_op = _LUT_OPS.get(op_name)
                if lut_op is not None:
                    image = lut_op(image, magnitude)
                else:
                    image = _apply_op(image, op_name, magnitude, interpolation=self.interpolation, fill=self.fill)
        return image


class Compose(T.Compose):
    """``T.Compose`` calling each ``nn.Module`` step's ``forward`` directly: ``Module.__call__``'s
    hook handling costs ~5 us a step, per sample, and nothing hooks a transform."""

    def __call__(self, image):
        for step in self.transforms:
            image = step.forward(image) if isinstance(step, torch.nn.Module) else step(image)
        return image

# PIL.ImageOps' histogram and lookup-table ops (what torchvision's PIL backend calls) build their
# 256-entry tables in Python loops and Image.point rounds every entry again (~0.1 ms at any image
# size); the same tables from numpy, applied by indexing, give the same images.
_LEVELS = np.arange(256, dtype=np.int64)
_BAND_OFFSETS = np.arange(3, dtype=np.int64) * 256


def _pixels_and_histograms(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The image's uint8 pixels ([H, W] or [H, W, 3]) and per-band histograms [bands, 256]."""
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        return pixels, np.bincount(pixels.reshape(-1), minlength=256)[None]
    return pixels, np.bincount((pixels.reshape(-1, 3) + _BAND_OFFSETS).reshape(-1), minlength=768).reshape(3, 256)


def _apply_lut(image: Image.Image, pixels: np.ndarray, lut: np.ndarray) -> Image.Image:
    """``image.point(lut)`` for an L or RGB image and an int [bands, 256] table (clipped to 0-255, as PIL)."""
    table = np.clip(lut, 0, 255).astype(np.uint8)
    out = table[0][pixels] if pixels.ndim == 2 else table[_BAND_OFFSETS // 256, pixels]
    return Image.fromarray(out, image.mode)


def _equalize(image: Image.Image, _magnitude: float = 0.0) -> Image.Image:
    """``PIL.ImageOps.equalize(image)``."""
    if image.mode not in ("L", "RGB"):
        return F.equalize(image)
    pixels, histograms = _pixels_and_histograms(image)
    lut = np.tile(_LEVELS, (len(histograms), 1))
    for band, histogram in enumerate(histograms):
        present = histogram[histogram > 0]
        if len(present) <= 1:
            continue
        step = (int(present.sum()) - int(present[-1])) // 255
        if step:
            lut[band, 0] = step // 2
            np.cumsum(histogram[:-1], out=lut[band, 1:])
            lut[band, 1:] += step // 2
            lut[band] //= step
    return _apply_lut(image, pixels, lut)


def _autocontrast(image: Image.Image, _magnitude: float = 0.0) -> Image.Image:
    """``PIL.ImageOps.autocontrast(image)`` (no cutoff, nothing ignored)."""
    if image.mode not in ("L", "RGB"):
        return F.autocontrast(image)
    pixels, histograms = _pixels_and_histograms(image)
    lut = np.tile(_LEVELS, (len(histograms), 1))
    for band, histogram in enumerate(histograms):
        present = np.flatnonzero(histogram)
        lo, hi = int(present[0]), int(present[-1])
        if hi > lo:
            scale = 255.0 / (hi - lo)
            lut[band] = np.trunc(_LEVELS * scale + (-lo * scale))
    return _apply_lut(image, pixels, lut)


def _solarize(image: Image.Image, threshold: float) -> Image.Image:
    """``PIL.ImageOps.solarize(image, threshold)``."""
    if image.mode not in ("L", "RGB"):
        return F.solarize(image, threshold)
    table = np.where(_LEVELS < threshold, _LEVELS, 255 - _LEVELS)
    return _apply_lut(image, np.asarray(image), np.broadcast_to(table, (3, 256)))


_LUT_OPS = {"Equalize": _equalize, "AutoContrast": _autocontrast, "Solarize": _solarize}

def cutout_length(image_size: int) -> int:
    """Cutout's 16-pixel hole at CIFAR's 32 px, scaled with the image size."""
    return max(1, round(16 * image_size / 32))


def build_transform(
    kind: str,
    image_size: int,
    stats: Stats | None = None,
    policy: str = "cifar",
    crop_ratio: float = 1.0,
) -> Compose:
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
    random_crop = FastRandomResizedCrop(image_size, scale=(0.2, 1.0), interpolation=bicubic)
    flip = FastRandomHorizontalFlip()
    to_tensor = [ToNormalizedTensor(stats)]  # ToTensor + Normalize

    if kind == "weak":
        steps = [random_crop, flip, T.ColorJitter(0.2, 0.2, 0.2), *to_tensor]
    elif kind == "strong" and policy == "cifar":
        steps = [
            random_crop,
            flip,
            FastAutoAugment(T.AutoAugmentPolicy.CIFAR10),
            *to_tensor,
            Cutout(cutout_length(image_size)),
        ]
    elif kind == "strong":
        steps = [random_crop, flip, T.RandAugment(), *to_tensor]
    elif kind == "test":
        resize = max(image_size, round(image_size / crop_ratio))
        steps = [T.Resize(resize, interpolation=bicubic), T.CenterCrop(image_size), *to_tensor]
    else:  # clip
        steps = [T.Resize(image_size, interpolation=bicubic), T.CenterCrop(image_size), *to_tensor]
    return Compose(steps)


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
