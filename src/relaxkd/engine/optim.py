"""SGD with linear warm-up then step decay (DESIGN §2.10), stepped once per epoch."""
from __future__ import annotations

from typing import Iterable

import torch

from relaxkd.config import OptimConfig


def build_optimizer(param_groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(list(param_groups), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LRScheduler:
    step = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestones, gamma=cfg.gamma)
    if cfg.warmup_epochs == 0:
        return step
    warmup = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1.0 / (cfg.warmup_epochs + 1), total_iters=cfg.warmup_epochs
    )
    # SequentialLR hands over at the end of warm-up; milestones stay counted from epoch 0.
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, step], milestones=[cfg.warmup_epochs])


def configure(param_groups: Iterable[dict], cfg: OptimConfig) -> dict:
    optimizer = build_optimizer(param_groups, cfg)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": build_scheduler(optimizer, cfg), "interval": "epoch"}}
