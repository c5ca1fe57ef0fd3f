"""Z-score (logit-standardised) KD (Sun et al., CVPR 2024).

Reference: ``sunshangquan/logit-standardization-KD``, ``mdistiller/distillers/KD.py``: student and
teacher logits are each standardised per sample, (z - mean) / (std + 1e-7) with the unbiased std,
before the temperature; loss = CE_WEIGHT·CE + KD_WEIGHT·τ²·KL. Its own recipe (the repository's
CIFAR-100 settings for logit standardisation): τ = 2, CE 0.1, KD 9.
"""
from __future__ import annotations

from pydantic import Field
from torch import Tensor

from relaxkd.losses.kd import kd_loss
from relaxkd.methods.base import LogitMethod, LogitParams, Step, register_method


class ZScoreParams(LogitParams):
    temperature: float = Field(2.0, gt=0)
    ce_weight: float = Field(0.1, ge=0)
    kd_weight: float = Field(9.0, ge=0)


@register_method("zscore")
class ZScoreKD(LogitMethod):
    Params = ZScoreParams

    def kd_term(self, student: Tensor, teacher: Tensor, step: Step) -> Tensor:
        return kd_loss(student, teacher, self.params.temperature, standardize=True)
