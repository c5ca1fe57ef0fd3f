"""Multi-teacher aggregation of KD terms (the paper's eqs. 1-3).

``AGGREGATORS`` combine per-teacher KD terms: ``mean_logits`` (eq. 1, then one KD term),
``mean_losses`` (mean of per-teacher terms, the authors' code), ``adaptive`` (weighted sum with
per-teacher weights ∝ 1 / validation KD loss). KD methods (relaxkd.methods) use them.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from relaxkd.errors import UserError
from relaxkd.registry import Registry


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
    if isinstance(teacher_weights, Tensor):
        # validated when set (adaptive_teacher_weights): no host synchronisation in the step
        if teacher_weights.numel() != len(teacher_logits):
            raise UserError(f"got {teacher_weights.numel()} teacher weights for {len(teacher_logits)} teachers")
        terms = torch.stack([kd_term(student, z) for z in teacher_logits])
        return (teacher_weights.to(terms.dtype) * terms).sum()
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
