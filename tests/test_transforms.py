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


# --- fast per-sample steps: same ops and distributions as torchvision / PIL -----------------------


def _lut_test_images() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    images = []
    for i in range(400):
        mode = ("RGB", "L")[i % 2]
        shape = (int(rng.integers(1, 12)), int(rng.integers(1, 12))) + ((3,) if mode == "RGB" else ())
        kind = i % 4
        if kind == 0:
            pixels = rng.integers(0, 256, shape)
        elif kind == 1:  # two or three grey levels
            pixels = rng.integers(0, 3, shape) * int(rng.integers(0, 120))
        elif kind == 2:  # constant
            pixels = np.full(shape, int(rng.integers(0, 256)))
        else:
            pixels = np.clip(rng.normal(128, 40, shape), 0, 255)
        images.append(Image.fromarray(pixels.astype(np.uint8), mode))
    return images


def test_lookup_table_ops_match_pil():
    from PIL import ImageOps

    from relaxkd.data.transforms import _autocontrast, _equalize, _solarize

    for picture in _lut_test_images():
        for ours, theirs in ((_equalize(picture), ImageOps.equalize(picture)),
                             (_autocontrast(picture), ImageOps.autocontrast(picture)),
                             (_solarize(picture, 128.0), ImageOps.solarize(picture, 128.0)),
                             (_solarize(picture, 28.3), ImageOps.solarize(picture, 28.3))):
            assert ours.mode == theirs.mode and ours.size == theirs.size
            assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_fused_normalisation_matches_to_tensor_and_normalize(image):
    from relaxkd.data.transforms import ToNormalizedTensor

    for stats in (IMAGENET_STATS, CLIP_STATS):
        reference = T.Compose([T.ToTensor(), T.Normalize(stats.mean, stats.std)])
        fused = ToNormalizedTensor(stats)(image)
        assert fused.dtype == torch.float32 and fused.is_contiguous()
        torch.testing.assert_close(fused, reference(image))
        grey = image.convert("L").convert("RGB")
        torch.testing.assert_close(ToNormalizedTensor(stats)(grey), reference(grey))


def test_fast_random_resized_crop_has_torchvision_distribution():
    from relaxkd.data.transforms import FastRandomResizedCrop

    fast = FastRandomResizedCrop(16, scale=(0.2, 1.0))
    torch.manual_seed(0)
    ours = np.array([fast.crop_box(30, 40) for _ in range(4000)], dtype=np.float64)
    theirs = np.array([T.RandomResizedCrop.get_params(torch.zeros(1, 30, 40), [0.2, 1.0], [3 / 4, 4 / 3])
                       for _ in range(4000)], dtype=np.float64)
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 30).all() and (left + w <= 40).all()
    assert top.min() == 0 and left.min() == 0 and (top + h).max() == 30 and (left + w).max() == 40
    for column in range(4):  # means within a few standard errors of torchvision's
        error = 4 * np.sqrt(ours[:, column].var() / len(ours) + theirs[:, column].var() / len(theirs))
        assert abs(ours[:, column].mean() - theirs[:, column].mean()) < error
    np.testing.assert_allclose(np.mean(h * w / 1200), np.mean(theirs[:, 2] * theirs[:, 3] / 1200), atol=0.02)


def test_fast_auto_augment_keeps_torchvision_policy_and_magnitudes():
    from relaxkd.data.transforms import FastAutoAugment

    fast, reference = FastAutoAugment(T.AutoAugmentPolicy.CIFAR10), T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)
    assert fast.policies == reference.policies
    for name, (magnitudes, signed) in reference._augmentation_space(10, (16, 16)).items():
        ours, our_signed = fast._space(16, 16)[name]
        assert our_signed == signed
        assert ours == (magnitudes.tolist() if magnitudes.dim() else None)
    picture = Image.fromarray(np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    torch.manual_seed(3)
    outputs = {np.asarray(fast(picture)).tobytes() for _ in range(200)}
    assert len(outputs) > 20  # many sub-policies and magnitudes, not one


@pytest.mark.parametrize("kind", TRANSFORM_KINDS)
@pytest.mark.parametrize("policy", ["cifar", "imagenet"])
def test_transforms_draw_from_torch_cpu_rng_only(image, kind, policy):
    """SeededAugmentation seeds only torch's CPU generator: no transform may use random or numpy's."""
    import random

    transform = build_transform(kind, 16, IMAGENET_STATS, policy=policy)
    outputs = []
    for other_seed in (1, 2):
        random.seed(other_seed)
        np.random.seed(other_seed)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        torch.manual_seed(0)
        outputs.append(transform(image))
        assert random.getstate() == python_state
        after = np.random.get_state()
        assert after[2:] == numpy_state[2:] and np.array_equal(after[1], numpy_state[1])
    assert torch.equal(outputs[0], outputs[1])


class RandomImages(torch.utils.data.Dataset):
    """``(image, label, index)`` items: 20 px RGB noise fixed by the index."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        pixels = np.random.default_rng(index).integers(0, 256, (20, 20, 3), dtype=np.uint8)
        return Image.fromarray(pixels), index % 3, index


def test_seeded_augmentation_is_a_function_of_seed_epoch_index_and_restores_torch_rng():
    from relaxkd.engine.sampling import SeededAugmentation

    transform = build_transform("strong", 16, IMAGENET_STATS, policy="cifar")
    data = SeededAugmentation(RandomImages(10), transform, seed=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = data[2 * 10 + 4]  # epoch 2, index 4
    assert torch.equal(torch.get_rng_state(), before)  # the training RNG is untouched
    torch.manual_seed(999)
    assert torch.equal(data[24][0], first[0]) and first[1:] == (1, 4)
    assert not torch.equal(data[34][0], first[0])  # another epoch, another augmentation
    assert not torch.equal(SeededAugmentation(RandomImages(10), transform, seed=6)[24][0], first[0])


def test_seeded_loader_batches_are_identical_across_worker_counts():
    from relaxkd.engine.sampling import SeededAugmentation
    from relaxkd.engine.trainer import SeededDataModule

    data = SeededAugmentation(RandomImages(24), build_transform("strong", 16, IMAGENET_STATS, policy="cifar"), seed=0)
    batches = {}
    for workers in (0, 2):
        loader = SeededDataModule(data, None, batch_size=8, num_workers=workers, seed=0).train_dataloader()
        loader.sampler.set_epoch(1)
        batches[workers] = list(loader)
        del loader
    for (images_0, labels_0, index_0), (images_2, labels_2, index_2) in zip(batches[0], batches[2]):
        assert torch.equal(index_0, index_2) and torch.equal(labels_0, labels_2)
        assert torch.equal(images_0, images_2)
