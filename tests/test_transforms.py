"""Transforms, input statistics and renormalisation between models' statistics."""
from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import open_clip
import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision import transforms as T

from relaxkd.data.transforms import (
    CLIP_STATS,
    CUTOUT_LENGTH,
    IMAGENET_STATS,
    TRANSFORM_KINDS,
    Stats,
    build_transform,
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
    from relaxkd.data.augment import AutoAugmentDraw, ColorJitterDraw, TimmRandAugmentDraw, TrainingTransform

    strong_cifar = build_transform("strong", 224, cutout=CUTOUT_LENGTH)
    assert isinstance(strong_cifar, TrainingTransform) and isinstance(strong_cifar.draw, AutoAugmentDraw)
    assert strong_cifar.draw.policies == T.AutoAugment(T.AutoAugmentPolicy.CIFAR10).policies
    assert strong_cifar.cutout_length == 16  # the reference policy's 16 px hole, even at 224 px
    strong_imagenet = build_transform("strong", 224, policy="imagenet")
    assert isinstance(strong_imagenet.draw, TimmRandAugmentDraw) and strong_imagenet.cutout_length == 0
    assert strong_imagenet.crop.scale == (0.08, 1.0) and strong_imagenet.crop.interpolation == T.InterpolationMode.BILINEAR
    weak = build_transform("weak", 224)
    assert isinstance(weak.draw, ColorJitterDraw) and weak.cutout_length == 0
    assert isinstance(weak.crop, T.RandomResizedCrop) and weak.crop.scale == (0.2, 1.0)
    assert weak.crop.interpolation == T.InterpolationMode.BICUBIC and weak.crop.size == (224, 224)
    assert build_transform("test", 224, crop_ratio=0.875).transforms[0].size == 256
    assert CUTOUT_LENGTH == 16 and build_transform("strong", 224, cutout=40).cutout_length == 40
    assert build_transform("strong", 224, cutout=0).cutout_length == 0


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
    from relaxkd.data.augment import cutout

    source = torch.ones(50, 3, 16, 16)
    holes = torch.randint(16 * 16, (50,), generator=torch.Generator().manual_seed(0))
    holes[0], holes[1], holes[2] = 8 * 16 + 8, 0, -1  # centred, a corner, none
    out = cutout(source, holes, 8)
    assert torch.equal(source, torch.ones(50, 3, 16, 16))  # input untouched
    zeros = (out == 0).all(dim=1)
    assert torch.equal((out == 0).any(dim=1), zeros)  # the same square on every channel
    sizes = zeros.sum(dim=(1, 2)).tolist()
    assert sizes[0] == 64 and sizes[1] == 16 and sizes[2] == 0  # full square inside, clipped at the border
    for image, hole in enumerate(holes[3:].tolist(), start=3):
        y, x = divmod(hole, 16)
        expected = torch.zeros(16, 16, dtype=torch.bool)
        expected[max(0, y - 4):y + 4, max(0, x - 4):x + 4] = True
        assert torch.equal(zeros[image], expected)


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


# --- the two-stage training transform: torchvision's ops and distributions -----------------------


def test_fused_normalisation_matches_to_tensor_and_normalize(image):
    from relaxkd.data.transforms import ToNormalizedTensor

    for stats in (IMAGENET_STATS, CLIP_STATS):
        reference = T.Compose([T.ToTensor(), T.Normalize(stats.mean, stats.std)])
        fused = ToNormalizedTensor(stats)(image)
        assert fused.dtype == torch.float32 and fused.is_contiguous()
        torch.testing.assert_close(fused, reference(image))
        grey = image.convert("L").convert("RGB")
        torch.testing.assert_close(ToNormalizedTensor(stats)(grey), reference(grey))


@pytest.mark.parametrize(
    ("width", "height", "size"), [(8, 8, 8), (16, 16, 8), (37, 20, 16), (20, 37, 16), (5, 3, 16), (1, 50, 8), (300, 200, 224)]
)
def test_predicts_resize_and_centre_crop_is_torchvisions(width, height, size):
    """relaxkd.images.resize_center_crop (predict's test view without torchvision's import) gives the
    pixels of torchvision's Resize(bicubic) + CenterCrop, and so the "test" transform's output."""
    from relaxkd.images import normalized_pixels, resize_center_crop

    rng = np.random.default_rng(width * 1000 + height)
    picture = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    reference = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])(picture)
    ours = resize_center_crop(picture, size, size)
    assert ours.size == (size, size)
    assert np.array_equal(np.asarray(ours), np.asarray(reference))
    view = torch.from_numpy(normalized_pixels(ours, *IMAGENET_STATS.uint8_affine()))
    assert torch.equal(view, build_transform("test", size, IMAGENET_STATS)(picture))


