"""SGD (or AdamW, ``optim.optimizer``) and the authors' learning-rate schedules, stepped once per epoch.

``optim.optimizer=adamw`` builds ``torch.optim.AdamW`` with ``lr`` and ``weight_decay`` (torch's
betas 0.9/0.999, ``momentum`` unused): the fine-tuning optimiser of DMAE's ``main_finetune.py``.

Two schedules (``optim.schedule``), both a function of the 0-based epoch ``e`` alone:

- ``step`` (the authors' ``LambdaLR``, ``mainCLIPKD_regularizerV2.py --lr_steps``):
  ``lr(e) = lr · γ^(number of milestones ≤ e) · w(e)`` with the warm-up factor
  ``w(e) = (1 + e) / W`` while ``e < W`` (``W = warmup_epochs``, 8 in the authors' code) and 1
  after. Milestones are absolute epochs counted from 0: the warm-up does not shift them.
- ``cosine`` (the authors' ``CosineAnnealingLR``, ``--lr_CosineAnnealing T_max eta_min``):
  ``lr(e) = min_lr + (lr − min_lr) · (1 + cos(π · e / T_max)) / 2`` with ``T_max = cosine_t_max``
  (default: the number of epochs); past ``T_max`` the curve rises again, as torch's does.
  The authors' cosine runs have no warm-up; ``warmup_epochs`` multiplies by ``w(e)`` if set.

The authors call ``scheduler.step()`` at the start of every epoch, so their epoch ``e`` actually
trains at ``lr(e + 1)``; relaxkd trains epoch ``e`` at ``lr(e)``, the formula the paper's
protocol describes (docs/reproduction.md).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from relaxkd.engine.settings import OptimConfig


def lr_factor(epoch: int, cfg: OptimConfig) -> float:
    """The multiplier of ``cfg.lr`` for 0-based ``epoch`` (see the module docstring)."""
    if cfg.schedule == "cosine":
        t_max = cfg.cosine_t_max or cfg.epochs
        floor = cfg.min_lr / cfg.lr
        factor = floor + (1.0 - floor) * (1.0 + math.cos(math.pi * epoch / t_max)) / 2.0
    else:
        factor = cfg.gamma ** sum(1 for m in cfg.milestones if m <= epoch)
    if epoch < cfg.warmup_epochs:
        factor *= (1.0 + epoch) / cfg.warmup_epochs
    return factor


def learning_rate(epoch: int, cfg: OptimConfig) -> float:
    """The learning rate of 0-based ``epoch``."""
    return cfg.lr * lr_factor(epoch, cfg)


def build_optimizer(param_groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(list(param_groups), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(list(param_groups), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """``LambdaLR`` with :func:`lr_factor`; every parameter group (e.g. the bank's) follows it."""
    frozen = cfg.model_copy(deep=True)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, frozen))


def configure(param_groups: Iterable[dict], cfg: OptimConfig) -> dict:
    optimizer = build_optimizer(param_groups, cfg)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": build_scheduler(optimizer, cfg), "interval": "epoch"}}
