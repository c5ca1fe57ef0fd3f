"""LFME: Learning From Multiple Experts (Xiang et al., ECCV 2020), for long-tailed training sets.

Reference: ``xiangly55/LFME`` (``main_LFME.py``, ``run_network_LFME.py``,
``loss/DistillationLoss.py``, ``data/dataloader_LFME.py``, ``config/ImageNet_LT/LFME.py``).
Experts are trained on the many-, medium- and few-shot class subsets (the ``teacher-expert``
stages; > 100, 20-100, < 20 training images); then one student learns from all of them:

- distillation from expert k on its classes ``S_k``: ``KL(softmax(e_k/T) ‖ softmax(z[:, S_k]/T))``
  summed over classes and averaged over the batch (``F.kl_div`` with its default element mean,
  times ``len(S_k)``), no τ² factor, T = 2, over every sample of the batch;
- self-paced expert selection: weight 1 while the student's validation accuracy on the subset is
  below ``decay_thresh`` (0.3) × the expert's, then ``max((acc_e - acc_s) / acc_e / (1 - thresh), 0)``:
  an expert's weight falls to 0 as the student catches up with it (updated after every epoch);
- curriculum instance selection: a sample's difficulty is its subset expert's softmax probability
  of the true class on the clean image, min-max scaled within each class to [m_c, 1] with m_c = 1
  for few-shot classes and (mean shots of the few-shot subset) / (mean shots of c's subset) for
  the others; at (1-based) epoch e the student's logits are multiplied by
  ``w_i(e) = (1 - w_i) / (E/2) · e + w_i`` (E = total epochs), easy samples first, hard ones
  fading in (the reference does not clip w above 1 after E/2 epochs, nor does this);
- loss = ce_weight·CE(w⊙z, y) + kd_weight·Σ_k weight_k·KD_k(w⊙z).

Deviations, recorded in docs/reproduction.md: the harness's seeded random sampler replaces the
reference's class-aware ``CurricSampler`` (4 samples per class), which keeps resume, DDP and cached
targets exact; m_c uses the dataset's mean shots, not ImageNet-LT's rounded 12/53/230; a class
whose samples are all equally hard gets weight 1 (the reference divides by zero).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from relaxkd.engine import optim
from relaxkd.engine.evaluation import ClassifierModule
from relaxkd.engine.metrics import FEW_SHOT, MANY_SHOT
from relaxkd.engine.settings import OptimConfig
from relaxkd.errors import UserError
from relaxkd.methods.base import KDMethod, LogitParams, MethodContext, Step, register_method
from relaxkd.models import build_backbone
from relaxkd.names import EXPERT_STAGE, EXPERT_TEACHERS, SHOT_GROUPS

#: subset name -> (teacher name, validation metric of the student)
#: shot group -> (its expert teacher's name, its accuracy's metric name)
SUBSETS = {group: (expert, f"{group}_shot") for group, expert in zip(SHOT_GROUPS, EXPERT_TEACHERS)}


class LFMEParams(LogitParams):
    temperature: float = Field(2.0, gt=0)
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0)
    decay_thresh: float = Field(0.3, ge=0, lt=1)
    #: curriculum instance weighting on the student's logits (the reference's ``Linear`` schedule)
    curriculum: bool = True
    schedule: Literal["linear"] = "linear"


def self_paced_weight(student_acc: Tensor, expert_acc: Tensor, decay_thresh: float) -> Tensor:
    """``run_network_LFME.get_distill_loss_weight`` on tensors (accuracies in the same unit)."""
    gap = (expert_acc - student_acc) / expert_acc.clamp_min(1e-12) / (1 - decay_thresh)
    return torch.where(student_acc < expert_acc * decay_thresh, torch.ones_like(gap), gap.clamp_min(0.0))


def instance_schedule(init_weight: Tensor, epoch: int, total_epochs: int) -> Tensor:
    """``instance_weight_scheduler`` (Linear) at 1-based ``epoch``: (1 - w) / (E/2) · e + w."""
    half = total_epochs / 2
    return (1 - init_weight) / half * epoch + init_weight


def scale_instance_weights(hardness: Tensor, labels: Tensor, subset_of_class: list[str], class_counts: list[int]) -> Tensor:
    """Per class, min-max scale to [m_c, 1] (``set_scale_classwise_instance_weight_with_shot``)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    mean_shots = {}
    for name in SUBSETS:
        members = [c for c, s in enumerate(subset_of_class) if s == name]
        mean_shots[name] = counts[members].mean().item() if members else math.nan
    out = torch.ones_like(hardness, dtype=torch.float64)
    for c, subset in enumerate(subset_of_class):
        idx = (labels == c).nonzero().flatten()
        if len(idx) == 0:
            continue
        floor = 1.0 if subset == "few" else mean_shots["few"] / mean_shots[subset]
        if math.isnan(floor):
            floor = 1.0
        h = hardness[idx].double()
        span = h.max() - h.min()
        out[idx] = ((h - h.min()) / span * (1 - floor) + floor) if span > 0 else torch.ones_like(h)
    return out.float()