def test_fast_random_resized_crop_has_torchvision_distribution():
    from relaxkd.data.transforms import FastRandomResizedCrop

    fast = FastRandomResizedCrop(16, scale=(0.2, 1.0))
    torch.manual_seed(0)
    ours = np.array([fast.crop_box(30, 40, torch.rand(fast.UNIFORMS).tolist()) for _ in range(4000)], dtype=np.float64)
    theirs = np.array([T.RandomResizedCrop.get_params(torch.zeros(1, 30, 40), [0.2, 1.0], [3 / 4, 4 / 3])
                       for _ in range(4000)], dtype=np.float64)
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 30).all() and (left + w <= 40).all()
    assert top.min() == 0 and left.min() == 0 and (top + h).max() == 30 and (left + w).max() == 40
    for column in range(4):  # means within a few standard errors of torchvision's
        error = 4 * np.sqrt(ours[:, column].var() / len(ours) + theirs[:, column].var() / len(theirs))
        assert abs(ours[:, column].mean() - theirs[:, column].mean()) < error
    np.testing.assert_allclose(np.mean(h * w / 1200), np.mean(theirs[:, 2] * theirs[:, 3] / 1200), atol=0.02)


def _op_cases():
    """Every (op, magnitude) AutoAugment's CIFAR-10 policy and RandAugment can draw, both signs."""
    from relaxkd.data.augment import OPS

    cases = set()
    for size in (16, 20):
        spaces = [T.AutoAugment()._augmentation_space(10, (size, size)), T.RandAugment()._augmentation_space(31, (size, size))]
        for space in spaces:
            for name, (magnitudes, signed) in space.items():
                values = magnitudes.reshape(-1).tolist() if magnitudes.dim() else [0.0]
                cases.update((name, float(value)) for value in values)
                if signed:
                    cases.update((name, -float(value)) for value in values)
    cases.update((name, factor - 1.0) for name in ("Brightness", "Contrast", "Color") for factor in (0.8, 0.93, 1.2))
    assert {name for name, _ in cases} == set(OPS)
    return sorted(cases)


