"""Pixels on PIL and numpy alone: wide greyscale images to 8-bit RGB, input statistics, the test-time
resize and centre crop.

No torch or torchvision here: ``relaxkd predict`` prepares its images with this module, and importing
torchvision costs more than predict's whole start-up budget (it loads ``torch._dynamo``; issue 28).
The data layer's transforms (``relaxkd.data.transforms``) build on the same pieces.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from relaxkd.errors import UserError

#: greyscale modes wider than 8 bits: "I;16*" (16-bit PNG/TIFF), "I" (32-bit int), "F" (32-bit float)
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(img: Image.Image, path: str | Path) -> Image.Image:
    """An 8-bit RGB copy of a wide greyscale image, scaled by the range its values are in."""
    values = np.asarray(img)
    if img.mode.startswith("I;16"):
        scale = 65535.0
    elif img.mode == "F" and np.isfinite(values).all() and values.size and values.min() >= 0 and values.max() <= 1:
        scale = 1.0  # float images in [0, 1]
    elif values.size and values.min() >= 0 and values.max() <= 255:
        scale = 255.0  # 8-bit values stored in a wide mode
    elif img.mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535:
        scale = 65535.0
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        raise UserError(
            f"cannot read image {path}: {img.mode!r} values from {low:g} to {high:g} fit no 8-bit range "
            f"([0, 1], [0, 255] or [0, 65535]); convert it to an 8-bit image"
        )
    eight = np.clip(np.rint(values.astype(np.float64) * (255.0 / scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(eight, mode="L").convert("RGB")


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

    def uint8_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(scale, shift)`` [3, 1, 1] with ``(x / 255 - mean) / std = x * scale + shift`` for
        uint8 pixels ``x`` (ToTensor + Normalize in one multiply-add), computed in float64 once."""
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        return (1.0 / (255.0 * std)).astype(np.float32).reshape(3, 1, 1), (-mean / std).astype(np.float32).reshape(3, 1, 1)


IMAGENET_STATS = Stats(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def normalized_pixels(image: Image.Image, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """A PIL RGB image as float32 [3, H, W] ``pixels * scale + shift`` (:meth:`Stats.uint8_affine`)."""
    width, height = image.size
    pixels = np.frombuffer(image.tobytes(), np.uint8).reshape(height, width, 3).transpose(2, 0, 1)
    out = np.empty((3, height, width), np.float32)
    np.multiply(pixels, scale, out=out)
    out += shift
    return out


def resize_center_crop(image: Image.Image, resize: int, size: int) -> Image.Image:
    """torchvision's ``Resize(resize, bicubic)`` + ``CenterCrop(size)`` on a PIL image, for ``resize >= size``
    (tests/test_transforms.py checks that the two give identical pixels)."""
    width, height = image.size
    if min(width, height) != resize:  # the shorter side becomes `resize`, the longer keeps the aspect (truncated)
        short, long = min(width, height), max(width, height)
        longer = int(resize * long / short)
        image = image.resize((resize, longer) if width <= height else (longer, resize), Image.BICUBIC)
        width, height = image.size
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))
