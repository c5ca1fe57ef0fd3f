"""Deterministic, resumable data order and augmentation.

The sampler yields ``epoch * N + index`` so that a dataset wrapper can seed each sample's
augmentation from (seed, epoch, index). Data order and augmentation are then a pure function of
the seed: identical across worker counts, across a kill and resume, and recordable (cached
teacher targets replay the same augmentation).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler

from relaxkd.data.augment import DeviceBatch, TrainingTransform


class EpochAwareSampler(DistributedSampler):
    """DistributedSampler (one replica unless told otherwise) that encodes the epoch in each index."""

    def __init__(self, dataset: Dataset, *, seed: int, shuffle: bool, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        for index in super().__iter__():
            yield self.epoch * n + index


def sample_seed(seed: int, epoch: int, index):
    """The augmentation seed of one sample (``index`` may be an int64 tensor of indices)."""
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729) % (2**31 - 1)


class SeededAugmentation(Dataset):
    """Applies ``transform`` to ``base[index]`` with torch's CPU RNG seeded from (seed, epoch, index).

    ``base`` items are ``(image, label, index)`` with raw images; indices may carry an epoch as
    produced by :class:`EpochAwareSampler`. Only torch's default CPU generator is seeded (and
    restored afterwards, so a main-process loader leaves the training RNG untouched): the
    transforms must draw from it alone, as torchvision's and :mod:`relaxkd.data.transforms`' do
    (tests/test_transforms.py checks every transform :func:`~relaxkd.data.build_transform`
    builds). Seeding Python's ``random`` and numpy too cost ~0.2 ms a sample, more than some
    whole augmentations (benchmarks/bench_train.py's loader_headroom). A two-stage training
    transform draws everything in its per-image stage, under the seed; its batch stage is a
    deterministic function of those draws, run once per batch in :meth:`__getitems__`.
    """

    def __init__(self, base: Dataset, transform, seed: int):
        self.base = base
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, encoded: int):
        return self.__getitems__([encoded])[0]

    def __getitems__(self, encoded_indices: list[int]) -> list:
        """The items of a batch (DataLoader calls this with each batch's indices): a two-stage
        transform (:class:`~relaxkd.data.augment.TrainingTransform`) prepares each image under its
        own seed and finishes the batch at once; any other transform runs per image."""
        two_stage = isinstance(self.transform, TrainingTransform)
        labels, indices, outputs = [], [], []
        for encoded in encoded_indices:
            epoch, index = divmod(int(encoded), len(self.base))
            image, label, _ = self.base[index]
            if self.transform is not None:
                state = _seed_all(sample_seed(self.seed, epoch, index))
                try:
                    image = self.transform.prepare(image) if two_stage else self.transform(image)
                finally:
                    _restore_all(state)
            outputs.append(image)
            labels.append(label)
            indices.append(index)
        if two_stage and outputs and not self.deferred:
            outputs = list(self.transform.finish(outputs))  # each image depends on its own draws only
        return list(zip(outputs, labels, indices))

    @property
    def deferred(self) -> bool:
        """True when the batch stage runs on the training device: the loader then yields
        ``(DeviceBatch, labels, indices)`` (:attr:`collate_fn`) and :meth:`finish_batch` completes
        the images after the transfer (``SeededDataModule.on_after_batch_transfer``)."""
        return isinstance(self.transform, TrainingTransform) and self.transform.batch_stage == "device"

    @property
    def collate_fn(self):
        """The DataLoader's ``collate_fn`` for this dataset (None: PyTorch's default)."""
        return self._collate_deferred if self.deferred else None

    def _collate_deferred(self, items: list) -> tuple[DeviceBatch, torch.Tensor, torch.Tensor]:
        prepared, labels, indices = zip(*items)
        return self.transform.collate(prepared), torch.tensor(labels), torch.tensor(indices)

    def finish_batch(self, images):
        """A loader batch's images, finished where they are if the batch stage was deferred."""
        return self.transform.finish_batch(images) if isinstance(images, DeviceBatch) else images


def loader_collate_fn(dataset: Dataset):
    """The ``collate_fn`` a DataLoader over ``dataset`` needs (None: PyTorch's default)."""
    return getattr(getattr(dataset, "dataset", dataset), "collate_fn", None)  # through a Subset


def finish_batch(dataset: Dataset, images):
    """``images`` from a loader over ``dataset``, with a deferred batch stage run where they are."""
    if isinstance(images, DeviceBatch):
        return getattr(dataset, "dataset", dataset).finish_batch(images)  # through a Subset
    return images


def _seed_all(seed: int) -> torch.Tensor:
    # Per sample, so cost matters: torch.manual_seed would also seed (or, before CUDA starts,
    # queue a traceback-capturing lazy seed for) every accelerator, ~0.2-0.5 ms; transforms draw
    # from the CPU generator only, which is all we seed and restore (~5 us together).
    state = _CPU.get_state()
    _CPU.manual_seed(seed)
    return state


def _restore_all(state: torch.Tensor) -> None:
    _CPU.set_state(state)


_CPU = torch.default_generator