@pytest.mark.parametrize("height, width", [(16, 16), (20, 13), (2, 2)])
def test_batched_ops_equal_torchvision_image_by_image(height, width):
    """apply_ops: each image's op and magnitude give torchvision's _apply_op result on that image, bit for bit."""
    from torchvision.transforms.autoaugment import _apply_op

    from relaxkd.data.augment import OP_IDS, apply_ops

    cases = _op_cases()
    generator = torch.Generator().manual_seed(height * width)
    images = torch.randint(0, 256, (len(cases), 3, height, width), dtype=torch.uint8, generator=generator)
    images[::7] //= 3  # low-contrast images: AutoContrast and Equalize stretch them
    images[::11] = 128  # constant images
    order = torch.randperm(len(cases), generator=generator).tolist()  # ops interleaved in the batch
    ops = torch.tensor([[OP_IDS[cases[i][0]]] for i in order])
    magnitudes = torch.tensor([[cases[i][1]] for i in order], dtype=torch.float64)
    out = apply_ops(images, ops, magnitudes)
    for row, i in enumerate(order):
        name, magnitude = cases[i]
        expected = _apply_op(images[row], name, magnitude, interpolation=T.InterpolationMode.NEAREST, fill=None)
        assert torch.equal(out[row], expected), (name, magnitude)
    # two stages: the second op sees the first's output
    two = apply_ops(images[:4], torch.tensor([[OP_IDS["Rotate"], OP_IDS["Equalize"]]] * 4),
                    torch.tensor([[20.0, 0.0]] * 4, dtype=torch.float64))
    for row in range(4):
        rotated = _apply_op(images[row], "Rotate", 20.0, interpolation=T.InterpolationMode.NEAREST, fill=None)
        assert torch.equal(two[row], _apply_op(rotated, "Equalize", 0.0, interpolation=T.InterpolationMode.NEAREST, fill=None))


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

    from relaxkd.data.pil_ops import _autocontrast, _equalize, _solarize

    for picture in _lut_test_images():
        for ours, theirs in ((_equalize(picture), ImageOps.equalize(picture)),
                             (_autocontrast(picture), ImageOps.autocontrast(picture)),
                             (_solarize(picture, 128.0), ImageOps.solarize(picture, 128.0)),
                             (_solarize(picture, 28.3), ImageOps.solarize(picture, 28.3))):
            assert ours.mode == theirs.mode and ours.size == theirs.size
            assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_per_image_ops_for_large_images_equal_torchvision_on_pil():
    """Above BATCH_OPS_MAX_SIZE the drawn ops run per image on PIL: torchvision's PIL results."""
    from torchvision.transforms.autoaugment import _apply_op

    from relaxkd.data.augment import BATCH_OPS_MAX_SIZE
    from relaxkd.data.pil_ops import apply_ops_pil

    rng = np.random.default_rng(5)
    size = BATCH_OPS_MAX_SIZE + 8
    for i, (name, magnitude) in enumerate(_op_cases()):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) // (3 if i % 5 == 0 else 1)
        picture = Image.fromarray(pixels)
        expected = _apply_op(picture, name, magnitude, interpolation=T.InterpolationMode.NEAREST, fill=None)
        assert np.array_equal(np.asarray(apply_ops_pil(picture, [name], [magnitude])), np.asarray(expected)), (name, magnitude)
    assert build_transform("strong", size).batch_ops is False and build_transform("strong", BATCH_OPS_MAX_SIZE).batch_ops


def _frequencies(pairs) -> dict:
    counts: dict = {}
    for pair in pairs:
        counts[pair] = counts.get(pair, 0) + 1
    return {key: count / len(pairs) for key, count in counts.items()}


def test_auto_augment_draw_has_torchvision_distribution():
    from relaxkd.data.augment import IDENTITY, OP_IDS, AutoAugmentDraw

    draw = AutoAugmentDraw(T.AutoAugmentPolicy.CIFAR10, 32)
    reference = T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)
    space = reference._augmentation_space(10, (32, 32))
    count = 40_000
    torch.manual_seed(0)
    draws = [draw(torch.rand(draw.UNIFORMS).tolist()) for _ in range(count)]
    for stage in range(2):
        expected: dict = {}
        for policy in reference.policies:  # sub-policy uniform, op applied with probability p, signs 1/2
            name, p, level = policy[stage]
            magnitudes, signed = space[name]
            magnitude = float(magnitudes[level]) if level is not None else 0.0
            weight = 1 / len(reference.policies)
            for sign, share in (((1.0, 0.5), (-1.0, 0.5)) if signed and magnitude else ((1.0, 1.0),)):
                key = (OP_IDS[name], sign * magnitude)
                expected[key] = expected.get(key, 0.0) + weight * p * share
            expected[(IDENTITY, magnitude)] = expected.get((IDENTITY, magnitude), 0.0) + weight * (1 - p)
        seen = _frequencies([(ops[stage], magnitudes[stage]) for ops, magnitudes in draws])
        assert set(seen) <= set(expected)
        for key, probability in expected.items():  # within 5 standard errors
            assert abs(seen.get(key, 0.0) - probability) < 5 * np.sqrt(probability * (1 - probability) / count) + 1e-9, key


