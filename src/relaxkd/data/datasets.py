"""Dataset registry and the on-disk format loaders of docs/method.md §10.

Every dataset is built as ``build_dataset(name, root, split, transform, download, **params)`` and
follows :class:`~relaxkd.data.base.LabelledImageDataset`'s contract: items ``(image, label, index)``
and the attributes ``classes``, ``targets``, ``wnids``, ``class_counts``.
"""
from __future__ import annotations

import inspect
import os
import pickle
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable
from urllib.error import URLError

import numpy as np
from PIL import Image
from torchvision.datasets import CIFAR100, VisionDataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes
from torchvision.datasets.utils import download_and_extract_archive

from relaxkd.data.base import (
    ImageListDataset,
    LabelledImageDataset,
    check_split,
    read_csv_rows,
    refuse_download,
    require_root,
    stratified_split,
)
from relaxkd.data.files import check_link, note_read, scan_images
from relaxkd.safe_yaml import read_text
from relaxkd.errors import UserError
from relaxkd.registry import Registry

Transform = Callable[[Image.Image], Any] | None

DATASETS: Registry[type[LabelledImageDataset]] = Registry("dataset")

#: Constructor arguments every dataset takes; everything else is a dataset parameter.
_COMMON_ARGS = ("self", "root", "split", "transform", "download")


def build_dataset(
    name: str,
    root: str | Path | None,
    split: str,
    transform: Transform = None,
    download: bool = False,
    **params: Any,
) -> LabelledImageDataset:
    """The ``split`` ("train" or "val") of the registered dataset ``name`` under ``root``."""
    dataset_cls = DATASETS.get(name)
    check_split(split)
    valid = dataset_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UserError(
            f"dataset {name!r} has no parameter(s) {', '.join(unknown)}; "
            f"valid parameters: {', '.join(valid) or 'none'}"
        )
    dataset = dataset_cls(root, split, transform=transform, download=download, **params)
    dataset.name = name
    return dataset


def dataset_params(name: str) -> dict[str, Any]:
    """The parameters of dataset ``name`` with their defaults (for config validation and docs)."""
    signature = inspect.signature(DATASETS.get(name).__init__)
    return {
        key: parameter.default
        for key, parameter in signature.parameters.items()
        if key not in _COMMON_ARGS and parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


# --------------------------------------------------------------------------------------------------
# CIFAR-100 and CIFAR-100-LT


@DATASETS.register("cifar100")
class CIFAR100Dataset(LabelledImageDataset, CIFAR100):
    """torchvision's CIFAR-100 (``root/cifar-100-python/{train,test,meta}``); val is the test set."""

    # torchvision pins each extracted file's md5, which rejects re-packed copies and test fixtures;
    # the downloaded archive's md5 is still verified by download_and_extract_archive.
    train_list = [["train", None]]
    test_list = [["test", None]]
    meta = {"filename": "meta", "key": "fine_label_names", "md5": None}
    wnids = None

    def __init__(self, root: str | Path | None, split: str, transform: Transform = None, download: bool = False):
        check_split(split)
        root_path = Path(root).expanduser() if root not in (None, "") else None
        folder = (root_path or Path("<data.root>")) / self.base_folder
        needed = [folder / name for name in ("train", "test", "meta")]
        if download and root_path is not None and not all(path.is_file() for path in needed):
            try:
                download_and_extract_archive(self.url, str(root_path), filename=self.filename, md5=self.tgz_md5)
            except (URLError, OSError, RuntimeError) as exc:
                raise UserError(
                    f"downloading CIFAR-100 into {root_path} failed ({exc}): download {self.url} by hand, "
                    f"extract it under data.root and set data.download=false"
                ) from None
        if root_path is None or not all(path.is_file() for path in needed):
            raise UserError(
                f"CIFAR-100 not found: {folder}/{{train,test,meta}} missing; set data.root to the folder that "
                f"contains cifar-100-python/ or set data.download=true to download it"
            )
        try:
            CIFAR100.__init__(self, str(root_path), train=split == "train", transform=transform)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise UserError(
                f"CIFAR-100 files in {folder} are unreadable ({type(exc).__name__}: {exc}): "
                f"delete the folder and download it again (data.download=true)"
            ) from None
        self.split = split
        self.params = {}
        self.targets = [int(label) for label in self.targets]

    def data_files(self) -> list[str]:
        folder = Path(self.root) / self.base_folder
        return [str(folder / name) for name in ("train", "test", "meta")]

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.data[index])


