"""Each training image's random choices for the batch stage (:mod:`relaxkd.data.augment`), drawn
from its own uniforms: the ops' ids and magnitudes and the Cutout centre (:class:`Draw`), with the
same distributions as torchvision's AutoAugment, RandAugment and ColorJitter. The op ids
(:data:`OPS`) are shared by the tensor ops (``augment.apply_ops``) and the PIL ones (``pil_ops``).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from relaxkd.versions import require_tested

require_tested("torchvision")  # before its private API (the transforms' _augmentation_space)
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, ColorJitter, RandAugment  # noqa: E402

from relaxkd.data.pil_ops import apply_ops_pil
from relaxkd.images import IMAGENET_STATS

#: every op a draw can name; index = op id in :class:`Draw`
OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
    "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert",
)
OP_IDS = {name: op_id for op_id, name in enumerate(OPS)}
IDENTITY = OP_IDS["Identity"]


@dataclass(frozen=True)
class Draw:
    """One image's random choices for the batch stage: ``ops[s]`` (an id in :data:`OPS`) with
    ``magnitudes[s]`` (as ``_apply_op`` takes it) at stage ``s``; ``hole``: the Cutout centre as a
    flat pixel index, or -1."""

    ops: tuple[int, ...]
    magnitudes: tuple[float, ...]
    hole: int = -1


# --- per-image draws: the same distributions as torchvision's transforms --------------------------


class AutoAugmentDraw:
    """AutoAugment's choice for one image (``T.AutoAugment``'s policies and magnitude table):
    a sub-policy, each of its two ops applied with its probability, signed ops negated half the time."""

    def __init__(self, policy: AutoAugmentPolicy, image_size: int):
        reference = AutoAugment(policy)
        self.policies = reference.policies
        space = reference._augmentation_space(10, (image_size, image_size))
        self._policies = [
            [(OP_IDS[name], p, float(space[name][0][level]) if level is not None else 0.0, space[name][1])
             for name, p, level in policy_ops]
            for policy_ops in self.policies
        ]

    UNIFORMS = 5  # sub-policy, 2 probabilities, 2 signs

    def __call__(self, uniforms: Sequence[float]) -> tuple[list[int], list[float]]:
        u_policy, *u = uniforms
        ops, magnitudes = [], []
        for stage, (op_id, p, magnitude, signed) in enumerate(
            self._policies[min(int(u_policy * len(self._policies)), len(self._policies) - 1)]
        ):
            applied = u[stage] <= p
            ops.append(op_id if applied else IDENTITY)
            magnitudes.append(-magnitude if applied and signed and u[2 + stage] < 0.5 else magnitude)
        return ops, magnitudes


class RandAugmentDraw:
    """RandAugment's choice for one image (``T.RandAugment()`` defaults: 2 ops uniform over its 14,
    magnitude 9 of 31 bins, signed ops negated half the time)."""

    def __init__(self, image_size: int, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31):
        reference = RandAugment(num_ops, magnitude, num_magnitude_bins)
        space = reference._augmentation_space(num_magnitude_bins, (image_size, image_size))
        self.num_ops = num_ops
        self.UNIFORMS = 2 * num_ops  # op and sign, per op
        self._ops = [
            (OP_IDS[name], float(magnitudes[magnitude]) if magnitudes.ndim > 0 else 0.0, signed)
            for name, (magnitudes, signed) in space.items()
        ]

    def __call__(self, uniforms: Sequence[float]) -> tuple[list[int], list[float]]:
        ops, magnitudes = [], []
        for u_op, u_sign in zip(uniforms[: self.num_ops], uniforms[self.num_ops:]):
            op_id, magnitude, signed = self._ops[min(int(u_op * len(self._ops)), len(self._ops) - 1)]
            ops.append(op_id)
            magnitudes.append(-magnitude if signed and u_sign < 0.5 else magnitude)
        return ops, magnitudes


class ColorJitterDraw:
    """``T.ColorJitter(brightness, contrast, saturation)``'s choice for one image: the factors
    uniform in [1 - x, 1 + x] applied in a random order (4 stages: hue is off, its stage is Identity)."""

    _OPS = (OP_IDS["Brightness"], OP_IDS["Contrast"], OP_IDS["Color"], IDENTITY)  # ColorJitter's fn ids 0-3

    def __init__(self, brightness: float, contrast: float, saturation: float):
        reference = ColorJitter(brightness, contrast, saturation)
        self._ranges = [reference.brightness, reference.contrast, reference.saturation, (1.0, 1.0)]

    UNIFORMS = 7  # a uniformly random order (ranks of 4 uniforms) and 3 factors

    def __call__(self, uniforms: Sequence[float]) -> tuple[list[int], list[float]]:
        order = sorted(range(4), key=uniforms.__getitem__)
        # _apply_op's colour ops take factor - 1
        factors = [lo + (hi - lo) * value - 1.0 for (lo, hi), value in zip(self._ranges, [*uniforms[4:7], 0.0])]
        return [self._OPS[fn] for fn in order], [factors[fn] for fn in order]


# --- timm's RandAugment, run on PIL under the image's own seed ------------------------------------


@contextmanager
def _seeded_python_and_numpy(seed: int):
    """Python's and numpy's global generators seeded for one call (timm draws from both), then
    restored: what timm draws depends only on ``seed``."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed([seed >> 32, seed & 0xFFFFFFFF])
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class TimmRandAugmentDraw:
    """The authors' ImageNet strong view after crop and flip (``data_loader/DataLoaderImageNet.py``):
    ``ColorJitter(0.4, 0.4, 0.4, 0)``, then timm's own RandAugment ``rand-n2-m10-mstd0.5`` — 2 of
    timm's 15 ops drawn with replacement, each applied with probability 0.5 at magnitude
    N(10, 0.5) clipped to [0, 10], translations up to 45 % of the image side, fill = the ImageNet
    mean, bilinear or bicubic at random (``timm.data.auto_augment.rand_augment_transform``).

    Both run here, per image, on PIL (``pil_only``): the jitter from :class:`ColorJitterDraw`'s
    uniforms, timm's transform under Python's and numpy's generators seeded from two more of the
    image's uniforms, so a view still depends on its sample's seed alone."""

    pil_only = True
    CONFIG = "rand-n2-m10-mstd0.5"
    UNIFORMS = ColorJitterDraw.UNIFORMS + 2  # the jitter, and a 48-bit seed for timm

    def __init__(self, image_size: int, config: str = CONFIG):
        from timm.data.auto_augment import rand_augment_transform  # noqa: PLC0415 - timm only on this path (ViTs, timm's RandAugment): start-up

        self.jitter = ColorJitterDraw(0.4, 0.4, 0.4)
        # the authors' ra_params: translate_const int(224 * 0.45) (timm's absolute translations, unused
        # by this op list), img_mean = the ImageNet mean in 0-255
        hparams = {
            "translate_const": int(image_size * 0.45),
            "img_mean": tuple(min(255, round(255 * x)) for x in IMAGENET_STATS.mean),
        }
        self.rand_augment = rand_augment_transform(config, hparams)

    def __call__(self, uniforms: Sequence[float]) -> tuple[list[int], list[float]]:
        return [], []  # nothing for the batch stage: see apply

    def apply(self, image: Image.Image, uniforms: Sequence[float]) -> Image.Image:
        ops, factors = self.jitter(uniforms[: ColorJitterDraw.UNIFORMS])
        image = apply_ops_pil(image, [OPS[op] for op in ops], factors)
        high, low = (min(int(u * (1 << 24)), (1 << 24) - 1) for u in uniforms[ColorJitterDraw.UNIFORMS:])
        with _seeded_python_and_numpy((high << 24) | low):
            return self.rand_augment(image)
