"""AutoAugment / RandAugment / ColorJitter ops on one PIL image (the per-image path for large images).

Above :data:`relaxkd.data.augment.BATCH_OPS_MAX_SIZE` pixels a side, torchvision's PIL ops (PIL's C
loops) beat its tensor ops on CPU (224 px, one thread: 2.6-3.4 ms an image per image vs 3.8-4.7 ms
batched; ``augment_batched_speedup`` in BENCHMARKS.md), so :class:`~relaxkd.data.augment.TrainingTransform` applies
the drawn ops here, in its per-image stage. Ops go to torchvision's ``_apply_op`` except three
lookup-table ops below.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from relaxkd.versions import require_tested

require_tested("torchvision")  # before its private modules
from torchvision.transforms.autoaugment import _apply_op  # noqa: E402

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


def _histogram_lut_op(image: Image.Image, torchvision_op, band_table) -> Image.Image:
    """``image.point`` of a per-band table built from the band's histogram by ``band_table(histogram,
    identity)`` (which fills the identity row in place, or leaves it); other modes: ``torchvision_op``."""
    if image.mode not in ("L", "RGB"):
        return torchvision_op(image)
    pixels, histograms = _pixels_and_histograms(image)
    lut = np.tile(_LEVELS, (len(histograms), 1))
    for band, histogram in enumerate(histograms):
        band_table(histogram, lut[band])
    return _apply_lut(image, pixels, lut)


def _equalize_table(histogram: np.ndarray, table: np.ndarray) -> None:
    present = histogram[histogram > 0]
    if len(present) <= 1:
        return
    step = (int(present.sum()) - int(present[-1])) // 255
    if step:
        table[0] = step // 2
        np.cumsum(histogram[:-1], out=table[1:])
        table[1:] += step // 2
        table //= step


def _autocontrast_table(histogram: np.ndarray, table: np.ndarray) -> None:
    present = np.flatnonzero(histogram)
    lo, hi = int(present[0]), int(present[-1])
    if hi > lo:
        scale = 255.0 / (hi - lo)
        table[:] = np.trunc(_LEVELS * scale + (-lo * scale))


def _equalize(image: Image.Image, _magnitude: float = 0.0) -> Image.Image:
    """``PIL.ImageOps.equalize(image)``."""
    return _histogram_lut_op(image, F.equalize, _equalize_table)


def _autocontrast(image: Image.Image, _magnitude: float = 0.0) -> Image.Image:
    """``PIL.ImageOps.autocontrast(image)`` (no cutoff, nothing ignored)."""
    return _histogram_lut_op(image, F.autocontrast, _autocontrast_table)


def _solarize(image: Image.Image, threshold: float) -> Image.Image:
    """``PIL.ImageOps.solarize(image, threshold)``."""
    if image.mode not in ("L", "RGB"):
        return F.solarize(image, threshold)
    table = np.where(_LEVELS < threshold, _LEVELS, 255 - _LEVELS)
    return _apply_lut(image, np.asarray(image), np.broadcast_to(table, (3, 256)))


_LUT_OPS = {"Equalize": _equalize, "AutoContrast": _autocontrast, "Solarize": _solarize}


def apply_ops_pil(image: Image.Image, ops: Sequence[str], magnitudes: Sequence[float]) -> Image.Image:
    """Each op with its magnitude in turn, as torchvision's AutoAugment applies them to a PIL image
    (nearest interpolation, zero fill)."""
    for op, magnitude in zip(ops, magnitudes):
        lut_op = _LUT_OPS.get(op)
        if lut_op is not None:
            image = lut_op(image, magnitude)
        elif op != "Identity":
            image = _apply_op(image, op, magnitude, interpolation=InterpolationMode.NEAREST, fill=None)
    return image
