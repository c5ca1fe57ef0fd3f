"""Dataset loaders on tiny fixture files written in the real on-disk formats."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relaxkd.data import DATASETS, build_dataset, build_transform, dataset_params
from relaxkd.data.cifar import ldam_class_sizes
from relaxkd.data.tables import SCENE_CLASSES, UTK_AGE_GROUPS, utk_age_group
from relaxkd.errors import UserError

from data_fixtures import (
    CIFAR100_CLASSES,
    IMAGENET_SYNSETS,
    cifar_position,
    utkface_name,
    write_cifar100,
    write_corrupt_image,
    write_csv_dataset,
    write_image,
    write_image_folder,
    write_imagenet,
    write_imagenet_lt,
    write_scene,
    write_utkface,
)

WNIDS = list(IMAGENET_SYNSETS)


def user_error(call, *fragments: str) -> str:
    """Run ``call``, expect a one-line UserError mentioning every fragment; return the message."""
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def check_contract(dataset, num_classes: int) -> None:
    assert len(dataset.classes) == num_classes
    assert len(dataset.targets) == len(dataset)
    assert all(isinstance(label, int) and 0 <= label < num_classes for label in dataset.targets)
    image, label, index = dataset[len(dataset) - 1]
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert (label, index) == (dataset.targets[-1], len(dataset) - 1)
    assert len(dataset.class_counts) == num_classes


# ---------------------------------------------------------------------------------------- registry


def test_registry_lists_every_dataset():
    assert set(DATASETS.names()) == {
        "cifar100", "cifar100_lt", "imagenet", "imagenet_lt", "scene", "utkface", "imagefolder", "csv", "digits",
    }  # fmt: skip
    assert dataset_params("cifar100_lt") == {"imbalance_factor": 100.0, "seed": 0}


def test_unknown_dataset_split_and_parameter():
    user_error(lambda: build_dataset("cifar10", None, "train"), "cifar10", "cifar100_lt", "digits")
    user_error(lambda: build_dataset("digits", None, "test"), "'test'", "train, val")
    user_error(lambda: build_dataset("digits", None, "train", val_frac=0.1), "val_frac", "val_fraction")


@pytest.mark.parametrize("name", ["cifar100", "imagenet", "imagenet_lt", "scene", "utkface", "imagefolder", "csv"])
def test_missing_data_directory(tmp_path, name):
    missing = tmp_path / "nowhere"
    message = user_error(lambda: build_dataset(name, missing, "train"), str(missing), "data.root")
    if name == "cifar100":
        assert "download=true" in message


def test_download_refused_for_manual_datasets(tmp_path):
    user_error(lambda: build_dataset("scene", tmp_path, "train", download=True), "scene", "by hand")


# ---------------------------------------------------------------------------------------- CIFAR-100


def test_cifar100_reads_torchvision_pickles(tmp_path):
    root = write_cifar100(tmp_path, train_per_class=3, test_per_class=2)
    train = build_dataset("cifar100", root, "train")
    val = build_dataset("cifar100", root, "val", download=True)  # files present: nothing is fetched
    assert train.classes == CIFAR100_CLASSES and train.wnids is None
    assert (len(train), len(val)) == (300, 200)
    check_contract(train, 100)
    with (root / "cifar-100-python" / "train").open("rb") as handle:
        assert train.targets == pickle.load(handle, encoding="latin1")["fine_labels"]
    assert cifar_position(train[17][0]) == 17
    assert train.class_counts == [3] * 100 and val.class_counts == [3] * 100


def test_cifar100_missing_and_corrupt_files(tmp_path):
    tmp_path.joinpath("cifar-100-python").mkdir()
    user_error(lambda: build_dataset("cifar100", tmp_path, "train"), "cifar-100-python", "data.root", "download=true")
    root = write_cifar100(tmp_path / "bad", train_per_class=1, test_per_class=1)
    (root / "cifar-100-python" / "train").write_bytes(b"garbage")
    user_error(lambda: build_dataset("cifar100", root, "train"), "cifar-100-python", "unreadable")


@pytest.fixture(scope="module")
def full_cifar100(tmp_path_factory) -> Path:
    # Full-size train file (50,000 images, 500 per class, shuffled label order) to check the LT rule.
    folder = tmp_path_factory.mktemp("cifar_full")
    return write_cifar100(folder, train_per_class=500, test_per_class=1, protocol=pickle.HIGHEST_PROTOCOL)


def ldam_reference_selection(targets: list[int], imb_factor: float) -> np.ndarray:
    """LDAM-DRW's IMBALANCECIFAR100.gen_imbalanced_data, verbatim in spirit (global numpy RNG)."""
    state = np.random.get_state()
    try:
        np.random.seed(0)
        img_max = len(targets) / 100
        img_num_per_cls = [int(img_max * (imb_factor ** (i / 99.0))) for i in range(100)]
        targets_np = np.array(targets, dtype=np.int64)
        selected = []
        for the_class, the_img_num in zip(np.unique(targets_np), img_num_per_cls):
            idx = np.where(targets_np == the_class)[0]
            np.random.shuffle(idx)
            selected.append(idx[:the_img_num])
        return np.concatenate(selected)
    finally:
        np.random.set_state(state)


