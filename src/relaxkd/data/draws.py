"""Each training image's random choices for the batch stage (:mod:`relaxkd.data.augment`), drawn
from its own uniforms: the ops' ids and magnitudes and the Cutout centre (:class:`Draw`), with the
same distributions as torchvision's AutoAugment, RandAugment and ColorJitter. The op ids
(:data:`OPS`) are shared by the tensor ops (``augment.apply_ops``) and the PIL ones (``pil_ops``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from relaxkd.versions import require_tested

require_tested("torchvision")  # before its private API (the transforms' _augmentation_space)
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, ColorJitter, RandAugment  # noqa: E402

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
        for stage, (op_id, p, magnitude, signed) in enumerate(self._policies[min(int(u_policy * len(self._policies)), len(self._policies) - 1)]):
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
