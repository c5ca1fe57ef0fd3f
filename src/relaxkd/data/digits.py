"""The offline demo's dataset: scikit-learn's bundled 8x8 digits (classes zero..nine), upscaled."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import VisionDataset

from relaxkd.data.base import LabelledImageDataset, check_split, stratified_split
from relaxkd.data.catalog import DATASETS, Transform
from relaxkd.data.cifar import ldam_class_sizes
from relaxkd.errors import UserError

DIGIT_CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@lru_cache(maxsize=4)
def digit_images(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as read-only uint8 RGB arrays [N, S, S, 3] and their labels (computed once)."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 - scikit-learn only on this path: start-up; bundled with scikit-learn: no download

    digits = load_digits()
    grey = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    images = np.empty((len(grey), image_size, image_size, 3), dtype=np.uint8)
    for i, plane in enumerate(grey):
        resized = Image.fromarray(plane, mode="L").resize((image_size, image_size), Image.Resampling.BICUBIC)
        images[i] = np.asarray(resized.convert("RGB"))
    labels = digits.target.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


@DATASETS.register("digits")
class DigitsDataset(LabelledImageDataset, VisionDataset):
    """scikit-learn's 8x8 digits upscaled (bicubic) to ``image_size`` RGB images; no files needed.

    ``root`` is ignored. train/val is a seeded split stratified by class.
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        transform: Transform = None,
        download: bool = False,
        *,
        image_size: int = 32,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        imbalance_factor: float = 1.0,
    ):
        check_split(split)
        if not float(imbalance_factor) >= 1.0:
            raise UserError(f"imbalance_factor of dataset 'digits' must be >= 1, got {imbalance_factor}")
        if int(image_size) < 8:
            raise UserError(f"image_size of dataset 'digits' must be at least 8, got {image_size}")
        VisionDataset.__init__(self, str(root) if root not in (None, "") else None, transform=transform)
        images, labels = digit_images(int(image_size))
        chosen = stratified_split(labels.tolist(), split, val_fraction, split_seed, "digits")
        if split == "train" and float(imbalance_factor) > 1.0:
            chosen = _long_tailed(chosen, labels, float(imbalance_factor), split_seed)
        self.split = split
        self.indices = chosen
        self.images = images
        self.targets = labels[chosen].tolist()
        self.classes = list(DIGIT_CLASSES)
        self.wnids = None
        self.params = {"image_size": image_size, "val_fraction": val_fraction, "split_seed": split_seed}
        if float(imbalance_factor) > 1.0:
            self.params["imbalance_factor"] = imbalance_factor

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[self.indices[index]])


def _long_tailed(chosen: list[int], labels: np.ndarray, imbalance_factor: float, seed: int) -> list[int]:
    """A long-tailed training split (the LDAM-DRW profile, as cifar100_lt): the first n_c of each
    class's samples after a seeded shuffle; a long-tailed demo for LFME and shot metrics."""
    by_class: dict[int, list[int]] = {}
    for i in chosen:
        by_class.setdefault(int(labels[i]), []).append(i)
    sizes = ldam_class_sizes(max(len(v) for v in by_class.values()), len(by_class), imbalance_factor)
    rng = np.random.default_rng(seed)
    kept = []
    for c in sorted(by_class):
        members = list(by_class[c])
        rng.shuffle(members)
        kept.extend(members[: max(1, sizes[c])])
    return sorted(kept)