@register_method("lfme")
class LFME(KDMethod):
    Params = LFMEParams
    long_tailed_only = True
    state_from = EXPERT_STAGE  # the experts' classes, accuracies and curriculum weights

    @classmethod
    def check_teachers(cls, names: list[str]) -> None:
        if not names or any(n not in EXPERT_TEACHERS for n in names):
            raise UserError(
                f"KD method 'lfme' distils from its subset experts; set distill.teachers=[{', '.join(EXPERT_TEACHERS)}] "
                f"(got [{', '.join(names)}])"
            )

    def __init__(self, params: LFMEParams, context: MethodContext):
        super().__init__(params, context)
        names = context.teacher_names
        self.check_teachers(names)
        info = context.extra.get("lfme")
        if info is None:
            raise UserError("KD method 'lfme' needs its experts' statistics (the pipeline's teacher-expert stages)")
        self.subsets = [s for s, (t, _) in SUBSETS.items() if t in names]
        for s in self.subsets:
            self.register_buffer(f"classes_{s}", torch.as_tensor(info["classes"][s], dtype=torch.long), persistent=False)
        self.register_buffer("expert_acc", torch.tensor([float(info["accuracy"][s]) for s in self.subsets]))
        self.register_buffer("student_acc", torch.zeros(len(self.subsets)))
        weights = info.get("instance_weights")
        self.register_buffer(
            "instance_weights", torch.as_tensor(weights, dtype=torch.float32) if weights is not None else torch.ones(0),
            persistent=False,
        )

    def expert_weights(self) -> Tensor:
        return self_paced_weight(self.student_acc, self.expert_acc, self.params.decay_thresh)

    def forward(self, step: Step) -> dict[str, Tensor]:
        p = self.params
        z = step.student.logits
        if p.curriculum and self.instance_weights.numel():
            w0 = self.instance_weights[step.indices]
            z = z * instance_schedule(w0, step.epoch + 1, self.context.total_epochs).unsqueeze(-1)
        ce = F.cross_entropy(z, step.targets)
        weights = self.expert_weights()
        terms = []
        for subset in self.subsets:
            cols = getattr(self, f"classes_{subset}")
            expert = step.teachers[SUBSETS[subset][0]].logits[:, cols]
            log_s = F.log_softmax(z[:, cols] / p.temperature, dim=1)
            p_e = F.softmax(expert / p.temperature, dim=1)
            terms.append(F.kl_div(log_s, p_e, reduction="sum") / z.shape[0])
        kd_each = torch.stack(terms)
        kd = (weights * kd_each).sum()
        out = {"loss": p.ce_weight * ce + p.kd_weight * kd, "ce": ce, "kd": kd}
        for k, subset in enumerate(self.subsets):
            out[f"weight_{subset}"] = weights[k]
        return out

    def on_validation_metrics(self, metrics: dict[str, float]) -> None:
        values = [metrics.get(SUBSETS[s][1], math.nan) for s in self.subsets]
        self.student_acc.copy_(torch.tensor([0.0 if math.isnan(v) else v for v in values]))

    def epoch_metrics(self) -> dict[str, float]:
        return {f"expert_weight_{s}": w for s, w in zip(self.subsets, self.expert_weights().tolist())}


