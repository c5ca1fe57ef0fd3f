"""Unimodal image teacher T_m: an ImageNet-pretrained ResNet fine-tuned with CE (docs/method.md §7)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from relaxkd.engine import optim
from relaxkd.engine.evaluation import ClassifierModule
from relaxkd.models import build_backbone


class UnimodalTeacher(ClassifierModule):
    def __init__(
        self,
        arch: str,
        num_classes: int,
        optim_cfg: dict,
        weights: str = "none",
        class_counts: list[int] | None = None,
    ):
        super().__init__(class_counts)
        self.save_hyperparameters(ignore=["class_counts"])
        self.optim_cfg = optim.OptimConfig.model_validate(optim_cfg)
        self.model = build_backbone(arch, num_classes, weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch, batch_idx):
        images, targets, _ = batch
        loss = F.cross_entropy(self(images), targets)
        self.log_train({"train/loss": loss})  # no host sync per step on an accelerator
        return loss

    def validation_step(self, batch, batch_idx):
        images, targets, indices = batch
        self.store_validation(self(images), targets, indices)

    def configure_optimizers(self):
        return optim.configure([{"params": self.parameters()}], self.optim_cfg)