def test_cifar100_lt_follows_ldam_drw(full_cifar100):
    full = build_dataset("cifar100", full_cifar100, "train")
    train = build_dataset("cifar100_lt", full_cifar100, "train")
    expected_sizes = [int(500 * (1 / 100) ** (c / 99)) for c in range(100)]
    assert len(train) == 10_847 == sum(expected_sizes)
    assert train.class_counts == expected_sizes == ldam_class_sizes(500, 100, 100)
    assert expected_sizes[0] == 500 and expected_sizes[-1] == 5
    reference = ldam_reference_selection(full.targets, 0.01)
    np.testing.assert_array_equal(train.source_indices, reference)
    assert train.targets == [full.targets[i] for i in reference]
    for position in (0, 5_000, 10_846):  # the kept image data moved along with the labels
        assert cifar_position(train[position][0]) == reference[position]

    val = build_dataset("cifar100_lt", full_cifar100, "val")
    assert len(val) == 100 and sorted(val.targets) == list(range(100))
    assert val.class_counts == expected_sizes  # training counts, for many/medium/few-shot groups


def test_cifar100_lt_other_imbalance(full_cifar100):
    train = build_dataset("cifar100_lt", full_cifar100, "train", imbalance_factor=10)
    assert train.class_counts == [int(500 * 0.1 ** (c / 99)) for c in range(100)]
    user_error(lambda: build_dataset("cifar100_lt", full_cifar100, "train", imbalance_factor=0.5), "imbalance_factor")


# ---------------------------------------------------------------------------------------- ImageFolder


def test_imagefolder_classes_counts_and_val_alignment(tmp_path):
    root = write_image_folder(
        tmp_path, {"train": {"cat": 3, "dog": 2, "emu": 1}, "val": {"cat": 1, "emu": 2}}, suffix=".png"
    )
    train = build_dataset("imagefolder", root, "train")
    val = build_dataset("imagefolder", root, "val")
    assert train.classes == val.classes == ["cat", "dog", "emu"] and train.wnids is None
    assert train.targets == [0, 0, 0, 1, 1, 2]
    assert val.targets == [0, 2, 2]  # emu keeps the train label although val has no dog folder
    assert val.class_counts == [3, 2, 1]
    check_contract(train, 3)


def test_imagefolder_errors(tmp_path):
    root = write_image_folder(tmp_path, {"train": {"cat": 2, "dog": 0}})
    user_error(lambda: build_dataset("imagefolder", root, "train"), "empty class folder", str(root / "train" / "dog"))
    write_image(root / "train" / "dog" / "d.jpg")
    user_error(lambda: build_dataset("imagefolder", root, "val"), str(root / "val"), "not found")
    write_image(root / "val" / "cow" / "c.jpg")
    user_error(lambda: build_dataset("imagefolder", root, "val"), str(root / "val" / "cow"), "not training classes")


def test_corrupt_image_raises_user_error_on_load(tmp_path):
    root = write_image_folder(tmp_path, {"train": {"cat": 1, "dog": 1}})
    bad = write_corrupt_image(root / "train" / "cat" / "broken.jpg")
    dataset = build_dataset("imagefolder", root, "train", transform=build_transform("test", 16))
    index = next(i for i, (path, _) in enumerate(dataset.samples) if path == str(bad))
    user_error(lambda: dataset[index], str(bad), "cannot read image")
    image, label, position = dataset[1 - index]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and (label, position) == (0, 1 - index)


def test_imagenet_wnids_and_mapping_names(tmp_path):
    root = write_imagenet(tmp_path / "with", train=2, val=1)
    train = build_dataset("imagenet", root, "train")
    assert train.wnids == sorted(WNIDS)
    assert train.classes == ["tench", "goldfish", "great white shark", "tiger shark"]
    assert train.targets == [0, 0, 1, 1, 2, 2, 3, 3]
    val = build_dataset("imagenet", root, "val")
    assert val.targets == [0, 1, 2, 3] and val.classes == train.classes and val.class_counts == [2] * 4

    bare = write_imagenet(tmp_path / "bare", train=1, val=1, mapping=False)
    assert build_dataset("imagenet", bare, "train").classes == sorted(WNIDS)

    named = write_image_folder(tmp_path / "named", {"train": {"cat": 1, "dog": 1}})
    user_error(lambda: build_dataset("imagenet", named, "train"), "'cat'", "imagefolder")


