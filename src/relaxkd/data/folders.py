"""Image folders: ``imagefolder`` (one folder per class), ``imagenet`` (folders of wnids) and
``imagenet_lt`` (the standard split files): docs/method.md §10."""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

from relaxkd.console import say_once
from relaxkd.data.base import ImageListDataset, check_split, refuse_download, require_root
from relaxkd.data.catalog import DATASETS, Transform
from relaxkd.data.files import check_link, note_read, scan_images
from relaxkd.errors import UserError
from relaxkd.safe_yaml import read_text

WNID_PATTERN = re.compile(r"^n\d{8}$")


#: folders that hold no class: macOS's resource forks in zip files; names starting with "." are
#: hidden (.ipynb_checkpoints, .thumbnails, .DS_Store folders), as torchvision's ImageFolder advises
SYSTEM_FOLDERS = ("__MACOSX",)


def is_hidden_or_system(name: str) -> bool:
    return name.startswith(".") or name in SYSTEM_FOLDERS


def class_folders(directory: Path) -> dict[str, int]:
    """torchvision's ``find_classes`` without hidden and system folders, said once when skipped.

    Raises FileNotFoundError (as ``find_classes``) when no class folder is left."""
    found, _ = find_classes(directory)
    skipped = [name for name in found if is_hidden_or_system(name)]
    classes = [name for name in found if not is_hidden_or_system(name)]
    if skipped:
        say_once(f"skipped {len(skipped)} hidden or system folder(s) in {directory}, not classes: {', '.join(skipped)}")
    if not classes:
        raise FileNotFoundError(directory)
    return {name: index for index, name in enumerate(classes)}


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
        found_to_idx = class_folders(directory)
        found = list(found_to_idx)
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
            class_to_idx = (
                class_folders(train_dir)
                if any(p.is_dir() and not is_hidden_or_system(p.name) for p in train_dir.iterdir())
                else None
            )
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
        raise UserError(
            f"synset mapping file {path} lacks {len(missing)} class(es), e.g. {missing[0]}: use the file of this dataset"
        )
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
