"""Writers of tiny datasets in the exact on-disk formats the loaders read (docs/method.md §10).

Each writer takes a folder (usually pytest's ``tmp_path``), writes the files and returns the path
to use as ``data.root``. Images are small solid-colour pictures so tests stay fast.
"""
from __future__ import annotations

import csv
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]  # fmt: skip

#: A few real ImageNet wnids with their LOC_synset_mapping.txt lines.
IMAGENET_SYNSETS = {
    "n01440764": "tench, Tinca tinca",
    "n01443537": "goldfish, Carassius auratus",
    "n01484850": "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias",
    "n01491361": "tiger shark, Galeocerdo cuvieri",
}


def write_image(path: Path, colour: tuple[int, int, int] = (120, 60, 30), size: tuple[int, int] = (8, 8)) -> Path:
    """A small solid-colour image; the format follows the suffix (JPEG, PNG, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_corrupt_image(path: Path) -> Path:
    """A file with an image suffix whose bytes are no image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a JPEG file\x00\x01\x02")
    return path


def _colour(label: int) -> tuple[int, int, int]:
    return (37 * label % 256, 91 * label % 256, 173 * label % 256)


def cifar100_labels(per_class: int, num_classes: int = 100, seed: int = 0) -> np.ndarray:
    """Fine labels with ``per_class`` images each, in a seeded shuffled order like the real files."""
    labels = np.repeat(np.arange(num_classes), per_class)
    np.random.default_rng(seed).shuffle(labels)
    return labels