def ldam_class_sizes(max_per_class: float, num_classes: int, imbalance_factor: float) -> list[int]:
    """LDAM-DRW's exponential profile: n_c = int(n_max * (1/imbalance_factor) ** (c / (C - 1)))."""
    ratio = 1.0 / imbalance_factor
    return [int(max_per_class * ratio ** (c / (num_classes - 1.0))) for c in range(num_classes)]


@DATASETS.register("cifar100_lt")
class CIFAR100LTDataset(CIFAR100Dataset):
    """CIFAR-100-LT as in LDAM-DRW's ``IMBALANCECIFAR100``; val is the balanced test set.

    Training images of class c: the first n_c of the class's indices after a seeded shuffle
    (imbalance 100 keeps 10,847 images), stored class by class as LDAM-DRW does.
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        transform: Transform = None,
        download: bool = False,
        *,
        imbalance_factor: float = 100.0,
        seed: int = 0,
    ):
        if not float(imbalance_factor) >= 1.0:
            raise UserError(f"imbalance_factor of cifar100_lt must be >= 1, got {imbalance_factor}")
        super().__init__(root, split, transform=transform, download=download)
        self.params = {"imbalance_factor": imbalance_factor, "seed": seed}
        #: position of each kept image in the original CIFAR-100 split
        self.source_indices = np.arange(len(self.targets))
        if split == "train":
            self._make_imbalanced(float(imbalance_factor), int(seed))

    def _make_imbalanced(self, imbalance_factor: float, seed: int) -> None:
        targets = np.asarray(self.targets, dtype=np.int64)
        sizes = ldam_class_sizes(len(self.data) / len(self.classes), len(self.classes), imbalance_factor)
        # RandomState(seed).shuffle draws the same stream as LDAM-DRW's np.random.seed(seed) followed by
        # np.random.shuffle, without touching numpy's global RNG.
        rng = np.random.RandomState(seed)
        kept = []
        for label, size in zip(np.unique(targets), sizes):
            indices = np.where(targets == label)[0]
            rng.shuffle(indices)
            kept.append(indices[:size])
        order = np.concatenate(kept)
        self.source_indices = order
        self.data = self.data[order]
        self.targets = targets[order].tolist()


# --------------------------------------------------------------------------------------------------
# ImageFolder layouts: imagefolder, imagenet

WNID_PATTERN = re.compile(r"^n\d{8}$")


def scan_class_folders(
    directory: Path, class_to_idx: dict[str, int] | None = None, root: Path | None = None
) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes and ``(path, label)`` samples of ``directory/<class>/<image>`` via torchvision's scanner.

    With ``class_to_idx`` given (the train split's classes), a class folder may be absent but an
    existing folder must be a known class. Empty class folders are a :class:`UserError` naming them.
    """
    if not directory.is_dir():
        raise UserError(f"split folder {directory} not found: expected {directory}/<class>/<image files> (check data.root)")
    try:
        found, found_to_idx = find_classes(directory)
    except FileNotFoundError:
        raise UserError(f"no class folders in {directory}: expected {directory}/<class>/<image files>") from None
    if class_to_idx is None:
        class_to_idx = found_to_idx
    unknown = [name for name in found if name not in class_to_idx]
    if unknown:
        raise UserError(
            f"class folder(s) {', '.join(str(directory / name) for name in unknown[:3])} are not training classes; "
            f"the val split must use the train split's class folders"
        )
    # torchvision's make_dataset order, with symbolic links confined to the dataset root (data/files.py)
    root = root if root is not None else directory.parent
    root_real = os.path.realpath(root)
    samples = []
    for name in sorted(class_to_idx):
        folder = directory / name
        if folder.is_symlink():
            check_link(str(folder), root, root_real)
        if folder.is_dir():
            samples += [(path, class_to_idx[name]) for path in scan_images(folder, root, IMG_EXTENSIONS)]
    counts = Counter(label for _, label in samples)
    empty = [name for name in found if counts[class_to_idx[name]] == 0]
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise UserError(
            f"empty class folder {directory / empty[0]}{more}: each class folder needs at least one image "
            f"({', '.join(IMG_EXTENSIONS[:4])}, ...); remove it or add images"
        )
    classes = sorted(class_to_idx, key=class_to_idx.__getitem__)
    return classes, samples


