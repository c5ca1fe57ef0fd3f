"""Transforms, input statistics and renormalisation between models' statistics."""
from __future__ import annotations

import dataclasses

import numpy as np
import open_clip
import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision import transforms as T

from relaxkd.data.transforms import (
    CLIP_STATS,
    IMAGENET_STATS,
    TRANSFORM_KINDS,
    Cutout,
    Stats,
    build_transform,
    cutout_length,
    get_stats,
    renormalize,
)
from relaxkd.errors import UserError


@pytest.fixture
def image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_stats_constants():
    assert CLIP_STATS == Stats(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    assert IMAGENET_STATS.mean == (0.485, 0.456, 0.406) and IMAGENET_STATS.std == (0.229, 0.224, 0.225)
    assert Stats([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]) == Stats((0.5,) * 3, (0.5,) * 3)  # hashable tuples
    with pytest.raises(dataclasses.FrozenInstanceError):
        CLIP_STATS.mean = (0.0, 0.0, 0.0)  # type: ignore[misc]
    assert get_stats("clip") is CLIP_STATS
    with pytest.raises(UserError, match="imagenet, clip"):
        get_stats("laion")


@pytest.mark.parametrize("kind", TRANSFORM_KINDS)
@pytest.mark.parametrize("policy", ["cifar", "imagenet"])
@pytest.mark.parametrize("size", [32, 48])
def test_transform_output_shape_and_dtype(image, kind, policy, size):
    torch.manual_seed(0)
    out = build_transform(kind, size, IMAGENET_STATS, policy=policy)(image)
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_transform_recipes():
    strong_cifar = build_transform("strong", 224).transforms
    assert any(isinstance(step, T.AutoAugment) for step in strong_cifar)
    assert [step.length for step in strong_cifar if isinstance(step, Cutout)] == [112]  # 16 px per 32 px
    assert isinstance(strong_cifar[-1], Cutout)  # after Normalize: the hole is the mean colour
    strong_imagenet = build_transform("strong", 224, policy="imagenet").transforms
    assert any(isinstance(step, T.RandAugment) for step in strong_imagenet)
    assert not any(isinstance(step, Cutout) for step in strong_imagenet)
    crop = build_transform("weak", 224).transforms[0]
    assert isinstance(crop, T.RandomResizedCrop) and crop.scale == (0.2, 1.0)
    assert crop.interpolation == T.InterpolationMode.BICUBIC
    assert build_transform("test", 224, crop_ratio=0.875).transforms[0].size == 256
    assert cutout_length(32) == 16 and cutout_length(64) == 32


def test_test_and_clip_transforms_are_deterministic(image):
    test = build_transform("test", 32)
    assert torch.equal(test(image), test(image))
    clip = build_transform("clip", 32)
    reference = open_clip.image_transform(32, is_train=False)  # open_clip's own CLIP preprocessing
    torch.testing.assert_close(clip(image), reference(image))


def test_unknown_kind_and_policy():
    with pytest.raises(UserError) as info:
        build_transform("medium", 32)
    assert "'medium'" in str(info.value) and "weak, strong, test, clip" in str(info.value)
    with pytest.raises(UserError, match="cifar, imagenet"):
        build_transform("strong", 32, policy="svhn")


def test_cutout_hole():
    cutout = Cutout(8)
    holes = []
    for seed in range(50):
        torch.manual_seed(seed)
        source = torch.ones(3, 16, 16)
        out = cutout(source)
        assert torch.equal(source, torch.ones(3, 16, 16))  # input untouched
        zeros = (out == 0).all(dim=0)
        assert torch.equal((out == 0).any(dim=0), zeros)  # the same square on every channel
        holes.append(int(zeros.sum()))
    assert max(holes) == 64 and min(holes) > 0  # full square inside, clipped at the border


def test_renormalize_matches_direct_normalisation():
    raw = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    as_imagenet = T.Normalize(IMAGENET_STATS.mean, IMAGENET_STATS.std)(raw)
    as_clip = T.Normalize(CLIP_STATS.mean, CLIP_STATS.std)(raw)
    torch.testing.assert_close(renormalize(as_imagenet, IMAGENET_STATS, CLIP_STATS), as_clip)
    torch.testing.assert_close(renormalize(as_clip, CLIP_STATS, IMAGENET_STATS), as_imagenet)


def test_renormalize_round_trip_and_identity():
    x = torch.randn(2, 3, 5, 5)
    there = renormalize(x, IMAGENET_STATS, CLIP_STATS)
    assert there.dtype == x.dtype and there.shape == x.shape
    torch.testing.assert_close(renormalize(there, CLIP_STATS, IMAGENET_STATS), x, atol=1e-6, rtol=1e-6)
    assert renormalize(x, CLIP_STATS, CLIP_STATS) is x
    half = renormalize(x.half(), IMAGENET_STATS, CLIP_STATS)
    assert half.dtype == torch.float16
    torch.testing.assert_close(renormalize(x[0], IMAGENET_STATS, CLIP_STATS), there[0])  # unbatched
    with pytest.raises(ValueError):
        renormalize(torch.zeros(2, 1, 4, 4), IMAGENET_STATS, CLIP_STATS)
