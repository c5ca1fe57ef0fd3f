"""The student: a ResNet18 from scratch distilled from frozen teachers.

Every teacher sees the same augmented batch, re-normalised to its own input statistics (timm's
distillation task does the same). Teachers are frozen, kept in eval mode, run under
``inference_mode`` and are excluded from checkpoints and gradient synchronisation. With cached
teacher targets (targets.py) no teacher runs: their recorded logits for this epoch's views are replayed.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from relaxkd.config import OptimConfig
from relaxkd.data.transforms import Stats
from relaxkd.distill.teacher_set import TeacherSet
from relaxkd.engine import optim
from relaxkd.engine.evaluation import ClassifierModule
from relaxkd.errors import UserError
from relaxkd.losses import adaptive_teacher_weights, distillation_loss, kd_loss
from relaxkd.losses.distill import AGGREGATORS, KD_METHODS
from relaxkd.models import build_backbone


class _Frozen(nn.Module):
    """Holds teachers so they move with the student but stay frozen and in eval mode."""

    def __init__(self, modules: dict[str, nn.Module]):
        super().__init__()
        self.members = nn.ModuleDict(modules)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "_Frozen":
        return super().train(False)


class StudentDistiller(ClassifierModule):
    def __init__(
        self,
        *,
        arch: str,
        num_classes: int,
        optim_cfg: dict,
        loss: str = "kd",
        aggregate: str = "mean_logits",
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        dkd_alpha: float = 1.0,
        dkd_beta: float = 8.0,
        input_stats: Stats | None = None,
        class_counts: list[int] | None = None,
        teachers: TeacherSet | None = None,
    ):
        super().__init__(class_counts)
        # bad names and a KD method without teachers fail here, not at the first training step
        KD_METHODS.get(loss)
        AGGREGATORS.get(aggregate)
        if loss != "none" and (teachers is None or not teachers.names):
            raise UserError(f"KD method {loss!r} needs teachers; list them in distill.teachers or set distill.loss=none")
        self.save_hyperparameters(ignore=["class_counts", "teachers", "input_stats"])
        self.optim_cfg = OptimConfig.model_validate(optim_cfg)
        self.student = build_backbone(arch, num_classes, "none")
        self.input_stats = input_stats
        self.teacher_set = teachers or TeacherSet(names=[])
        self.teachers = _Frozen(self.teacher_set.modules())
        count = max(1, len(self.teacher_set.names))
        self.register_buffer("teacher_weights", torch.full((count,), 1.0 / count))
        self.strict_loading = False  # teachers are not saved with the student
        self._val_kd: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.student(images)

    # -- teachers ------------------------------------------------------------------------------
    def teacher_logits(self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, split: str) -> list[torch.Tensor]:
        return self.teacher_set.logits(images, targets, indices, split, self.input_stats, epoch=self.current_epoch)

    # -- training ------------------------------------------------------------------------------
    def _loss(self, student_logits, teacher_logits, targets) -> dict[str, torch.Tensor]:
        hp = self.hparams
        return distillation_loss(
            student_logits,
            teacher_logits,
            targets,
            method=hp.loss,
            aggregate=hp.aggregate,
            temperature=hp.temperature,
            ce_weight=hp.ce_weight,
            kd_weight=hp.kd_weight,
            teacher_weights=self.teacher_weights.tolist() if hp.aggregate == "adaptive" else None,
            multimodal_index=self.teacher_set.multimodal_index,
            dkd_alpha=hp.dkd_alpha,
            dkd_beta=hp.dkd_beta,
        )

    def training_step(self, batch, batch_idx):
        images, targets, indices = batch
        teacher_logits = self.teacher_logits(images, targets, indices, "train") if self.hparams.loss != "none" else []
        terms = self._loss(self(images), teacher_logits, targets)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"})
        self.log("train/loss", terms["loss"], prog_bar=True)
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        images, targets, indices = batch
        logits = self(images)
        self.store_validation(logits, targets, indices)
        if self.hparams.aggregate == "adaptive" and self.hparams.loss != "none":
            per_teacher = [
                kd_loss(logits, t, self.hparams.temperature) * len(targets)
                for t in self.teacher_logits(images, targets, indices, "val")
            ]
            self._val_kd.append(torch.stack([p.detach() for p in per_teacher] + [logits.new_tensor(float(len(targets)))]))

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_kd = []

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self._val_kd:
            # adaptive aggregation: next epoch's teacher weights ∝ 1 / validation KD loss
            sums = self.trainer.strategy.reduce(torch.stack(self._val_kd).sum(0), reduce_op="sum")
            val_losses = (sums[:-1] / sums[-1]).tolist()
            self.teacher_weights.copy_(torch.tensor(adaptive_teacher_weights(val_losses)))
            self._val_kd = []

    def extra_epoch_metrics(self) -> dict[str, float]:
        if self.hparams.aggregate != "adaptive":
            return {}
        return {f"weight_{n}": w for n, w in zip(self.teacher_set.names, self.teacher_weights.tolist())}

    def configure_optimizers(self):
        return optim.configure([{"params": self.student.parameters()}], self.optim_cfg)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teachers.")}