@DATASETS.register("imagefolder")
class ImageFolderDataset(ImageListDataset):
    """torchvision ImageFolder layout ``root/{train,val}/<class>/<image>``; classes from the train folder."""

    expected = "train/<class>/<image> and val/<class>/<image>"

    def __init__(self, root: str | Path | None, split: str, transform: Transform = None, download: bool = False):
        check_split(split)
        name = self._registry_name()
        refuse_download(name, download)
        root_path = require_root(root, name, self.expected)
        train_dir = root_path / "train"
        class_to_idx = None
        if split == "val" and train_dir.is_dir():
            class_to_idx = find_classes(train_dir)[1] if any(p.is_dir() for p in train_dir.iterdir()) else None
        classes, samples = scan_class_folders(root_path / split, class_to_idx, root_path)
        super().__init__(root_path, split, samples, classes, transform=transform, params=self._params())

    def _registry_name(self) -> str:
        return "imagefolder"

    def _params(self) -> dict[str, Any]:
        return {}


def find_upwards(root: Path, name: str, levels: int = 3) -> Path | None:
    """``name`` in ``root`` or one of its first ``levels`` parents (Kaggle keeps ImageNet's
    ``LOC_synset_mapping.txt`` a few folders above ``ILSVRC/Data/CLS-LOC``)."""
    for folder in [root, *list(root.resolve().parents)[:levels]]:
        if (folder / name).is_file():
            return folder / name
    return None


def read_synset_mapping(path: Path) -> dict[str, str]:
    """``LOC_synset_mapping.txt`` lines ``n01440764 tench, Tinca tinca`` -> {wnid: first name}."""
    mapping = {}
    note_read(path)
    for number, line in enumerate(read_text(path, "synset mapping file").splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, names = line.strip().partition(" ")
        if not WNID_PATTERN.match(wnid) or not names.strip():
            raise UserError(f"{path}:{number}: expected 'n01440764 tench, Tinca tinca', got {line.strip()!r}")
        mapping[wnid] = names.split(",")[0].strip()
    return mapping


def imagenet_class_names(root: Path, wnids: list[str], synset_mapping: str | None) -> list[str]:
    """Human-readable names (first name of each synset) from the mapping file, else the wnids."""
    if synset_mapping is not None:
        path = Path(synset_mapping).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise UserError(f"synset mapping file {path} not found: fix the dataset parameter synset_mapping")
    else:
        path = find_upwards(root, "LOC_synset_mapping.txt")
        if path is None:
            return list(wnids)
    mapping = read_synset_mapping(path)
    missing = [wnid for wnid in wnids if wnid not in mapping]
    if missing:
        raise UserError(f"synset mapping file {path} lacks {len(missing)} class(es), e.g. {missing[0]}: use the file of this dataset")
    return [mapping[wnid] for wnid in wnids]


def check_wnids(wnids: list[str], where: Path, dataset: str) -> None:
    bad = [wnid for wnid in wnids if not WNID_PATTERN.match(wnid)]
    if bad:
        raise UserError(
            f"dataset {dataset!r} expects WordNet-id class folders like n01440764 in {where}, found {bad[0]!r}; "
            f"use dataset 'imagefolder' for other class names"
        )


@DATASETS.register("imagenet")
class ImageNetDataset(ImageFolderDataset):
    """ImageNet as ImageFolders of wnids (``root/train/n01440764/*.JPEG``, ``root/val/<wnid>/...``).

    ``wnids`` are the folder names; ``classes`` the first name of each synset in
    ``LOC_synset_mapping.txt`` (looked up in root and up to 3 parent folders, or the file given
    as ``synset_mapping``), else the wnids themselves.
    """

    expected = "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        transform: Transform = None,
        download: bool = False,
        *,
        synset_mapping: str | None = None,
    ):
        self._synset_mapping = synset_mapping
        super().__init__(root, split, transform=transform, download=download)
        root_path = Path(self.root)
        wnids = list(self.classes)
        check_wnids(wnids, root_path / split, "imagenet")
        self.wnids = wnids
        self.classes = imagenet_class_names(root_path, wnids, synset_mapping)

    def _registry_name(self) -> str:
        return "imagenet"

    def _params(self) -> dict[str, Any]:
        return {"synset_mapping": self._synset_mapping}


