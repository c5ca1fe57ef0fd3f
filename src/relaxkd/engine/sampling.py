"""Deterministic, resumable data order and augmentation.

The sampler yields ``epoch * N + index`` so that a dataset wrapper can seed each sample's
augmentation from (seed, epoch, index). Data order and augmentation are then a pure function of
the seed: identical across worker counts, across a kill and resume, and recordable (cached
teacher targets replay the same augmentation).
"""
from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


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
    """Applies ``transform`` to ``base[index]`` with RNGs seeded from (seed, epoch, index).

    ``base`` items are ``(image, label, index)`` with raw images; indices may carry an epoch as
    produced by :class:`EpochAwareSampler`.
    """

    def __init__(self, base: Dataset, transform, seed: int):
        self.base = base
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, encoded: int):
        epoch, index = divmod(int(encoded), len(self.base))
        image, label, _ = self.base[index]
        if self.transform is not None:
            state = _seed_all(sample_seed(self.seed, epoch, index))
            try:
                image = self.transform(image)
            finally:
                _restore_all(state)
        return image, label, index


def _seed_all(seed: int):
    state = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    return state


def _restore_all(state) -> None:
    torch.set_rng_state(state[0])
    random.setstate(state[1])
    np.random.set_state(state[2])