def write_cifar100(
    root: Path,
    train_per_class: int = 5,
    test_per_class: int = 2,
    class_names: Sequence[str] = CIFAR100_CLASSES,
    protocol: int = 2,
) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` pickles as in the official archive.

    Images are zeros except pixel (0, 0), whose R/G channels encode the image's position in its file
    (``index % 256``, ``index // 256``), so a test can tell which images a loader kept.
    The official files are Python 2 pickles (protocol 2); a newer ``protocol`` writes and reads
    large fixtures faster and torchvision reads both.
    """
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, per_class, seed in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        fine = cifar100_labels(per_class, len(class_names), seed)
        data = np.zeros((len(fine), 3 * 32 * 32), dtype=np.uint8)  # rows are R plane, G plane, B plane
        positions = np.arange(len(fine))
        data[:, 0] = positions % 256
        data[:, 1024] = positions // 256
        entry = {
            "filenames": [f"image_{i}.png" for i in range(len(fine))],
            "batch_label": f"{name}ing batch 1 of 1",
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            "data": data,
        }
        with (folder / name).open("wb") as handle:
            pickle.dump(entry, handle, protocol=protocol)
    meta = {"fine_label_names": list(class_names), "coarse_label_names": [f"super{i}" for i in range(20)]}
    with (folder / "meta").open("wb") as handle:
        pickle.dump(meta, handle, protocol=protocol)
    return root


def cifar_position(image: Image.Image) -> int:
    """The position encoded by :func:`write_cifar100` in an image's pixel (0, 0)."""
    red, green, _ = image.getpixel((0, 0))
    return red + 256 * green


def write_image_folder(root: Path, counts: Mapping[str, Mapping[str, int]], suffix: str = ".jpg") -> Path:
    """``root/<split>/<class>/<i><suffix>`` for ``counts = {split: {class: n_images}}`` (n may be 0)."""
    for split, per_class in counts.items():
        for label, (name, count) in enumerate(sorted(per_class.items())):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                write_image(root / split / name / f"{name}_{i}{suffix}", _colour(label))
    return root


def write_imagenet(
    root: Path, wnids: Sequence[str] = tuple(IMAGENET_SYNSETS), train: int = 3, val: int = 2, mapping: bool = True
) -> Path:
    """ImageFolders of wnids (``train/<wnid>/<wnid>_<i>.JPEG``, ``val/<wnid>/ILSVRC2012_val_*.JPEG``)
    and, optionally, ``LOC_synset_mapping.txt``."""
    for label, wnid in enumerate(wnids):
        for i in range(train):
            write_image(root / "train" / wnid / f"{wnid}_{i}.JPEG", _colour(label))
        for i in range(val):
            write_image(root / "val" / wnid / f"ILSVRC2012_val_{label * 100 + i:08d}.JPEG", _colour(label))
    if mapping:
        lines = [f"{wnid} {IMAGENET_SYNSETS.get(wnid, wnid + ' name')}" for wnid in sorted(wnids)]
        (root / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")
    return root


def write_imagenet_lt(
    root: Path,
    train_counts: Sequence[int] = (6, 3, 1),
    test_per_class: int = 2,
    val_per_class: int = 1,
    wnids: Sequence[str] = tuple(IMAGENET_SYNSETS)[:3],
    split_dir: Path | None = None,
) -> Path:
    """ImageNet images plus ``ImageNet_LT_{train,val,test}.txt`` (in ``split_dir``, default root).

    Lines are ``train/<wnid>/<wnid>_<i>.JPEG <label>`` and ``val/<wnid>/ILSVRC2012_val_<n>.JPEG <label>``;
    val images come from ImageNet's train set and test images from its val set, as in the real files.
    """
    split_dir = split_dir or root
    split_dir.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label, wnid in enumerate(wnids):
        for i in range(train_counts[label]):
            lines["train"].append(f"train/{wnid}/{wnid}_{i}.JPEG {label}")
        for i in range(val_per_class):
            lines["val"].append(f"train/{wnid}/{wnid}_{1000 + i}.JPEG {label}")
        for i in range(test_per_class):
            lines["test"].append(f"val/{wnid}/ILSVRC2012_val_{label * 100 + i:08d}.JPEG {label}")
    for split, split_lines in lines.items():
        for line in split_lines:
            write_image(root / line.rsplit(" ", 1)[0], _colour(int(line.rsplit(" ", 1)[1])))
        (split_dir / f"ImageNet_LT_{split}.txt").write_text("\n".join(split_lines) + "\n")
    return root


def write_scene(root: Path, labels: Sequence[int], folder: str = "") -> Path:
    """Scene classification layout: ``<folder>/train.csv`` (``image_name,label``) + ``<folder>/train/*.jpg``.

    ``folder="train-scene classification"`` writes the Kaggle download's variant. Returns ``root``.
    """
    base = root / folder if folder else root
    (base / "train").mkdir(parents=True, exist_ok=True)
    with (base / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_name", "label"])
        for i, label in enumerate(labels):
            name = f"{i}.jpg"
            write_image(base / "train" / name, _colour(label))
            writer.writerow([name, label])
    return root


def utkface_name(age: int, gender: int, race: int, index: int, chip: bool = False) -> str:
    name = f"{age}_{gender}_{race}_2017011{index:010d}.jpg"
    return name + ".chip.jpg" if chip else name


def write_utkface(
    root: Path, people: Sequence[tuple[int, int, int]], malformed: Sequence[str] = (), chip: bool = False
) -> Path:
    """UTKFace images ``{age}_{gender}_{race}_{date}.jpg`` (``.jpg.chip.jpg`` when ``chip``) for each
    ``(age, gender, race)``, plus files with the given malformed names. Returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for i, (age, gender, race) in enumerate(people):
        write_image(root / utkface_name(age, gender, race, i, chip), _colour(race))
    for name in malformed:
        write_image(root / name)
    return root


def write_csv_dataset(
    root: Path, splits: Mapping[str, Sequence[tuple[str, str]]], file_names: Mapping[str, str] | None = None
) -> Path:
    """``root/<split>.csv`` (or ``file_names[split]``) with columns ``path,label`` and the images
    at ``root/<path>``; ``splits = {split: [(relative path, class name), ...]}``."""
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with (root / (file_names or {}).get(split, f"{split}.csv")).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            for path, label in rows:
                write_image(root / path, _colour(len(label)))
                writer.writerow([path, label])
    return root