# --------------------------------------------------------------------------------------------------
# ImageNet-LT split files


def read_split_file(path: Path) -> list[tuple[str, int]]:
    """Lines ``train/n01440764/n01440764_190.JPEG 0`` -> [(relative path, label)]."""
    if not path.is_file():
        raise UserError(f"split file {path} not found: set the dataset parameter split_dir (default data.root) to its folder")
    entries = []
    note_read(path)
    for number, line in enumerate(read_text(path, "split file").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise UserError(f"{path}:{number}: expected '<relative image path> <label>', got {line.strip()!r}")
        entries.append((parts[0], int(parts[1])))
    if not entries:
        raise UserError(f"split file {path} lists no images")
    return entries


def wnids_by_label(entries: list[tuple[str, int]], path: Path) -> list[str]:
    """wnid of each label, read from the class folder of its images (``train/<wnid>/<file>``)."""
    wnid_of: dict[int, str] = {}
    for relative, label in entries:
        wnid = Path(relative).parent.name
        if wnid_of.setdefault(label, wnid) != wnid:
            raise UserError(f"split file {path} gives label {label} to both {wnid_of[label]} and {wnid}")
    missing = [label for label in range(max(wnid_of) + 1) if label not in wnid_of]
    if missing:
        raise UserError(f"split file {path} has no image of label {missing[0]}: labels must run 0..C-1")
    wnids = [wnid_of[label] for label in range(len(wnid_of))]
    check_wnids(wnids, path, "imagenet_lt")
    return wnids


@DATASETS.register("imagenet_lt")
class ImageNetLTDataset(ImageListDataset):
    """ImageNet-LT from the standard ``ImageNet_LT_{train,val,test}.txt`` files.

    Image paths in the files are relative to the ImageNet root (``root``); the files live in
    ``split_dir`` (default: root). val reads ``val_file`` (default the test file, as is usual;
    ``ImageNet_LT_val.txt`` selects the held-out val split). Classes come from the train file.
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        transform: Transform = None,
        download: bool = False,
        *,
        split_dir: str | None = None,
        train_file: str = "ImageNet_LT_train.txt",
        val_file: str = "ImageNet_LT_test.txt",
        synset_mapping: str | None = None,
    ):
        check_split(split)
        refuse_download("imagenet_lt", download)
        root_path = require_root(root, "imagenet_lt", "the ImageNet train/ and val/ folders")
        files_dir = Path(split_dir).expanduser() if split_dir else root_path
        train_path = files_dir / train_file
        train_entries = read_split_file(train_path)
        wnids = wnids_by_label(train_entries, train_path)
        if split == "train":
            entries = train_entries
        else:
            val_path = files_dir / val_file
            entries = read_split_file(val_path)
            unknown = sorted({label for _, label in entries if label >= len(wnids)})
            if unknown:
                raise UserError(f"split file {val_path} uses label {unknown[0]} that {train_path} never uses")
        first = root_path / entries[0][0]
        if not first.is_file():
            raise UserError(
                f"image {first} listed in the {split} split file not found: data.root must be the ImageNet folder "
                f"that the paths in the split files are relative to"
            )
        samples = [(str(root_path / relative), label) for relative, label in entries]
        super().__init__(
            root_path,
            split,
            samples,
            imagenet_class_names(root_path, wnids, synset_mapping),
            transform=transform,
            wnids=wnids,
            params={
                "split_dir": split_dir,
                "train_file": train_file,
                "val_file": val_file,
                "synset_mapping": synset_mapping,
            },
        )

    def train_targets(self) -> list[int]:
        files_dir = Path(self.params["split_dir"]).expanduser() if self.params["split_dir"] else Path(self.root)
        return [label for _, label in read_split_file(files_dir / self.params["train_file"])]


# --------------------------------------------------------------------------------------------------
# Scene (Kaggle / Analytics Vidhya "scene classification")

SCENE_CLASSES = ["buildings", "forest", "glacier", "mountain", "sea", "street"]
SCENE_FOLDER_VARIANTS = ("", "train-scene classification")


@DATASETS.register("scene")
class SceneDataset(ImageListDataset):
    """``root/train.csv`` (``image_name,label``, label 0..5) with images in ``root/train/``.

    The Kaggle download's ``train-scene classification/`` folder is accepted as well. There is no
    labelled test set: train/val is a seeded split stratified by class.
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        transform: Transform = None,
        download: bool = False,
        *,
        val_fraction: float = 0.2,
        split_seed: int = 0,
    ):
        check_split(split)
        refuse_download("scene", download)
        root_path = require_root(root, "scene", "train.csv and train/")
        base = next(
            (root_path / variant for variant in SCENE_FOLDER_VARIANTS if (root_path / variant / "train.csv").is_file()),
            root_path,
        )
        csv_path = base / "train.csv"
        rows = read_csv_rows(csv_path, ("image_name", "label"), "scene label file")
        labels = []
        for number, row in enumerate(rows, start=2):
            label = row["label"]
            if not label.isdigit() or int(label) >= len(SCENE_CLASSES):
                raise UserError(f"{csv_path}:{number}: label must be 0..{len(SCENE_CLASSES) - 1}, got {label!r}")
            labels.append(int(label))
        image_dir = base / "train"
        chosen = stratified_split(labels, split, val_fraction, split_seed, "scene")
        samples = [(str(image_dir / rows[i]["image_name"]), labels[i]) for i in chosen]
        if samples and not Path(samples[0][0]).is_file():
            raise UserError(f"image {samples[0][0]} listed in {csv_path} not found: images must be in {image_dir}")
        super().__init__(
            root_path,
            split,
            samples,
            SCENE_CLASSES,
            transform=transform,
            params={"val_fraction": val_fraction, "split_seed": split_seed},
        )


