"""Cached teacher targets, in the spirit of Fast Knowledge Distillation (Shen & Xing, ECCV 2022).

Augmentation is a pure function of (seed, epoch, sample index) (engine/sampling.py), so the views a
student will see are known in advance. ``build_targets`` runs the teachers once over every epoch's
views, recording each sample's augmentation seed and each teacher's logits; a student trained with
``CachedTargets`` replays them and runs no teacher at all. The cache is exact with ``top_k = 0``
(all logits kept). With ``top_k = k`` each teacher keeps its k largest logits per sample plus one
fill value for the other classes, chosen so that their softened (temperature τ) probability mass is
preserved: the top-k probabilities at τ are exact, the rest are spread evenly over the other classes.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from relaxkd.engine.sampling import EpochAwareSampler, finish_batch, loader_collate_fn, sample_seed
from relaxkd.errors import UserError

TRAIN_FILE = "epoch-{epoch:04d}.safetensors"
VAL_FILE = "val.safetensors"


def compress(logits: Tensor, top_k: int, temperature: float) -> dict[str, Tensor]:
    """``[..., C]`` logits -> the tensors stored for them (see the module docstring)."""
    num_classes = logits.shape[-1]
    if top_k == 0 or top_k >= num_classes:
        return {"logits": logits.float()}
    values, indices = logits.float().topk(top_k, dim=-1)
    rest = logits.float().scatter(-1, indices, float("-inf"))
    # (C - k) · exp(fill / τ) = Σ_rest exp(z / τ)
    fill = temperature * (torch.logsumexp(rest / temperature, dim=-1) - math.log(num_classes - top_k))
    index_dtype = torch.int16 if num_classes <= torch.iinfo(torch.int16).max else torch.int32
    return {"values": values, "indices": indices.to(index_dtype), "fill": fill}


def expand(stored: dict[str, Tensor], num_classes: int) -> Tensor:
    """Inverse of ``compress``: ``[..., C]`` logits (exact for the kept entries)."""
    if "logits" in stored:
        return stored["logits"]
    fill = stored["fill"]
    full = fill.unsqueeze(-1).expand(*fill.shape, num_classes).clone()
    return full.scatter_(-1, stored["indices"].long(), stored["values"])


def _teacher_pass(
    teacher_logits: Callable[..., list[Tensor]],
    dataset: Dataset,
    *,
    split: str,
    epoch: int,
    seed: int,
    batch_size: int,
    num_workers: int,
    top_k: int,
    temperature: float,
    device: torch.device,
) -> dict[str, Tensor]:
    """Every teacher's logits on one epoch's views, batched exactly as the student's loader batches."""
    # the student's sampler (single process) with the same seed and batch size: same batches, so
    # the teachers compute bit-identical logits to an online run
    sampler = EpochAwareSampler(dataset, seed=seed, shuffle=split == "train")
    sampler.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=loader_collate_fn(dataset), pin_memory=device.type == "cuda")
    n = len(dataset)
    stored: dict[str, Tensor] = {}
    aug_seeds = torch.full((n,), -1, dtype=torch.int64)
    for images, targets, indices in loader:
        # a batch stage deferred to the device runs there, as in the student's loop: same views
        images = finish_batch(dataset, images.to(device))
        logits = torch.stack(teacher_logits(images, targets.to(device), indices.to(device), split)).cpu()
        parts = compress(logits, top_k, temperature)  # [T, B, ...]
        for name, value in parts.items():
            if name not in stored:
                stored[name] = torch.zeros((value.shape[0], n, *value.shape[2:]), dtype=value.dtype)
            stored[name][:, indices] = value
        aug_seeds[indices] = sample_seed(seed, epoch, indices.long())
    if split == "train":
        stored["aug_seeds"] = aug_seeds  # what the student's loader must reproduce for these targets
    return stored