# -- the experts ------------------------------------------------------------------------------------


def shot_subsets(class_counts: list[int]) -> dict[str, list[int]]:
    """Classes of the many (> 100 training images), medium (20-100) and few (< 20) -shot subsets."""
    return {
        "many": [c for c, n in enumerate(class_counts) if n > MANY_SHOT],
        "medium": [c for c, n in enumerate(class_counts) if FEW_SHOT <= n <= MANY_SHOT],
        "few": [c for c, n in enumerate(class_counts) if n < FEW_SHOT],
    }


class ClassSubset(torch.utils.data.Dataset):
    """The samples of ``base`` whose label is in ``classes``, as ``(image, label, local index)``."""

    def __init__(self, base, classes: list[int]):
        wanted = set(classes)
        targets = list(base.targets)
        self.base = base
        self.indices = [i for i, y in enumerate(targets) if y in wanted]
        self.targets = [targets[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label, _ = self.base[self.indices[i]]
        return image, label, i


def _expert_module_base():
    return ClassifierModule


class SubsetExpert(_expert_module_base()):
    """An expert of one class subset: a backbone with the full classifier width, trained with
    cross-entropy over its subset's classes only (the reference's expert has a classifier of the
    subset's size; here its other outputs are unused), so it slots in as an ordinary teacher."""

    def __init__(self, arch: str, num_classes: int, classes: list[int], optim_cfg: dict, weights: str = "none"):
        super().__init__(None)

        self.save_hyperparameters()
        self.optim_cfg = OptimConfig.model_validate(optim_cfg)
        self.model = build_backbone(arch, num_classes, weights)
        position = torch.full((num_classes,), -1, dtype=torch.long)
        position[torch.as_tensor(classes)] = torch.arange(len(classes))
        self.register_buffer("classes", torch.as_tensor(classes, dtype=torch.long), persistent=False)
        self.register_buffer("position", position, persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def training_step(self, batch, batch_idx):
        images, targets, _ = batch
        loss = F.cross_entropy(self(images)[:, self.classes], self.position[targets])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, targets, indices = batch
        self.store_validation(self(images)[:, self.classes], self.position[targets], indices)

    def configure_optimizers(self):
        return optim.configure([{"params": self.parameters()}], self.optim_cfg)


@torch.no_grad()
def instance_hardness(
    experts: dict[str, torch.nn.Module], subsets: dict[str, list[int]], loader, num_classes: int, device
) -> tuple[Tensor, Tensor]:
    """Each training sample's subset expert's softmax probability of its true class (clean images),
    and the labels (``eval_instance_hardness`` / ``concat_distill_outputs``)."""
    subset_of = torch.full((num_classes,), -1, dtype=torch.long)
    names = list(subsets)
    for k, name in enumerate(names):
        subset_of[torch.as_tensor(subsets[name], dtype=torch.long)] = k
    n = len(loader.dataset)
    hardness, labels = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.long)
    for images, targets, indices in loader:
        images = images.to(device)
        probs = torch.zeros(len(targets), dtype=torch.float64)
        for k, name in enumerate(names):
            chosen = subset_of[targets] == k
            if not chosen.any():
                continue
            cols = torch.as_tensor(subsets[name], dtype=torch.long)
            p = F.softmax(experts[name](images[chosen.to(device)]).float().cpu()[:, cols], dim=1)
            position = {c: i for i, c in enumerate(subsets[name])}
            rows = torch.as_tensor([position[int(y)] for y in targets[chosen]])
            probs[chosen] = p[torch.arange(len(rows)), rows].double()
        hardness[indices] = probs
        labels[indices] = targets
    return hardness, labels
