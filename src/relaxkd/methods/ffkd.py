"""FFKD: reciprocal teacher-student learning by forward and feedback KD (Gou et al., IEEE TMM 2024).

No public code exists; this is a RECONSTRUCTION from the paper's abstract, which states: forward
KD runs offline from the pre-trained teacher to the students, and feedback KD runs online, refining
the teacher from the students' outputs, weighted by a constraint that measures how well the
students understood the teacher. The formulation chosen here (docs/reproduction.md repeats it):

- forward KD (student): ``ce_weight·CE(z_s, y) + kd_weight·τ²·KL(p_t ‖ p_s)``, p = softmax(z/τ),
  the teacher's logits detached (vanilla KD from the pre-trained teacher);
- understanding constraint: ``u_i = exp(-KL(p_t,i ‖ p_s,i))`` ∈ (0, 1], per sample and detached:
  1 when the student reproduces the teacher exactly, → 0 as it fails to;
- feedback KD (teacher, online): ``teacher_ce_weight·CE(z_t, y) + feedback_weight·τ²·mean_i
  u_i·KL(p_s,i ‖ p_t,i)``, the student's logits detached, optimised together with the student (same
  optimiser and schedule, learning rate ``teacher_lr``);
- with several teachers each is refined by its own feedback term and the student's forward term
  averages the per-teacher KD losses; the harness has one student (the paper's "students" plural
  is not reproduced). Teachers keep BatchNorm statistics frozen (eval mode) while their weights
  are refined. ``update_teacher: false`` switches feedback off (forward KD only).

The refined teachers live in the method's state, so checkpoints carry them and resume is exact.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from relaxkd.errors import UserError
from relaxkd.methods.base import KDMethod, LogitParams, MethodContext, Outputs, Step, register_method
from relaxkd.names import TX


class FFKDParams(LogitParams):
    temperature: float = Field(4.0, gt=0)
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0)
    feedback_weight: float = Field(1.0, ge=0)
    teacher_ce_weight: float = Field(1.0, ge=0)
    teacher_lr: float = Field(0.001, gt=0)
    update_teacher: bool = True


def kl_per_sample(target_logits: Tensor, input_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(target/τ) ‖ softmax(input/τ)) per sample."""
    log_p = F.log_softmax(target_logits / temperature, dim=1)
    log_q = F.log_softmax(input_logits / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


def understanding(teacher_logits: Tensor, student_logits: Tensor, temperature: float) -> Tensor:
    """How well the student understood the teacher, per sample: exp(-KL(p_t ‖ p_s)) ∈ (0, 1]."""
    return torch.exp(-kl_per_sample(teacher_logits.detach(), student_logits.detach(), temperature))


def ffkd_losses(student: Tensor, teacher: Tensor, targets: Tensor, p: FFKDParams) -> dict[str, Tensor]:
    """The terms of one teacher-student pair (see the module docstring)."""
    tau = p.temperature
    forward = kl_per_sample(teacher.detach(), student, tau).mean() * tau**2
    out = {"forward": forward}
    if p.update_teacher:
        weight = understanding(teacher, student, tau)
        feedback = (weight * kl_per_sample(student.detach(), teacher, tau)).mean() * tau**2
        out["feedback"] = feedback
        out["teacher_ce"] = F.cross_entropy(teacher, targets)
        out["understanding"] = weight.mean()
    return out


class _Refined(nn.Module):
    """Teachers refined online: trainable weights, BatchNorm statistics kept (always eval mode)."""

    def __init__(self, modules: dict[str, nn.Module], trainable: bool):
        super().__init__()
        self.members = nn.ModuleDict({k: copy.deepcopy(m) for k, m in modules.items()})
        for p in self.parameters():
            p.requires_grad_(trainable)
        self.eval()

    def train(self, mode: bool = True) -> _Refined:
        return super().train(False)


@register_method("ffkd")
class FFKD(KDMethod):
    Params = FFKDParams
    updates_teachers = True

    @classmethod
    def check_teachers(cls, names: list[str]) -> None:
        if TX in names:
            raise UserError("KD method 'ffkd' refines image teachers online; remove tx from distill.teachers")

    def __init__(self, params: FFKDParams, context: MethodContext):
        super().__init__(params, context)
        self.check_teachers(context.teacher_names)
        missing = [n for n in context.teacher_names if n not in context.teacher_modules]
        if missing:
            raise UserError(f"KD method 'ffkd' needs the teachers' models; none given for {', '.join(missing)}")
        self.refined = _Refined({n: context.teacher_modules[n] for n in context.teacher_names}, params.update_teacher)

    def teacher_outputs(self, images: Tensor, step_info: dict[str, Any]) -> dict[str, Outputs]:
        renorm = step_info.get("renormalize")
        x = renorm(images) if renorm is not None else images
        if self.params.update_teacher and step_info.get("split", "train") == "train":
            return {n: Outputs(m(x).float()) for n, m in self.refined.members.items()}
        with torch.no_grad():
            return {n: Outputs(m(x).float()) for n, m in self.refined.members.items()}

    def param_groups(self) -> list[dict[str, Any]]:
        if not self.params.update_teacher:
            return []
        return [{"params": list(self.refined.parameters()), "lr": self.params.teacher_lr}]

    def forward(self, step: Step) -> dict[str, Tensor]:
        p = self.params
        student = step.student.logits
        ce = F.cross_entropy(student, step.targets)
        parts = [ffkd_losses(student, o.logits, step.targets, p) for o in step.teachers.values()]
        forward = torch.stack([t["forward"] for t in parts]).mean()
        loss = p.ce_weight * ce + p.kd_weight * forward
        out = {"ce": ce, "kd": forward}
        if p.update_teacher:
            feedback = torch.stack([t["feedback"] for t in parts]).sum()
            teacher_ce = torch.stack([t["teacher_ce"] for t in parts]).sum()
            loss = loss + p.teacher_ce_weight * teacher_ce + p.feedback_weight * feedback
            out.update(
                feedback=feedback, teacher_ce=teacher_ce,
                understanding=torch.stack([t["understanding"] for t in parts]).mean(),
            )
        out["loss"] = loss
        return out