def test_rand_augment_and_color_jitter_draws_have_torchvision_distributions():
    from relaxkd.data.augment import OP_IDS, ColorJitterDraw, RandAugmentDraw

    count = 30_000
    torch.manual_seed(1)
    rand_augment = RandAugmentDraw(32)
    space = T.RandAugment()._augmentation_space(31, (32, 32))
    draws = [rand_augment(torch.rand(rand_augment.UNIFORMS).tolist()) for _ in range(count)]
    for stage in range(2):
        seen = _frequencies([ops[stage] for ops, _ in draws])
        assert set(seen) == {OP_IDS[name] for name in space}
        assert all(abs(share - 1 / len(space)) < 0.01 for share in seen.values())
        for name, (magnitudes, signed) in space.items():
            chosen = {m for ops, ms in draws for op, m in zip(ops, ms) if op == OP_IDS[name]}
            value = float(magnitudes[9]) if magnitudes.dim() else 0.0
            assert chosen == ({value, -value} if signed and value else {value}), name

    jitter = ColorJitterDraw(0.2, 0.2, 0.2)
    draws = [jitter(torch.rand(jitter.UNIFORMS).tolist()) for _ in range(count)]
    orders = _frequencies([tuple(ops) for ops, _ in draws])
    assert len(orders) == 24 and all(abs(share - 1 / 24) < 0.006 for share in orders.values())  # every order alike
    factors = np.array([[m for op, m in sorted(zip(ops, ms)) if op != OP_IDS["Identity"]] for ops, ms in draws])
    assert factors.min() >= -0.2 and factors.max() < 0.2  # factor - 1, uniform in [0.8, 1.2]
    np.testing.assert_allclose(factors.mean(axis=0), 0.0, atol=0.005)
    np.testing.assert_allclose(factors.var(axis=0), 0.4**2 / 12, rtol=0.05)


@pytest.mark.parametrize("size", [16, 72])  # ops per batch / per image (above BATCH_OPS_MAX_SIZE)
@pytest.mark.parametrize("kind, policy", [("strong", "cifar"), ("strong", "imagenet"), ("weak", "cifar")])
def test_training_transform_batches_equal_single_images(kind, policy, size):
    """finish() over a batch gives each image what it gets alone: views never depend on batch-mates."""
    transform = build_transform(kind, size, IMAGENET_STATS, policy=policy)
    pictures = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)) for i in range(40)]
    prepared = []
    for i, picture in enumerate(pictures):
        torch.manual_seed(i)
        prepared.append(transform.prepare(picture))
    batch = transform.finish(prepared)
    assert batch.shape == (40, 3, size, size) and batch.dtype == torch.float32 and batch.is_contiguous()
    for i, picture in enumerate(pictures):
        torch.manual_seed(i)
        assert torch.equal(transform(picture), batch[i])
    if transform.batch_ops:
        assert len({draw.ops for _, draw in prepared}) > 5  # many different choices in one batch
    # normalisation: with no op and no hole, pixels come out as Normalize(ToTensor(pixels))
    pixels, draw = prepared[0]
    plain = transform.finish([(pixels, type(draw)((0,) * len(draw.ops), (0.0,) * len(draw.ops)))])
    reference = T.Normalize(IMAGENET_STATS.mean, IMAGENET_STATS.std)(
        torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255
    )
    torch.testing.assert_close(plain[0], reference)


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


# -- the batch stage on the training device (issue 18) ------------------------------------------------


def _prepared(transform, count: int = 48):
    pictures = [
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20 + i % 30, 24, 3), dtype=np.uint8)) for i in range(count)
    ]
    prepared = []
    for i, picture in enumerate(pictures):
        torch.manual_seed(i)
        prepared.append(transform.prepare(picture))
    return prepared


@pytest.mark.parametrize("size", [16, 32, 64])  # the batched tensor regime (<= BATCH_OPS_MAX_SIZE)
@pytest.mark.parametrize("kind, policy", [("strong", "cifar"), ("strong", "imagenet"), ("weak", "cifar")])
def test_device_batch_stage_equals_the_loader_batch_stage_bit_for_bit(kind, policy, size):
    """uint8 crops + draws finished where they are (DeviceBatch) == the loader's finish(), bit for bit."""
    from relaxkd.data.augment import DeviceBatch

    loader = build_transform(kind, size, IMAGENET_STATS, policy=policy)
    device = build_transform(kind, size, IMAGENET_STATS, policy=policy, batch_stage="device")
    prepared = _prepared(loader)
    expected = loader.finish(prepared)
    batch = device.collate(_prepared(device))
    assert isinstance(batch, DeviceBatch) and batch.pixels.dtype == torch.uint8 and batch.pixels.shape == (48, size, size, 3)
    moved = batch.to("cpu")  # what Lightning's transfer calls; the draws stay on the host
    images = device.finish_batch(moved)
    assert torch.equal(images, expected) and images.is_contiguous()  # on the CPU: NCHW, as the loader's
    channels_last = device.finish_batch(moved, memory_format=torch.channels_last)  # an accelerator's default
    assert torch.equal(channels_last, expected) and channels_last.is_contiguous(memory_format=torch.channels_last)
    assert device(Image.fromarray(np.zeros((20, 20, 3), np.uint8))).shape == (3, size, size)


