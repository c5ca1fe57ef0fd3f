"""Vanilla KD (Hinton et al., 2015) and the paper's crossmodal KD (eqs. 2-3): CE + λ·τ²·KL.

The paper gives no τ or λ; its authors' released scripts (``chenqiguo/CrossmodalKD``,
``script/script_cifar100_*.sh``) use τ = 3 with CE 0.6 / KD 0.4, so that is this method's recipe
(the same values as ``distill.preset=authors_code``, which also averages per-teacher losses).
"""
from __future__ import annotations

from pydantic import Field
from torch import Tensor

from relaxkd.losses.kd import kd_loss
from relaxkd.methods.base import LogitMethod, LogitParams, Step, register_method
from relaxkd.presets import DISTILL_PRESETS

_AUTHORS = DISTILL_PRESETS["authors_code"]


class KDParams(LogitParams):
    temperature: float = Field(_AUTHORS["temperature"], gt=0)
    ce_weight: float = Field(_AUTHORS["ce_weight"], ge=0)
    kd_weight: float = Field(_AUTHORS["kd_weight"], ge=0)


@register_method("kd")
class KD(LogitMethod):
    Params = KDParams

    def kd_term(self, student: Tensor, teacher: Tensor, step: Step) -> Tensor:
        return kd_loss(student, teacher, self.params.temperature)
