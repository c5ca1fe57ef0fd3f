"""Data layer: dataset registry, on-disk format loaders, transforms and input statistics."""
from relaxkd.data import cifar, digits, folders, tables  # noqa: F401  (each module registers its formats)
from relaxkd.data.base import SPLITS, ImageListDataset, LabelledImageDataset, load_rgb_image
from relaxkd.data.catalog import DATASETS, build_dataset, dataset_params
from relaxkd.data.transforms import (
    CLIP_STATS,
    IMAGENET_STATS,
    TRANSFORM_KINDS,
    Stats,
    build_transform,
    get_stats,
    renormalize,
)

__all__ = [
    "CLIP_STATS",
    "DATASETS",
    "IMAGENET_STATS",
    "SPLITS",
    "TRANSFORM_KINDS",
    "ImageListDataset",
    "LabelledImageDataset",
    "Stats",
    "build_dataset",
    "build_transform",
    "dataset_params",
    "get_stats",
    "load_rgb_image",
    "renormalize",
]