# ---------------------------------------------------------------------------------------- ImageNet-LT


def test_imagenet_lt_split_files(tmp_path):
    root = write_imagenet_lt(tmp_path, train_counts=(6, 3, 1), test_per_class=2, val_per_class=1)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n in IMAGENET_SYNSETS.items()))
    train = build_dataset("imagenet_lt", root, "train")
    assert train.wnids == WNIDS[:3] and train.classes == ["tench", "goldfish", "great white shark"]
    assert train.class_counts == [6, 3, 1] and len(train) == 10
    assert train.samples[0][0] == str(root / "train" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG")
    check_contract(train, 3)

    test = build_dataset("imagenet_lt", root, "val")  # the test file by default
    assert test.targets == [0, 0, 1, 1, 2, 2] and "/val/" in test.samples[0][0]
    assert test.class_counts == [6, 3, 1]
    held_out = build_dataset("imagenet_lt", root, "val", val_file="ImageNet_LT_val.txt")
    assert held_out.targets == [0, 1, 2] and "/train/" in held_out.samples[0][0]


def test_imagenet_lt_split_dir_and_errors(tmp_path):
    images, files = tmp_path / "imagenet", tmp_path / "splits"
    write_imagenet_lt(images, split_dir=files)
    user_error(lambda: build_dataset("imagenet_lt", images, "train"), "ImageNet_LT_train.txt", "split_dir")
    dataset = build_dataset("imagenet_lt", images, "val", split_dir=str(files))
    assert dataset.classes == WNIDS[:3]  # no mapping file: wnids
    user_error(lambda: build_dataset("imagenet_lt", tmp_path, "train", split_dir=str(files)), "not found", "data.root")
    (files / "ImageNet_LT_test.txt").write_text("val/n01440764/x.JPEG zero\n")
    user_error(
        lambda: build_dataset("imagenet_lt", images, "val", split_dir=str(files)), "ImageNet_LT_test.txt:1"
    )


# ---------------------------------------------------------------------------------------- Scene


SCENE_LABELS = [label for label in range(6) for _ in range(5)]  # 5 images per class


@pytest.mark.parametrize("folder", ["", "train-scene classification"])
def test_scene_csv_and_stratified_split(tmp_path, folder):
    root = write_scene(tmp_path, SCENE_LABELS, folder=folder)
    train = build_dataset("scene", root, "train")
    val = build_dataset("scene", root, "val")
    assert train.classes == SCENE_CLASSES == ["buildings", "forest", "glacier", "mountain", "sea", "street"]
    assert (len(train), len(val)) == (24, 6)
    assert val.targets == list(range(6))  # stratified: one of each class in val
    assert {path for path, _ in train.samples}.isdisjoint(path for path, _ in val.samples)
    assert val.class_counts == [4] * 6
    check_contract(val, 6)
    again = build_dataset("scene", root, "val")
    assert again.samples == val.samples  # seeded
    other = build_dataset("scene", root, "val", split_seed=1)
    assert other.samples != val.samples


def test_scene_errors(tmp_path):
    user_error(lambda: build_dataset("scene", tmp_path, "train"), str(tmp_path / "train.csv"), "not found")
    write_scene(tmp_path, [0, 7])
    user_error(lambda: build_dataset("scene", tmp_path, "train"), "train.csv:3", "0..5")
    user_error(
        lambda: build_dataset("scene", write_scene(tmp_path / "ok", SCENE_LABELS), "train", val_fraction=1.5),
        "val_fraction",
    )


# ---------------------------------------------------------------------------------------- UTKFace


UTK_PEOPLE = [(age, gender, race) for race in range(5) for gender in range(2) for age in (1, 25, 71)]


def test_utkface_targets_and_malformed_names(tmp_path):
    malformed = ["39_1_20170116174525125.jpg.chip.jpg", "notes.jpg"]
    root = write_utkface(tmp_path / "UTKFace", UTK_PEOPLE, malformed=malformed, chip=True)
    (root / "readme.txt").write_text("not an image")  # ignored, not counted as malformed
    with pytest.warns(UserWarning, match="skipped 2 UTKFace"):
        race = build_dataset("utkface", tmp_path, "train", val_fraction=0.5)  # finds root/UTKFace
    assert race.classes == ["White", "Black", "Asian", "Indian", "Others"] and race.wnids is None
    assert len(race) == 15 and race.class_counts == [3] * 5
    for path, label in race.samples:
        assert int(Path(path).name.split("_")[2]) == label
    with pytest.warns(UserWarning):
        gender = build_dataset("utkface", root, "val", target="gender", val_fraction=0.5)
        age = build_dataset("utkface", root, "train", target="age", val_fraction=0.5)
    assert gender.classes == ["male", "female"] and sorted(set(gender.targets)) == [0, 1]
    assert age.classes == UTK_AGE_GROUPS and len(age.classes) == 9
    assert {age.classes[label] for label in age.targets} == {"person aged 0-2", "person aged 20-29", "person aged 70+"}
    check_contract(age, 9)


def test_utkface_age_groups_and_errors(tmp_path):
    groups = [utk_age_group(age) for age in (0, 2, 3, 9, 10, 19, 20, 69, 70, 116)]
    assert groups == [0, 0, 1, 1, 2, 2, 3, 7, 8, 8]
    root = write_utkface(tmp_path, UTK_PEOPLE)
    assert Path(build_dataset("utkface", root, "train").samples[0][0]).name.endswith("000.jpg")
    user_error(lambda: build_dataset("utkface", root, "train", target="emotion"), "emotion", "race, gender, age")
    empty = tmp_path / "empty"
    empty.mkdir()
    user_error(lambda: build_dataset("utkface", empty, "train"), str(empty), "data.root")
    assert utkface_name(30, 1, 2, 7).startswith("30_1_2_")


# ---------------------------------------------------------------------------------------- CSV


def test_csv_dataset(tmp_path):
    rows = {
        "train": [("img/a0.jpg", "zebra"), ("img/a1.jpg", "ant"), ("img/a2.jpg", "zebra")],
        "val": [("img/b0.jpg", "ant"), ("img/b1.jpg", "zebra")],
    }
    root = write_csv_dataset(tmp_path, rows)
    train = build_dataset("csv", root, "train")
    val = build_dataset("csv", root, "val")
    assert train.classes == val.classes == ["ant", "zebra"] and train.wnids is None
    assert train.targets == [1, 0, 1] and val.targets == [0, 1]
    assert val.class_counts == [1, 2]
    check_contract(train, 2)

    custom = write_csv_dataset(tmp_path / "custom", rows, file_names={"train": "fit.csv", "val": "check.csv"})
    files = {"train": "fit.csv", "val": "check.csv"}
    assert build_dataset("csv", custom, "val", csv_file=files).targets == [0, 1]
    user_error(lambda: build_dataset("csv", custom, "train"), str(custom / "train.csv"), "not found")
    user_error(lambda: build_dataset("csv", custom, "train", csv_file="fit.csv"), "{split}")


def test_csv_dataset_bad_labels_and_columns(tmp_path):
    root = write_csv_dataset(tmp_path, {"train": [("a.jpg", "ant")], "val": [("b.jpg", "bee")]})
    user_error(lambda: build_dataset("csv", root, "val"), "'bee'", "val.csv")
    (root / "train.csv").write_text("file,class\na.jpg,ant\n")
    user_error(lambda: build_dataset("csv", root, "train"), "path, label", str(root / "train.csv"))


# ---------------------------------------------------------------------------------------- digits


def test_digits_offline_demo_dataset():
    train = build_dataset("digits", None, "train")
    val = build_dataset("digits", "/ignored", "val")
    assert train.classes[0] == "zero" and train.classes[-1] == "nine" and len(train.classes) == 10
    assert (len(train), len(val)) == (1437, 360) and train.wnids is None
    totals = np.bincount(train.targets) + np.bincount(val.targets)
    assert np.all(np.abs(np.bincount(val.targets) - 0.2 * totals) <= 1)  # stratified by class
    check_contract(train, 10)
    image = train[0][0]
    assert image.size == (32, 32)
    pixels = np.asarray(image)
    assert pixels.max() > 200 and np.array_equal(pixels[..., 0], pixels[..., 2])  # grey levels, stretched
    small = build_dataset("digits", None, "val", image_size=16, transform=build_transform("weak", 16))
    batch = next(iter(torch.utils.data.DataLoader(small, batch_size=8)))
    assert batch[0].shape == (8, 3, 16, 16) and batch[2].tolist() == list(range(8))


def test_datasets_expose_their_wordnet_synsets():
    from relaxkd.data import build_dataset

    digits = build_dataset("digits", None, "val")
    assert digits.synsets()[0] == "zero.n.02"
    assert len(set(digits.synsets())) == 10