def _save_atomically(tensors: dict[str, Tensor], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def build_targets(
    teacher_logits: Callable[..., list[Tensor]],
    train: Dataset,
    val: Dataset,
    *,
    out: Path,
    work: Path,
    epochs: int,
    seed: int,
    batch_size: int,
    num_workers: int,
    top_k: int,
    temperature: float,
    device: torch.device,
    log: Callable[[str], None] = lambda message: None,
) -> None:
    """Write ``epochs`` training files and one validation file into ``out``.

    ``teacher_logits(images, targets, indices, split)`` returns one logit tensor per teacher. Each
    finished epoch is kept in ``work`` first, so a killed build resumes at the first missing epoch.
    """
    work.mkdir(parents=True, exist_ok=True)
    common = dict(seed=seed, batch_size=batch_size, num_workers=num_workers, top_k=top_k, temperature=temperature, device=device)
    jobs = [(TRAIN_FILE.format(epoch=e), train, "train", e) for e in range(epochs)] + [(VAL_FILE, val, "val", 0)]
    for name, dataset, split, epoch in jobs:
        if not (work / name).exists():
            _save_atomically(_teacher_pass(teacher_logits, dataset, split=split, epoch=epoch, **common), work / name)
            if split == "train" and (epoch + 1) % max(1, epochs // 10) == 0:
                log(f"teacher-targets: epoch {epoch + 1}/{epochs} recorded")
    for name, *_ in jobs:
        os.replace(work / name, out / name)


class CachedTargets:
    """Replays recorded teacher logits by (split, epoch, sample index).

    The epoch's recorded tensors are copied once to the device the batch's indices live on, so a
    step reads its targets with one indexed gather there: no host sync, no per-step copy. An epoch
    larger than :attr:`DEVICE_SHARE` of the device's memory (exact logits at ImageNet scale) stays
    on the host and is gathered there (the indices then come back to the host each step).
    """

    #: at most this share of the device's memory holds one epoch's recorded targets
    DEVICE_SHARE = 0.25

    def __init__(self, root: Path, *, num_teachers: int, num_classes: int, epochs: int, seed: int):
        self.root, self.num_teachers, self.num_classes, self.epochs, self.seed = root, num_teachers, num_classes, epochs, seed
        self._epoch: int | None = None
        self._train: dict[str, Tensor] = {}
        self._val: dict[str, Tensor] | None = None
        self._resident: dict[tuple[str, int, torch.device], dict[str, Tensor]] = {}

    def _load(self, name: str) -> dict[str, Tensor]:
        stored = load_file(str(self.root / name))
        teachers = next(v for k, v in stored.items() if k != "aug_seeds").shape[0]
        if teachers != self.num_teachers:
            raise UserError(
                f"cached targets {self.root} hold {teachers} teachers, this distillation has {self.num_teachers}; rebuild them"
            )
        return stored

    def epoch_targets(self, epoch: int) -> dict[str, Tensor]:
        if epoch >= self.epochs:
            raise UserError(
                f"cached teacher targets {self.root} cover {self.epochs} epochs, the student asked for epoch {epoch + 1}; "
                "rebuild them with distill.optim.epochs set to the student's epochs"
            )
        if self._epoch != epoch:
            self._train = self._load(TRAIN_FILE.format(epoch=epoch))
            expected = sample_seed(self.seed, epoch, torch.arange(len(self._train["aug_seeds"])))
            if not torch.equal(self._train["aug_seeds"], expected):
                raise UserError(f"cached teacher targets {self.root} were recorded for another seed; rebuild them")
            self._epoch = epoch
        return self._train

    def logits(self, split: str, epoch: int, indices: Tensor) -> list[Tensor]:
        if split == "train":
            stored = self.epoch_targets(epoch)
        else:
            if self._val is None:
                self._val = self._load(VAL_FILE)
            stored = self._val
        stored = self._on_device(stored, split, epoch, indices.device)
        where = next(iter(stored.values())).device
        index = indices.to(where).long()
        picked = {k: v[:, index] for k, v in stored.items()}
        return list(expand(picked, self.num_classes).unbind(0))

    def _on_device(self, stored: dict[str, Tensor], split: str, epoch: int, device: torch.device) -> dict[str, Tensor]:
        """The split's (and epoch's) recorded tensors on ``device`` if they fit, else on the host."""
        stored = {k: v for k, v in stored.items() if k != "aug_seeds"}
        if device.type == "cpu":
            return stored
        key = (split, epoch if split == "train" else -1, device)
        if key not in self._resident:
            size = sum(v.numel() * v.element_size() for v in stored.values())
            total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 0
            if total and size > self.DEVICE_SHARE * total:
                return stored
            # drop the previous epoch's copy first (one training epoch resident at a time)
            self._resident = {k: v for k, v in self._resident.items() if k[0] != split}
            self._resident[key] = {k: v.to(device) for k, v in stored.items()}
        return self._resident[key]
