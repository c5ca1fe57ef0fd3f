"""Datasets labelled by a table or by file names: ``scene`` (the Kaggle CSV layout), ``utkface``
(``age_gender_race_date.jpg``) and ``csv`` (any path,label CSV): docs/method.md §10."""
from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from relaxkd.data.base import (
    ImageListDataset,
    check_split,
    read_csv_rows,
    refuse_download,
    require_root,
    stratified_split,
)
from relaxkd.data.catalog import DATASETS, Transform
from relaxkd.data.files import check_inside
from relaxkd.errors import UserError

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

        check_inside((path for path, _ in samples), root_path, str(csv_path))  # no ../ or links out of data.root
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
