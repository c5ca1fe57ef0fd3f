"""No distillation: the student trains on cross-entropy alone (Table 1's "no KD" row)."""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from relaxkd.methods.base import KDMethod, MethodParams, Step, register_method


class NoKDParams(MethodParams):
    ce_weight: float = Field(1.0, ge=0)


@register_method("none")
class NoKD(KDMethod):
    Params = NoKDParams
    needs_teachers = False

    def forward(self, step: Step) -> dict[str, Tensor]:
        ce = F.cross_entropy(step.student.logits, step.targets)
        return {"loss": self.params.ce_weight * ce, "ce": ce, "kd": ce.new_zeros(())}
