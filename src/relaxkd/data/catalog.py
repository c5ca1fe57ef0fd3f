"""The dataset registry: ``build_dataset(name, root, split, transform, download, **params)``.

Every dataset follows :class:`~relaxkd.data.base.LabelledImageDataset`'s contract: items
``(image, label, index)`` and the attributes ``classes``, ``targets``, ``wnids``, ``class_counts``.
The format modules (cifar, folders, tables, digits) register themselves; ``relaxkd.data`` imports them all.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from relaxkd.data.base import LabelledImageDataset, check_split
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
    problem = unknown_params(name, params)
    if problem:
        raise UserError(problem)
    dataset = dataset_cls(root, split, transform=transform, download=download, **params)
    dataset.name = name
    return dataset


def unknown_params(name: str, params: dict[str, Any]) -> str | None:
    """What is wrong with ``params`` for dataset ``name`` when one is not its parameter, else None."""
    valid = dataset_params(name)
    unknown = sorted(set(params) - set(valid))
    if not unknown:
        return None
    return f"dataset {name!r} has no parameter(s) {', '.join(unknown)}; valid parameters: {', '.join(valid) or 'none'}"


def dataset_params(name: str) -> dict[str, Any]:
    """The parameters of dataset ``name`` with their defaults (for config validation and docs)."""
    signature = inspect.signature(DATASETS.get(name).__init__)
    return {
        key: parameter.default
        for key, parameter in signature.parameters.items()
        if key not in _COMMON_ARGS and parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
