"""Training augmentation in two stages: per image, then per batch.

A DataLoader runs transforms one image at a time, and at CIFAR-like sizes each of AutoAugment's
ops, the normalisation and Cutout costs tens of microseconds of Python and tensor-op overhead
for a few microseconds of pixel work (benchmarks/bench_train.py, ``loader_headroom``). So a
training transform is split:

1. **per image** (:meth:`TrainingTransform.prepare`, under the sample's own seed): the steps that
   depend on the image's original size (random resized crop, flip; PIL, with antialiasing), then
   the draw of every later random choice (:mod:`relaxkd.data.draws`): which ops, their magnitudes,
   the Cutout centre;
2. **per batch** (:meth:`TrainingTransform.finish`): those choices applied to the stacked uint8
   batch, each op once for all the images that drew it, then normalisation and Cutout.

Above :data:`BATCH_OPS_MAX_SIZE` px the ops run in the per-image stage instead, on PIL
(:mod:`relaxkd.data.pil_ops`): on large images PIL's C loops beat torch's CPU kernels. In the
batched regime the ops are torchvision's tensor ops (``torchvision.transforms.autoaugment._apply_op`` on a uint8
tensor) with a magnitude per image instead of one per call; tests/test_transforms.py checks each
against torchvision image by image, bit for bit. Every image's result depends only on its own
seed, never on the other images in its batch, so worker counts, batch composition and cached
teacher targets all see the same views.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from relaxkd.versions import require_tested

require_tested("torchvision")  # before its private modules
from torchvision.transforms import _functional_tensor as FT  # noqa: E402
from torchvision.transforms import functional as F

# the per-image draws live in draws.py; re-exported here, where callers have always found them
from relaxkd.data.draws import (  # noqa: F401
    IDENTITY,
    OP_IDS,
    OPS,
    AutoAugmentDraw,
    ColorJitterDraw,
    Draw,
    RandAugmentDraw,
    TimmRandAugmentDraw,
)
from relaxkd.data.pil_ops import apply_ops_pil

# --- per-batch ops: torchvision's tensor ops with one magnitude per image ------------------------


def _blend(images: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    """``_functional_tensor._blend`` with a ratio per image (float32 factors, as a Python scalar gets)."""
    ratio = ratio.view(-1, 1, 1, 1)
    return (ratio.float() * images + (1.0 - ratio).float() * other).clamp(0, 255).to(images.dtype)


@lru_cache(maxsize=16)
def _base_grid(height: int, width: int, device: torch.device) -> Tensor:
    """``_gen_affine_grid``'s pixel-centre grid [1, H·W, 3] (x, y, 1) for an H x W output."""
    base = torch.empty(1, height, width, 3, dtype=torch.float32, device=device)
    base[..., 0].copy_(torch.linspace(-width * 0.5 + 0.5, width * 0.5 - 0.5, steps=width, device=device))
    base[..., 1].copy_(torch.linspace(-height * 0.5 + 0.5, height * 0.5 - 0.5, steps=height, device=device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    return base.view(1, height * width, 3)


def _inverse_matrix(op: str, magnitude: float, height: int, width: int) -> list[float]:
    """The inverse affine matrix ``_apply_op`` builds for a geometric op (via F.affine / F.rotate)."""
    if op == "ShearX":  # F.affine(..., center=[0, 0]): the top-left corner, in centred coordinates
        return F._get_inverse_affine_matrix(
            [-width * 0.5, -height * 0.5], 0.0, [0.0, 0.0], 1.0, [math.degrees(math.atan(magnitude)), 0.0]
        )
    if op == "ShearY":
        return F._get_inverse_affine_matrix(
            [-width * 0.5, -height * 0.5], 0.0, [0.0, 0.0], 1.0, [0.0, math.degrees(math.atan(magnitude))]
        )
    if op == "TranslateX":
        return F._get_inverse_affine_matrix([0.0, 0.0], 0.0, [float(int(magnitude)), 0.0], 1.0, [0.0, 0.0])
    if op == "TranslateY":
        return F._get_inverse_affine_matrix([0.0, 0.0], 0.0, [0.0, float(int(magnitude))], 1.0, [0.0, 0.0])
    # Rotate: F.rotate about the centre; its angle runs opposite to F.affine's
    return F._get_inverse_affine_matrix([0.0, 0.0], -magnitude, [0.0, 0.0], 1.0, [0.0, 0.0])


def _geometric(images: Tensor, ops: list[str], magnitudes: list[float]) -> Tensor:
    """Each image's geometric op (nearest, zero fill: AutoAugment's defaults) in one ``grid_sample``:
    ``_functional_tensor.affine``'s grid, per image."""
    height, width = images.shape[-2:]
    theta = torch.tensor([_inverse_matrix(op, m, height, width) for op, m in zip(ops, magnitudes)],
                         dtype=torch.float32, device=images.device).view(-1, 2, 3)
    rescaled = theta.transpose(1, 2) / torch.tensor([0.5 * width, 0.5 * height], dtype=torch.float32, device=images.device)
    grid = _base_grid(height, width, images.device).expand(len(ops), -1, -1).bmm(rescaled).view(-1, height, width, 2)
    return FT._apply_grid_transform(images, grid, "nearest", fill=None)


def _posterize(images: Tensor, bits: Tensor) -> Tensor:
    masks = (256 - 2 ** (8 - bits.to(torch.int64))).to(torch.uint8)  # F.posterize's -(2 ** (8 - bits))
    return images & masks.view(-1, 1, 1, 1)


def _solarize(images: Tensor, thresholds: Tensor) -> Tensor:
    return torch.where(images >= thresholds.float().view(-1, 1, 1, 1), F.invert(images), images)


def _contrast(images: Tensor, factors: Tensor) -> Tensor:
    means = torch.mean(FT.rgb_to_grayscale(images).float(), dim=(-3, -2, -1), keepdim=True)
    return _blend(images, means, 1.0 + factors)


def _sharpness(images: Tensor, factors: Tensor) -> Tensor:
    if images.shape[-1] <= 2 or images.shape[-2] <= 2:
        return images
    return _blend(images, _smoothed(images), 1.0 + factors)


def _smoothed(images: Tensor) -> Tensor:
    """``_functional_tensor._blurred_degenerate_image``: the 3x3 kernel (1 1 1 / 1 5 1 / 1 1 1) / 13,
    rounded, borders kept. Computed exactly in integers (a 3x3 box sum + 4 x centre, then
    round(s / 13), never a tie since 13 is odd), which equals torchvision's float convolution after
    rounding, without oneDNN's ~0.3 ms set-up for a tiny grouped convolution."""
    pixels = images.float()
    sums = torch.nn.functional.avg_pool2d(pixels, 3, stride=1, divisor_override=1) + 4.0 * pixels[..., 1:-1, 1:-1]
    out = images.clone()
    out[..., 1:-1, 1:-1] = torch.div(2.0 * sums + 13.0, 26.0, rounding_mode="floor").to(images.dtype)
    return out


def _equalize(images: Tensor, _magnitudes: Tensor) -> Tensor:
    """``F.equalize`` (torchvision's per-channel lookup table) for every image and channel at once;
    torchvision loops over images and channels (~0.5 ms an image)."""
    batch, channels, height, width = images.shape
    flat = images.reshape(batch * channels, height * width).to(torch.int64)
    offsets = torch.arange(batch * channels, device=images.device).unsqueeze(1) * 256
    hist = torch.bincount((flat + offsets).reshape(-1), minlength=batch * channels * 256).view(-1, 256)
    # torchvision: step = (sum of the non-zero bins but the last one) // 255; no change where step is 0
    top_level = 255 - torch.argmax((hist.flip(1) > 0).to(torch.uint8), dim=1, keepdim=True)
    step = torch.div(height * width - hist.gather(1, top_level), 255, rounding_mode="floor")
    lut = torch.div(torch.cumsum(hist, 1) + torch.div(step, 2, rounding_mode="floor"), step.clamp(min=1), rounding_mode="floor")
    lut = torch.nn.functional.pad(lut, [1, 0])[:, :-1].clamp(0, 255)
    out = torch.where(step > 0, lut.gather(1, flat), flat)
    return out.to(torch.uint8).view(batch, channels, height, width)


_GEOMETRIC = frozenset(OP_IDS[op] for op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"))
_BATCH_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Brightness": lambda images, m: _blend(images, torch.zeros((), dtype=torch.float32), 1.0 + m),
    "Color": lambda images, m: _blend(images, FT.rgb_to_grayscale(images), 1.0 + m),
    "Contrast": _contrast,
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "AutoContrast": lambda images, _: F.autocontrast(images),
    "Equalize": _equalize,
    "Invert": lambda images, _: F.invert(images),
}


def apply_ops(images: Tensor, ops: Tensor, magnitudes: Tensor) -> Tensor:
    """Stage by stage, each image's op with its magnitude: ``images`` uint8 [B, 3, H, W],
    ``ops`` int64 [B, S] (ids in :data:`OPS`), ``magnitudes`` float64 [B, S]. Returns a new tensor.
    Each op runs once per stage for the images that drew it (the geometric ones together)."""
    images = images.clone()
    ops, magnitudes = ops.cpu(), magnitudes.cpu()  # grouping happens on the host: no device sync
    on_device = magnitudes.to(images.device, non_blocking=True) if images.device.type != "cpu" else magnitudes
    for stage in range(ops.shape[1]):
        column, groups = ops[:, stage].tolist(), {}
        for row, op_id in enumerate(column):
            if op_id != IDENTITY:
                groups.setdefault("geometric" if op_id in _GEOMETRIC else OPS[op_id], []).append(row)
        for name, rows in groups.items():
            index = torch.tensor(rows, device=images.device)
            if name == "geometric":
                images[index] = _geometric(images[index], [OPS[column[row]] for row in rows], magnitudes[rows, stage].tolist())
            else:
                images[index] = _BATCH_OPS[name](images[index], on_device[index, stage])
    return images


def cutout(images: Tensor, holes: Tensor, length: int, inplace: bool = False) -> Tensor:
    """Cutout (DeVries & Taylor, 2017) per image: zero the ``length``-pixel square centred on pixel
    ``holes[i]`` (flat index; -1: none), clipped at the border as the original code does."""
    height, width = images.shape[-2:]
    centre_y, centre_x = torch.div(holes, width, rounding_mode="floor"), holes % width
    half = length // 2
    ys, xs = torch.arange(height, device=images.device), torch.arange(width, device=images.device)
    rows = (ys >= (centre_y - half).unsqueeze(1)) & (ys < (centre_y + half).unsqueeze(1))  # [B, H]
    cols = (xs >= (centre_x - half).unsqueeze(1)) & (xs < (centre_x + half).unsqueeze(1))  # [B, W]
    inside = (rows.unsqueeze(2) & cols.unsqueeze(1) & (holes >= 0).view(-1, 1, 1)).unsqueeze(1)
    return images.masked_fill_(inside, 0.0) if inplace else images.masked_fill(inside, 0.0)


#: where a training transform's batch stage runs: ``loader`` (its workers, on the CPU, then the
#: normalised float batch is copied) or ``device`` (the loader hands over uint8 crops and the draws,
#: :class:`DeviceBatch`; the training device finishes them, tensor ops at every size)
BATCH_STAGES = ("loader", "device")

#: images up to this size (pixels a side) take their ops per batch as tensors; larger ones per image
#: on PIL (relaxkd.data.pil_ops). Measured by bench_train.py's ``augment_batched_speedup`` (one
#: worker thread, batches of 128, strong CIFAR policy): batching 1.3x faster at 32 px, 0.7x at 224 px.
BATCH_OPS_MAX_SIZE = 64

#: below this many pixel values a batch's many small ops run faster on one thread: waking the
#: intra-op pool costs more than it saves (2 cores, 64 x 16 px: 4.5 ms vs 7.8 ms a batch). A
#: loader worker already runs one thread; this matters where the main process loads (0 workers).
_SMALL_BATCH = 1 << 20


@contextmanager
def _one_thread_if(condition: bool):
    threads = torch.get_num_threads()
    if not condition or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --- the batch stage on the accelerator ----------------------------------------------------------


class DeviceBatch:
    """A batch whose batch stage is still to run, as a loader hands it to the accelerator:
    ``pixels`` uint8 [B, S, S, 3] (the crops, 4x fewer bytes than float images), each image's draws
    ``ops`` int64 [B, stages] / ``magnitudes`` float64 [B, stages] and ``holes`` int64 [B].

    ``to(device)`` moves the pixels and holes (non-blocking from pinned memory); the draws stay on
    the host, where :func:`apply_ops` groups the images by op without waiting for the device.
    The DataLoader pins it (``pin_memory()``) and Lightning moves it (``to``) like a tensor.
    """

    __slots__ = ("pixels", "ops", "magnitudes", "holes")

    def __init__(self, pixels: Tensor, ops: Tensor, magnitudes: Tensor, holes: Tensor):
        self.pixels, self.ops, self.magnitudes, self.holes = pixels, ops, magnitudes, holes

    def __len__(self) -> int:
        return len(self.pixels)

    def pin_memory(self, device=None) -> DeviceBatch:
        return DeviceBatch(self.pixels.pin_memory(), self.ops, self.magnitudes, self.holes.pin_memory())

    def to(self, device, *args, **kwargs) -> DeviceBatch:
        device = torch.device(device)
        move = lambda t: t.to(device, non_blocking=t.is_pinned())  # noqa: E731
        return DeviceBatch(move(self.pixels), self.ops, self.magnitudes, move(self.holes))

    def __reduce__(self):  # __slots__ classes pickle through this (loader workers send batches)
        return DeviceBatch, (self.pixels, self.ops, self.magnitudes, self.holes)

    def __repr__(self) -> str:
        return f"DeviceBatch({len(self)} x {tuple(self.pixels.shape[1:])} uint8 on {self.pixels.device})"


# --- the two-stage transform ---------------------------------------------------------------------


class TrainingTransform:
    """PIL image -> normalised float [3, S, S], as a per-image and a per-batch stage.

    ``crop``: a :class:`~relaxkd.data.transforms.FastRandomResizedCrop` to S (then a horizontal
    flip with probability 1/2); ``draw``: one image's ``(ops, magnitudes)`` (AutoAugment,
    RandAugment or ColorJitter choices) from its ``UNIFORMS`` uniforms, applied per batch on uint8
    tensors up to :data:`BATCH_OPS_MAX_SIZE` px and per image on PIL above (torchvision's tensor and
    PIL ops respectively, so the two regimes round differently); ``cutout_length``: Cutout's
    square (0: none), applied after normalisation so the hole is the mean colour. All of an image's
    randomness is one ``torch.rand`` call in :meth:`prepare` (each torch call costs ~5 us here).
    Calling it on one image is ``finish([prepare(image)])[0]``;
    :class:`~relaxkd.engine.sampling.SeededAugmentation` prepares each image under its own seed
    and finishes whole batches.
    """

    def __init__(self, crop, draw: Callable[[Sequence[float]], tuple[list[int], list[float]]],
                 stats, image_size: int, cutout_length: int = 0, batch_stage: str = "loader"):
        if batch_stage not in BATCH_STAGES:
            raise ValueError(f"batch_stage must be one of {BATCH_STAGES}, got {batch_stage!r}")
        self.crop, self.draw = crop, draw
        self.stats, self.image_size, self.cutout_length = stats, int(image_size), int(cutout_length)
        self._uniforms = crop.UNIFORMS + 1 + draw.UNIFORMS + 1  # crop, flip, ops, Cutout centre
        self.batch_stage = batch_stage
        # on the accelerator the tensor ops run at every size (no PIL there): above
        # BATCH_OPS_MAX_SIZE its views differ from the CPU loader's PIL regime. A pil_only draw
        # (timm's RandAugment) applies its ops per image, on PIL, wherever the batch stage runs.
        self.pil_only = getattr(draw, "pil_only", False)
        self.batch_ops = not self.pil_only and (batch_stage == "device" or self.image_size <= BATCH_OPS_MAX_SIZE)
        self._scale, self._shift = stats.uint8_affine()  # [3, 1, 1]: broadcast over the batch

    def prepare(self, image: Image.Image) -> tuple[np.ndarray, Draw]:
        """The per-image stage: uint8 pixels [S, S, 3] and the batch stage's draws (torch's CPU RNG only)."""
        u = torch.rand(self._uniforms).tolist()
        flip, ops_from = self.crop.UNIFORMS, self.crop.UNIFORMS + 1
        image = self.crop.crop(image, u[:flip])
        if u[flip] < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if image.mode != "RGB":
            image = image.convert("RGB")
        ops, magnitudes = self.draw(u[ops_from:-1])
        if self.pil_only:
            image = self.draw.apply(image, u[ops_from:-1])
        elif not self.batch_ops:  # large images: the ops now, on PIL; the batch stage only normalises
            image = apply_ops_pil(image, [OPS[op] for op in ops], magnitudes)
            ops, magnitudes = (), ()
        pixels = self.image_size * self.image_size
        hole = min(int(u[-1] * pixels), pixels - 1) if self.cutout_length else -1
        # tobytes + frombuffer: several times cheaper than np.asarray(image) (PIL's __array_interface__)
        array = np.frombuffer(image.tobytes(), np.uint8).reshape(image.height, image.width, 3)
        return array, Draw(tuple(ops), tuple(magnitudes), hole)

    def finish(self, prepared: Sequence[tuple[np.ndarray, Draw]]) -> Tensor:
        """The per-batch stage: normalised float [B, 3, S, S] (contiguous)."""
        pixels = torch.from_numpy(np.stack([item[0] for item in prepared])).permute(0, 3, 1, 2)  # NCHW view
        draws = [item[1] for item in prepared]
        with _one_thread_if(pixels.numel() < _SMALL_BATCH):
            if self.batch_ops:
                ops = torch.tensor([draw.ops for draw in draws], dtype=torch.int64)
                magnitudes = torch.tensor([draw.magnitudes for draw in draws], dtype=torch.float64)
                pixels = apply_ops(pixels, ops, magnitudes)
            # numpy casts the strided uint8 view into a contiguous float NCHW array ~3x faster than
            # torch's addcmul on one thread (224 px: 0.28 vs 0.9 ms an image)
            images = np.empty(pixels.shape, np.float32)
            np.multiply(pixels.numpy(), self._scale, out=images)
            images += self._shift
            images = torch.from_numpy(images)
            if self.cutout_length:
                cutout(images, torch.tensor([draw.hole for draw in draws]), self.cutout_length, inplace=True)
            return images

    def collate(self, prepared: Sequence[tuple[np.ndarray, Draw]]) -> DeviceBatch:
        """The per-image stage's outputs as one :class:`DeviceBatch` (in the loader, for the device)."""
        draws = [item[1] for item in prepared]
        return DeviceBatch(
            torch.from_numpy(np.stack([item[0] for item in prepared])),
            torch.tensor([draw.ops for draw in draws], dtype=torch.int64),
            torch.tensor([draw.magnitudes for draw in draws], dtype=torch.float64),
            torch.tensor([draw.hole for draw in draws], dtype=torch.int64),
        )

    def finish_batch(self, batch: DeviceBatch, memory_format: torch.memory_format | None = None) -> Tensor:
        """The per-batch stage where ``batch.pixels`` live (the accelerator, after the transfer):
        normalised float [B, 3, S, S], bit-identical to :meth:`finish` on the CPU; on another device
        as far as its kernels are (bench_gpu.py's ``batch_stage_ops_differing``). ``memory_format``
        defaults to channels_last on an accelerator (what a channels_last network takes without a
        copy; the pixels arrive NHWC) and contiguous on the CPU, as :meth:`finish` (a CPU
        convolution's result depends on the layout)."""
        pixels = batch.pixels.permute(0, 3, 1, 2)  # NCHW view of NHWC memory
        if self.batch_ops and batch.ops.shape[1]:
            pixels = apply_ops(pixels, batch.ops, batch.magnitudes)
        scale, shift = _affine_on(self._scale, self._shift, pixels.device)
        # a multiply, then an add (not a fused multiply-add): numpy's roundings in finish()
        images = pixels.to(torch.float32).mul_(scale).add_(shift)
        if self.cutout_length:
            cutout(images, batch.holes.to(images.device), self.cutout_length, inplace=True)
        if memory_format is None:
            memory_format = torch.contiguous_format if images.device.type == "cpu" else torch.channels_last
        return images.contiguous(memory_format=memory_format)

    def __call__(self, image: Image.Image) -> Tensor:
        return self.finish([self.prepare(image)])[0]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(per image: crop {self.crop.size}, flip, {type(self.draw).__name__}; "
                f"per batch ({'on the device' if self.batch_stage == 'device' else 'in the loader'}): "
                f"ops, normalise {self.stats}, cutout {self.cutout_length or 'off'})")


_AFFINES: dict[tuple, tuple[Tensor, Tensor]] = {}


def _affine_on(scale: np.ndarray, shift: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
    """The normalisation's float32 (scale, shift) [3, 1, 1] on ``device``, copied there once."""
    key = (scale.tobytes(), shift.tobytes(), str(device))
    if key not in _AFFINES:
        _AFFINES[key] = (torch.from_numpy(scale).to(device), torch.from_numpy(shift).to(device))
    return _AFFINES[key]
