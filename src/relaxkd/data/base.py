"""Pieces shared by every dataset: the item contract, image loading, seeded stratified splits."""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split
from torchvision.datasets import VisionDataset

from relaxkd.data.files import note_read
from relaxkd.errors import UserError
from relaxkd.images import WIDE_MODES, to_rgb
from relaxkd.safe_yaml import read_text

SPLITS = ("train", "val")


class LabelledImageDataset:
    """Mixin giving a dataset the project's item contract.

    An item is ``(image, label, index)``: ``image`` is ``transform(PIL RGB image)`` (the PIL image
    itself when ``transform`` is None), ``label`` an int, ``index`` the item's position. Subclasses set
    ``classes``, ``targets``, ``wnids``, ``split`` and ``params`` (the dataset-specific constructor
    arguments, so the train split can be rebuilt from a val split) and implement :meth:`load_image`.
    """

    classes: list[str]
    targets: list[int]
    wnids: list[str] | None = None
    split: str
    params: dict[str, Any]
    transform: Callable[[Image.Image], Any] | None

    def load_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def data_files(self) -> list[str]:
        """The files holding this split's images (fingerprinted by size and mtime, or content)."""
        samples = getattr(self, "samples", None)
        return [str(path) for path, _ in samples] if samples is not None else []

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index], index

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def class_counts(self) -> list[int]:
        """Number of *training* images per class, on either split.

        Long-tailed evaluation groups classes into many/medium/few-shot by their training counts,
        so a val split reports the train split's counts (computed on first use from its index only).
        """
        targets = self.targets if self.split == "train" else self.train_targets()
        return np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(self.classes)).tolist()

    def synsets(self, overrides: str | Path | dict[str, str] | None = None) -> list[str]:
        """WordNet synset name of each class (wnids map directly; names via WordNet + overrides)."""
        from relaxkd.wordnet import class_synsets  # noqa: PLC0415 - NLTK's WordNet only when senses are asked for (start-up)

        return class_synsets(self.classes, wnids=self.wnids, overrides=overrides, dataset=getattr(self, "name", None))

    def train_targets(self) -> list[int]:
        """Labels of the training split with the same root and parameters (no image is read)."""
        return type(self)(self.root, "train", **self.params).targets  # type: ignore[attr-defined]

    def extra_repr(self) -> str:
        return f"Split: {self.split}\nClasses: {len(self.classes)}"


class ImageListDataset(LabelledImageDataset, VisionDataset):
    """Images listed as ``(path, label)`` pairs and read by :func:`load_rgb_image`."""

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        samples: Sequence[tuple[str, int]],
        classes: list[str],
        transform: Callable[[Image.Image], Any] | None = None,
        wnids: list[str] | None = None,
        params: dict[str, Any] | None = None,
    ):
        VisionDataset.__init__(self, str(root) if root is not None else None, transform=transform)
        self.split = split
        self.samples = list(samples)
        self.targets = [int(label) for _, label in self.samples]
        self.classes = list(classes)
        if split == "train" and len(self.classes) < 2:
            raise UserError(
                f"dataset in {root} has {len(self.classes)} class ({', '.join(map(str, self.classes)) or 'none'}); "
                f"classification needs at least two classes"
            )
        self.wnids = wnids
        self.params = dict(params or {})

    def load_image(self, index: int) -> Image.Image:
        return load_rgb_image(self.samples[index][0])


def load_rgb_image(path: str | Path) -> Image.Image:
    """Read an image file as RGB, turning an unreadable file into a :class:`UserError` naming it.

    16-bit and 32-bit integer and float greyscale images (PNG ``I;16``, TIFF ``I``/``F``) are scaled to
    8 bits by their type's range (PIL's ``convert("RGB")`` clips them: a 16-bit PNG turned all white,
    a float TIFF in [0, 1] all black); values that fit no known range are refused.
    """
    try:
        with open(path, "rb") as fh:
            img = Image.open(fh)
            if img.mode in WIDE_MODES:
                return to_rgb(img, path)
            return img.convert("RGB")
    except UserError:
        raise
    except UnidentifiedImageError:  # PIL's message repeats the path inside a file-object repr
        raise UserError(f"cannot read image {path}: not an image file PIL can identify; replace or remove the file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL reports truncated files as OSError, some codecs as ValueError/SyntaxError.
        raise UserError(f"cannot read image {path}: {exc}; replace or remove the file") from None


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


def require_root(root: str | Path | None, dataset: str, expected: str) -> Path:
    """The dataset's root folder; a missing one is a :class:`UserError` naming it and ``data.root``."""
    if root is None or str(root) == "":
        raise UserError(f"dataset {dataset!r} needs a data directory: set data.root to the folder holding {expected}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(
            f"data directory {path} for dataset {dataset!r} does not exist: "
            f"set data.root to the folder holding {expected}"
        )
    return path


def refuse_download(dataset: str, download: bool) -> None:
    if download:
        raise UserError(
            f"dataset {dataset!r} cannot be downloaded automatically: fetch it by hand, point data.root at it "
            f"and set data.download=false"
        )


def read_csv_rows(path: Path, columns: Sequence[str], what: str) -> list[dict[str, str]]:
    """Rows of a CSV file with a header; missing file or columns are a :class:`UserError`."""
    if not path.is_file():
        raise UserError(f"{what} {path} not found: check data.root and the dataset's file parameters")
    note_read(path)
    text = read_text(path, what)  # utf-8-sig: tolerates Excel's BOM; another encoding is one line
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [column for column in columns if column not in header]
        if missing:
            raise UserError(
                f"{what} {path} lacks column(s) {', '.join(missing)}; "
                f"expected a header with {', '.join(columns)}, found {', '.join(header) or 'none'}"
            )
        return [{key.strip(): (value or "").strip() for key, value in row.items() if key} for row in reader]


def stratified_split(
    labels: Sequence[int], split: str, val_fraction: float, seed: int, dataset: str
) -> np.ndarray:
    """Sorted indices of ``split`` in a seeded, class-stratified train/val split of ``labels``."""
    if not 0.0 < float(val_fraction) < 1.0:
        raise UserError(f"val_fraction of dataset {dataset!r} must lie strictly between 0 and 1, got {val_fraction}")
    indices = np.arange(len(labels))
    try:
        train_indices, val_indices = train_test_split(
            indices, test_size=float(val_fraction), random_state=int(seed), stratify=np.asarray(labels)
        )
    except ValueError as exc:
        raise UserError(
            f"cannot split the {len(labels)} images of dataset {dataset!r} into train/val stratified by class "
            f"with val_fraction={val_fraction}: {exc}"
        ) from None
    return np.sort(train_indices if split == "train" else val_indices)