# --------------------------------------------------------------------------------------------------
# UTKFace

UTK_NAME = re.compile(r"^(?P<age>\d+)_(?P<gender>[01])_(?P<race>[0-4])_(?P<date>\d+)\.jpg(?:\.chip\.jpg)?$", re.IGNORECASE)
UTK_RACES = ["White", "Black", "Asian", "Indian", "Others"]
UTK_GENDERS = ["male", "female"]
#: Age groups (inclusive lower bounds): 0-2, 3-9, 10-19, ..., 60-69, 70+.
UTK_AGE_BOUNDS = [0, 3, 10, 20, 30, 40, 50, 60, 70]
UTK_AGE_GROUPS = [
    f"person aged {low}-{high - 1}" for low, high in zip(UTK_AGE_BOUNDS, UTK_AGE_BOUNDS[1:])
] + [f"person aged {UTK_AGE_BOUNDS[-1]}+"]
UTK_TARGETS = {"race": UTK_RACES, "gender": UTK_GENDERS, "age": UTK_AGE_GROUPS}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def utk_age_group(age: int) -> int:
    return int(np.searchsorted(UTK_AGE_BOUNDS, age, side="right")) - 1


@DATASETS.register("utkface")
class UTKFaceDataset(ImageListDataset):
    """UTKFace: labels parsed from ``{age}_{gender}_{race}_{date}.jpg`` (also ``.jpg.chip.jpg``).

    Files lie in ``root`` or ``root/UTKFace``. ``target``: ``race`` (White, Black, Asian, Indian,
    Others), ``gender`` (male, female) or ``age`` (groups 0-2, 3-9, 10-19, 20-29, 30-39, 40-49,
    50-59, 60-69, 70+, named "person aged 20-29" etc.). Image files with malformed names (a few ship
    with the dataset) are skipped with a warning. train/val is a seeded split stratified by target.
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        transform: Transform = None,
        download: bool = False,
        *,
        target: str = "race",
        val_fraction: float = 0.2,
        split_seed: int = 0,
    ):
        check_split(split)
        refuse_download("utkface", download)
        if target not in UTK_TARGETS:
            raise UserError(f"unknown utkface target {target!r}; valid targets: {', '.join(UTK_TARGETS)}")
        root_path = require_root(root, "utkface", "the UTKFace images ({age}_{gender}_{race}_{date}.jpg)")
        folder = root_path
        files, malformed = self._parse_folder(folder)
        if not files and (root_path / "UTKFace").is_dir():
            folder = root_path / "UTKFace"
            files, malformed = self._parse_folder(folder)
        if not files:
            raise UserError(f"no UTKFace images named {{age}}_{{gender}}_{{race}}_{{date}}.jpg in {folder}: check data.root")
        if malformed:
            warnings.warn(
                f"skipped {len(malformed)} UTKFace file(s) with malformed names in {folder}, e.g. {malformed[0]}",
                stacklevel=2,
            )
        labels = [self._label(match, target) for _, match in files]
        chosen = stratified_split(labels, split, val_fraction, split_seed, "utkface")
        samples = [(str(folder / files[i][0]), labels[i]) for i in chosen]
        super().__init__(
            root_path,
            split,
            samples,
            UTK_TARGETS[target],
            transform=transform,
            params={"target": target, "val_fraction": val_fraction, "split_seed": split_seed},
        )

    @staticmethod
    def _parse_folder(folder: Path) -> tuple[list[tuple[str, re.Match[str]]], list[str]]:
        files, malformed = [], []
        for name in sorted(entry.name for entry in folder.iterdir() if entry.is_file()):
            if not name.lower().endswith(_IMAGE_SUFFIXES):
                continue
            match = UTK_NAME.match(name)
            if match:
                files.append((name, match))
            else:
                malformed.append(name)
        return files, malformed

    @staticmethod
    def _label(match: re.Match[str], target: str) -> int:
        if target == "age":
            return utk_age_group(int(match["age"]))
        return int(match[target])


# --------------------------------------------------------------------------------------------------
# Generic CSV


@DATASETS.register("csv")
class CSVDataset(ImageListDataset):
    """CSV files with columns ``path,label`` (label = class name; paths relative to root).

    ``csv_file`` names each split's file: a string with a ``{split}`` placeholder (default
    ``{split}.csv``, i.e. ``root/train.csv`` and ``root/val.csv``) or a mapping
    ``{"train": ..., "val": ...}``; relative names are taken from root. Classes are the sorted
    distinct labels of the train file.
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        transform: Transform = None,
        download: bool = False,
        *,
        csv_file: str | Mapping[str, str] = "{split}.csv",
    ):
        check_split(split)
        refuse_download("csv", download)
        root_path = require_root(root, "csv", "the CSV files and the images they list")
        train_rows = read_csv_rows(self._csv_path(root_path, csv_file, "train"), ("path", "label"), "train CSV file")
        classes = sorted({row["label"] for row in train_rows})
        if split == "train":
            rows, csv_path = train_rows, self._csv_path(root_path, csv_file, "train")
        else:
            csv_path = self._csv_path(root_path, csv_file, "val")
            rows = read_csv_rows(csv_path, ("path", "label"), "val CSV file")
        index_of = {name: i for i, name in enumerate(classes)}
        unknown = sorted({row["label"] for row in rows} - set(index_of))
        if unknown:
            raise UserError(f"{csv_path} has label(s) {', '.join(map(repr, unknown[:5]))} absent from the train CSV file")
        if not rows:
            raise UserError(f"{csv_path} lists no images")
        samples = [(str(root_path / row["path"]), index_of[row["label"]]) for row in rows]
        if not Path(samples[0][0]).is_file():
            raise UserError(f"image {samples[0][0]} listed in {csv_path} not found: paths are relative to data.root")
        params = {"csv_file": dict(csv_file) if isinstance(csv_file, Mapping) else csv_file}
        super().__init__(root_path, split, samples, classes, transform=transform, params=params)

    @staticmethod
    def _csv_path(root: Path, csv_file: str | Mapping[str, str], split: str) -> Path:
        if isinstance(csv_file, Mapping):
            if split not in csv_file:
                raise UserError(f"csv_file gives no file for split {split!r}; give one for each of train, val")
            name = csv_file[split]
        elif "{split}" in csv_file:
            name = csv_file.replace("{split}", split)
        else:
            raise UserError(
                f"csv_file {csv_file!r} must contain '{{split}}' or map each split to a file, e.g. "
                f"{{train: train.csv, val: val.csv}}"
            )
        path = Path(name).expanduser()
        return path if path.is_absolute() else root / path


# --------------------------------------------------------------------------------------------------
# scikit-learn digits: the offline demo dataset

DIGIT_CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@lru_cache(maxsize=4)
def digit_images(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as read-only uint8 RGB arrays [N, S, S, 3] and their labels (computed once)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

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
