"""CIFAR-100 (torchvision's files) and CIFAR-100-LT (the LDAM-DRW long-tailed profile): docs/method.md §10."""
from __future__ import annotations

import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
from PIL import Image
from torchvision.datasets import CIFAR100
from torchvision.datasets.utils import download_and_extract_archive

from relaxkd.data.base import LabelledImageDataset, check_split
from relaxkd.data.catalog import DATASETS, Transform
from relaxkd.errors import UserError


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