def test_device_batch_stage_uses_tensor_ops_at_every_size():
    """Above BATCH_OPS_MAX_SIZE the loader runs the ops per image on PIL; the device stage keeps
    torchvision's tensor ops (no PIL on an accelerator): its views are the tensor regime's, which
    differ from the PIL regime's (so the stage is part of the augmentation spec)."""
    from relaxkd.data.augment import BATCH_OPS_MAX_SIZE

    size = BATCH_OPS_MAX_SIZE + 8
    pil = build_transform("strong", size, IMAGENET_STATS, policy="cifar")
    tensor = build_transform("strong", size, IMAGENET_STATS, policy="cifar")
    tensor.batch_ops = True  # the loader's tensor regime, forced
    device = build_transform("strong", size, IMAGENET_STATS, policy="cifar", batch_stage="device")
    assert not pil.batch_ops and device.batch_ops
    from_device = device.finish_batch(device.collate(_prepared(device, 24)))
    assert torch.equal(from_device, tensor.finish(_prepared(tensor, 24)))
    assert not torch.equal(from_device, pil.finish(_prepared(pil, 24)))
    with pytest.raises(UserError, match="unknown batch stage"):
        build_transform("strong", 16, IMAGENET_STATS, batch_stage="gpu")


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_with_a_device_batch_stage_hands_over_uint8_and_the_module_hook_finishes_it(workers):
    """SeededDataModule: the deferred loader yields (DeviceBatch, labels, indices); after the transfer
    on_after_batch_transfer finishes the images, equal bit for bit to the loader-stage batches."""
    from relaxkd.data.augment import DeviceBatch
    from relaxkd.engine.sampling import SeededAugmentation
    from relaxkd.engine.trainer import SeededDataModule

    batches = {}
    for stage in ("loader", "device"):
        data = SeededAugmentation(
            RandomImages(20), build_transform("strong", 16, IMAGENET_STATS, policy="cifar", batch_stage=stage), seed=0
        )
        module = SeededDataModule(data, None, batch_size=8, num_workers=workers if stage == "device" else 0, seed=0)
        loader = module.train_dataloader()
        loader.sampler.set_epoch(1)
        batches[stage] = [(batch, module.on_after_batch_transfer(batch, 0)) for batch in loader]
        del loader
    assert len(batches["device"]) == 3
    for (raw_loader, _), (raw_device, finished) in zip(batches["loader"], batches["device"]):
        assert isinstance(raw_device[0], DeviceBatch) and isinstance(raw_loader[0], torch.Tensor)
        assert torch.equal(finished[1], raw_loader[1]) and torch.equal(finished[2], raw_loader[2])
        assert torch.equal(finished[0], raw_loader[0])


