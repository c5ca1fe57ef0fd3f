"""Decoupled KD (Zhao et al., CVPR 2022) with its reference recipe.

Reference: ``megvii-research/mdistiller``, ``mdistiller/distillers/DKD.py``: loss =
CE_WEIGHT·CE + min(epoch / WARMUP, 1)·(α·TCKD + β·NCKD), epochs counted from 1 as mdistiller's
trainer does (``mdistiller/engine/trainer.py``); defaults CE 1, α 1, β 8, τ 4, warm-up 20 epochs.
"""
from __future__ import annotations

from pydantic import Field
from torch import Tensor

from relaxkd.losses.kd import dkd_loss
from relaxkd.methods.base import LogitMethod, LogitParams, Step, register_method


class DKDParams(LogitParams):
    temperature: float = Field(4.0, gt=0)
    ce_weight: float = Field(1.0, ge=0)
    #: DKD has no separate KD weight (α and β weigh its two parts); kept for the shared interface
    kd_weight: float = Field(1.0, ge=0)
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(8.0, ge=0)
    #: the DKD term is scaled by min(epoch / warmup_epochs, 1); 0 disables the warm-up
    warmup_epochs: int = Field(20, ge=0)


def dkd_warmup(epoch: int, warmup_epochs: int) -> float:
    """mdistiller's factor for 0-based ``epoch``: min((epoch + 1) / warmup, 1)."""
    return 1.0 if warmup_epochs == 0 else min((epoch + 1) / warmup_epochs, 1.0)


@register_method("dkd")
class DKD(LogitMethod):
    Params = DKDParams

    def kd_term(self, student: Tensor, teacher: Tensor, step: Step) -> Tensor:
        p = self.params
        return dkd_loss(student, teacher, step.targets, alpha=p.alpha, beta=p.beta, temperature=p.temperature)

    def kd_factor(self, step: Step) -> float:
        return dkd_warmup(step.epoch, self.params.warmup_epochs)
