"""Logit distillation losses: vanilla KD, z-score (logit-standardised) KD and Decoupled KD."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from relaxkd.errors import UserError

STANDARDIZE_EPS = 1e-7
# DKD masks the target class out of the non-target softmax by subtracting a large constant
# (mdistiller's value), which keeps the class axis intact instead of gathering columns.
_DKD_MASK_OFFSET = 1000.0


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise UserError(f"temperature must be > 0, got {temperature}")


def standardize_logits(z: Tensor) -> Tensor:
    """Z-score logits per sample over the class axis (unbiased std), as in logit-standardised KD."""
    mean = z.mean(dim=-1, keepdim=True)
    std = z.std(dim=-1, keepdim=True)
    return (z - mean) / (std + STANDARDIZE_EPS)


def kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, standardize: bool = False
) -> Tensor:
    """τ² · batch mean of KL(softmax(t/τ) ‖ softmax(s/τ)) (Hinton et al.); z-score KD if ``standardize``."""
    check_temperature(temperature)
    if standardize:
        student_logits = standardize_logits(student_logits)
        teacher_logits = standardize_logits(teacher_logits)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """Decoupled KD (Zhao et al. 2022): α·TCKD + β·NCKD, each τ²-scaled and averaged over the batch.

    Follows mdistiller's ``dkd_loss`` (without its epoch warm-up factor, which belongs to the
    training loop).
    """
    check_temperature(temperature)
    gt_mask = F.one_hot(targets, student_logits.shape[1]).to(student_logits.dtype)
    other_mask = 1.0 - gt_mask
    batch = targets.shape[0]

    p_student = F.softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    # Binary (target vs. all non-target) distributions.
    b_student = torch.stack([(p_student * gt_mask).sum(1), (p_student * other_mask).sum(1)], dim=1)
    b_teacher = torch.stack([(p_teacher * gt_mask).sum(1), (p_teacher * other_mask).sum(1)], dim=1)
    tckd = F.kl_div(torch.log(b_student), b_teacher, reduction="sum") * temperature**2 / batch

    # Distributions over the non-target classes only.
    log_nt_student = F.log_softmax(student_logits / temperature - _DKD_MASK_OFFSET * gt_mask, dim=1)
    nt_teacher = F.softmax(teacher_logits / temperature - _DKD_MASK_OFFSET * gt_mask, dim=1)
    nckd = F.kl_div(log_nt_student, nt_teacher, reduction="sum") * temperature**2 / batch
    return alpha * tckd + beta * nckd