# -- issue 25 item 3: the ImageNet strong view is the authors' (timm's rand-n2-m10-mstd0.5) --------
#: data_loader/DataLoaderImageNet.py's _RAND_TRANSFORMS (its PosterizeTpu is timm's Posterize)
AUTHORS_RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
                    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def authors_rand_augment_draws(images: int, rng: np.random.Generator) -> list[tuple[str, tuple]]:
    """DataLoaderImageNet.py's RandAugment written out: 2 ops with replacement
    (``np.random.choice(self.ops, 2, replace=True)``), each skipped when ``random() > 0.5``, magnitude
    ``gauss(10, 0.5)`` clipped to [0, 10], and its ``_*_level_to_arg`` (_MAX_LEVEL 10)."""
    signed = lambda v: -v if rng.random() > 0.5 else v  # noqa: E731  (_randomly_negate)
    levels = {
        "Rotate": lambda m: (signed(m / 10 * 30.0),), "ShearX": lambda m: (signed(m / 10 * 0.3),),
        "ShearY": lambda m: (signed(m / 10 * 0.3),), "TranslateXRel": lambda m: (signed(m / 10 * 0.45),),
        "TranslateYRel": lambda m: (signed(m / 10 * 0.45),), "Posterize": lambda m: (int(m / 10 * 4),),
        "Solarize": lambda m: (int(m / 10 * 256),), "SolarizeAdd": lambda m: (int(m / 10 * 110),),
        **{name: (lambda m: (m / 10 * 1.8 + 0.1,)) for name in ("Color", "Contrast", "Brightness", "Sharpness")},
    }
    draws = []
    for _ in range(images):
        for name in rng.choice(AUTHORS_RAND_OPS, 2, replace=True):
            if rng.random() > 0.5:
                continue
            magnitude = min(10.0, max(0.0, rng.normal(10, 0.5)))
            draws.append((str(name), levels[name](magnitude) if name in levels else ()))
    return draws


def _recorded(rand_augment, log: list) -> None:
    """Wrap each of timm's ops to log (name, level args) when it runs."""
    for op in rand_augment.ops:
        def logged(img, *args, _name=op.name, _fn=op.aug_fn, **kwargs):
            log.append((_name, args))
            return _fn(img, *args, **kwargs)
        op.aug_fn = logged


def _summary(draws: list[tuple[str, tuple]], images: int) -> dict[str, tuple[float, float, float, float]]:
    """Per op: runs per image, mean |first arg|, its standard error, share of negative args."""
    out = {}
    for name in AUTHORS_RAND_OPS:
        args = np.array([a[0] for n, a in draws if n == name and a], dtype=float)
        count = sum(1 for n, _ in draws if n == name)
        if len(args):
            out[name] = (
                count / images,
                float(np.abs(args).mean()),
                float(np.abs(args).std() / np.sqrt(len(args))),
                float((args < 0).mean()),
            )
        else:
            out[name] = (count / images, 0.0, 0.0, 0.0)
    return out


def test_imagenet_strong_view_draws_timms_rand_augment_as_the_authors_configured_it():
    from timm.data.auto_augment import rand_augment_transform

    from relaxkd.data.draws import TimmRandAugmentDraw

    images, size = 3000, 16
    transform = build_transform("strong", size, policy="imagenet")
    ours: list = []
    _recorded(transform.draw.rand_augment, ours)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    for seed in range(images):
        torch.manual_seed(seed)
        transform.prepare(picture)
    # timm's own transform, configured as the authors' ra_params, drawing from the global generators
    hparams = {"translate_const": int(size * 0.45), "img_mean": (124, 116, 104)}
    reference = rand_augment_transform(TimmRandAugmentDraw.CONFIG, hparams)
    theirs: list = []
    _recorded(reference, theirs)
    random.seed(1)
    np.random.seed(1)
    for _ in range(images):
        reference(picture)
    authors = authors_rand_augment_draws(images, np.random.default_rng(2))
    assert [op.name for op in reference.ops] == list(AUTHORS_RAND_OPS)
    assert {op.prob for op in reference.ops} == {0.5} and {op.magnitude_std for op in reference.ops} == {0.5}
    assert reference.ops[0].kwargs["fillcolor"] == (124, 116, 104) == transform.draw.rand_augment.ops[0].kwargs["fillcolor"]
    for name, (runs, magnitude, error, negative) in _summary(ours, images).items():
        for other in (_summary(theirs, images)[name], _summary(authors, images)[name]):
            assert runs == pytest.approx(other[0], abs=0.02), name  # 1/15 per image expected
            assert abs(magnitude - other[1]) <= 4 * math.hypot(error, other[2]) + 1e-9, (name, magnitude, other)
            assert negative == pytest.approx(other[3], abs=0.1), name
    # the same seed gives the same view; the global generators are left as they were
    state = random.getstate()
    torch.manual_seed(5)
    first = transform.prepare(picture)[0]
    torch.manual_seed(5)
    assert np.array_equal(first, transform.prepare(picture)[0]) and random.getstate() == state
