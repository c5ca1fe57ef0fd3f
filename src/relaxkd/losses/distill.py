"""Student distillation loss from several teachers (DESIGN §2.7, eqs. 1–3).

``distillation_loss`` = ce_weight·CE(z_s, y) + kd_weight·KD, where KD is computed by a method from
``KD_METHODS`` and the teachers are combined by an aggregator from ``AGGREGATORS``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from relaxkd.errors import UserError
from relaxkd.losses.kd import check_temperature, dkd_loss, kd_loss
from relaxkd.registry import Registry


@dataclass(frozen=True)
class DistillPreset:
    ce_weight: float
    kd_weight: float
    temperature: float
    aggregate: str

    def kwargs(self) -> dict[str, float | str]:
        return asdict(self)


# Paper eq. 3: L = CE + λ·τ²·KL with λ = 1, τ = 4, teachers combined by eq. 1.
PAPER = DistillPreset(ce_weight=1.0, kd_weight=1.0, temperature=4.0, aggregate="mean_logits")
# The authors' released code: CE 0.6 / KD 0.4, τ = 3, per-teacher KD losses averaged.
AUTHORS_CODE = DistillPreset(ce_weight=0.6, kd_weight=0.4, temperature=3.0, aggregate="mean_losses")


class KDMethod(Protocol):
    def __call__(
        self, student: Tensor, teacher: Tensor, targets: Tensor, *, temperature: float,
        dkd_alpha: float, dkd_beta: float,
    ) -> Tensor: ...


KD_METHODS: Registry[KDMethod] = Registry("KD method")


@KD_METHODS.register("kd")
def _kd(student, teacher, targets, *, temperature, dkd_alpha, dkd_beta):
    return kd_loss(student, teacher, temperature)


@KD_METHODS.register("zscore")
def _zscore(student, teacher, targets, *, temperature, dkd_alpha, dkd_beta):
    return kd_loss(student, teacher, temperature, standardize=True)


@KD_METHODS.register("dkd")
def _dkd(student, teacher, targets, *, temperature, dkd_alpha, dkd_beta):
    return dkd_loss(student, teacher, targets, alpha=dkd_alpha, beta=dkd_beta, temperature=temperature)


@KD_METHODS.register("none")
def _none(student, teacher, targets, *, temperature, dkd_alpha, dkd_beta):
    return student.new_zeros(())


def aggregate_teacher_logits(teacher_logits: Sequence[Tensor], multimodal_index: int | None) -> Tensor:
    """Eq. 1: z̄ = (mean of unimodal teachers' logits + z_tx) / 2; the plain mean without T_x.

    ``multimodal_index`` is T_x's position in ``teacher_logits`` (None when absent). With T_x as
    the only teacher, z̄ = z_tx.
    """
    if len(teacher_logits) == 0:
        raise UserError("distillation needs at least one teacher")
    if multimodal_index is None:
        return torch.stack(list(teacher_logits)).mean(0)
    if not 0 <= multimodal_index < len(teacher_logits):
        raise UserError(
            f"multimodal_index {multimodal_index} is out of range for {len(teacher_logits)} teachers"
        )
    z_tx = teacher_logits[multimodal_index]
    unimodal = [z for i, z in enumerate(teacher_logits) if i != multimodal_index]
    if not unimodal:
        return z_tx
    return (torch.stack(unimodal).mean(0) + z_tx) / 2


Aggregator = Callable[..., Tensor]
AGGREGATORS: Registry[Aggregator] = Registry("aggregate")


@AGGREGATORS.register("mean_logits")
def _mean_logits(student, teacher_logits, kd_term, *, multimodal_index, teacher_weights):
    return kd_term(student, aggregate_teacher_logits(teacher_logits, multimodal_index))


@AGGREGATORS.register("mean_losses")
def _mean_losses(student, teacher_logits, kd_term, *, multimodal_index, teacher_weights):
    return torch.stack([kd_term(student, z) for z in teacher_logits]).mean()


@AGGREGATORS.register("adaptive")
def _adaptive(student, teacher_logits, kd_term, *, multimodal_index, teacher_weights):
    if teacher_weights is None:
        raise UserError("aggregate 'adaptive' needs teacher_weights (see adaptive_teacher_weights)")
    weights = [float(w) for w in teacher_weights]
    if len(weights) != len(teacher_logits):
        raise UserError(f"got {len(weights)} teacher weights for {len(teacher_logits)} teachers")
    if any(w < 0 or not math.isfinite(w) for w in weights) or not math.isclose(sum(weights), 1.0, abs_tol=1e-4):
        raise UserError(f"teacher weights must be non-negative and sum to 1, got {weights}")
    return sum(w * kd_term(student, z) for w, z in zip(weights, teacher_logits))


def adaptive_teacher_weights(val_kd_losses: Sequence[float]) -> list[float]:
    """Per-teacher weights ∝ 1 / validation KD loss, normalised to sum to 1.

    A zero loss is clamped to a tiny value, so that teacher takes (almost) all the weight.
    """
    losses = [float(v) for v in val_kd_losses]
    if not losses:
        raise UserError("adaptive_teacher_weights needs at least one validation KD loss")
    if any(v < 0 or not math.isfinite(v) for v in losses):
        raise UserError(f"validation KD losses must be finite and non-negative, got {losses}")
    inverse = [1.0 / max(v, 1e-12) for v in losses]
    total = sum(inverse)
    return [w / total for w in inverse]


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Sequence[Tensor],
    targets: Tensor,
    *,
    method: str = "kd",
    aggregate: str = PAPER.aggregate,
    temperature: float = PAPER.temperature,
    ce_weight: float = PAPER.ce_weight,
    kd_weight: float = PAPER.kd_weight,
    teacher_weights: Sequence[float] | None = None,
    multimodal_index: int | None = None,
    dkd_alpha: float = 1.0,
    dkd_beta: float = 8.0,
) -> dict[str, Tensor]:
    """ce_weight·CE(z_s, y) + kd_weight·KD; returns ``loss`` and the unweighted ``ce``, ``kd``.

    ``method``: one of ``KD_METHODS`` (kd, zscore, dkd, none). ``aggregate``: one of
    ``AGGREGATORS`` — ``mean_logits`` (eq. 1 then one KD term), ``mean_losses`` (mean of
    per-teacher KD terms), ``adaptive`` (``teacher_weights``-weighted sum of per-teacher terms).
    Teacher logits are used as given: compute them without gradients.
    """
    kd_method = KD_METHODS.get(method)
    aggregator = AGGREGATORS.get(aggregate)
    check_temperature(temperature)
    ce = F.cross_entropy(student_logits, targets)
    if method == "none":
        kd = ce.new_zeros(())
    else:
        def kd_term(student: Tensor, teacher: Tensor) -> Tensor:
            return kd_method(
                student, teacher, targets, temperature=temperature, dkd_alpha=dkd_alpha, dkd_beta=dkd_beta
            )

        if len(teacher_logits) == 0:
            raise UserError(f"KD method {method!r} needs at least one teacher")
        kd = aggregator(
            student_logits, list(teacher_logits), kd_term,
            multimodal_index=multimodal_index, teacher_weights=teacher_weights,
        )
    loss = ce_weight * ce + kd_weight * kd
    return {"loss": loss, "ce": ce, "kd": kd}
