"""SGD (or AdamW, ``optim.optimizer``) and the authors' learning-rate schedules, stepped once per epoch.

``optim.optimizer=adamw`` builds ``torch.optim.AdamW`` with ``lr`` and ``weight_decay`` (torch's
betas 0.9/0.999, ``momentum`` unused): the fine-tuning optimiser of DMAE's ``main_finetune.py``.

Three schedules (``optim.schedule``), each a formula of the epoch ``e``:

- ``step`` (the authors' ``LambdaLR``, ``mainCLIPKD_regularizerV2.py --lr_steps``):
  ``λ(e) = γ^(number of milestones ≤ e) · w(e)`` with the warm-up factor
  ``w(e) = (1 + e) / W`` while ``e < W`` (``W = warmup_epochs``, 8 in the authors' code) and 1
  after. Milestones are absolute epochs counted from 0: the warm-up does not shift them.
- ``cosine`` (the authors' ``CosineAnnealingLR``, ``--lr_CosineAnnealing T_max eta_min``):
  ``min_lr + (lr − min_lr) · (1 + cos(π · e / T_max)) / 2`` with ``T_max = cosine_t_max``
  (default: the number of epochs); past ``T_max`` the curve rises again, as torch's does.
  The authors' cosine runs have no warm-up; ``warmup_epochs`` multiplies by ``w(e)`` if set.
- ``warmup_cosine`` (MAE's and DMAE's ``util/lr_sched.py``, ``adjust_learning_rate``): linear
  warm-up ``lr · e / W`` for ``e < W``, then a half cosine from ``lr`` to ``min_lr`` over the
  remaining ``epochs − W`` epochs.

**The rate each epoch trains at.** The authors call ``scheduler.step()`` at the *start* of every
epoch, so their 0-based epoch ``e`` trains at ``λ(e + 1)`` (the first epoch at 2/8 of the rate,
every decay one epoch before its milestone): for ``step`` and ``cosine`` relaxkd trains epoch
``e`` at exactly that (:func:`trained_factor`). DMAE sets the rate every step at the fractional
epoch ``e + step / steps_per_epoch``; stepped per epoch here, ``warmup_cosine`` trains epoch ``e``
at its formula at the epoch's middle, ``e + 1/2`` (the epoch's mean rate during the warm-up).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from relaxkd.engine.settings import OptimConfig

#: bumped when the rate an epoch trains at changes for the same settings (2: the authors' effective
#: rate, their formula at e + 1); training stages hash it, so older trained artifacts are not reused
SCHEDULE_VERSION = 2


def lr_factor(epoch: float, cfg: OptimConfig) -> float:
    """The schedule's formula: the multiplier of ``cfg.lr`` at (0-based) ``epoch`` (module docstring)."""
    if cfg.schedule == "warmup_cosine":
        if epoch < cfg.warmup_epochs:
            return epoch / cfg.warmup_epochs
        floor = cfg.min_lr / cfg.lr
        progress = (epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1)
        return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * progress)) / 2.0
    if cfg.schedule == "cosine":
        t_max = cfg.cosine_t_max or cfg.epochs
        floor = cfg.min_lr / cfg.lr
        factor = floor + (1.0 - floor) * (1.0 + math.cos(math.pi * epoch / t_max)) / 2.0
    else:
        factor = cfg.gamma ** sum(1 for m in cfg.milestones if m <= epoch)
    if epoch < cfg.warmup_epochs:
        factor *= (1.0 + epoch) / cfg.warmup_epochs
    return factor


def trained_factor(epoch: int, cfg: OptimConfig) -> float:
    """The multiplier 0-based ``epoch`` actually trains at: the authors' λ(epoch + 1) (they step
    their scheduler before each epoch), DMAE's formula at the epoch's middle."""
    return lr_factor(epoch + (0.5 if cfg.schedule == "warmup_cosine" else 1), cfg)


def learning_rate(epoch: int, cfg: OptimConfig) -> float:
    """The learning rate 0-based ``epoch`` trains at."""
    return cfg.lr * trained_factor(epoch, cfg)


def build_optimizer(param_groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """A group may carry ``lr_scale`` (timm's layer-wise decay groups): its rate is ``lr · lr_scale``,
    and the schedule scales it like every other group's."""
    groups = [{k: v for k, v in g.items() if k != "lr_scale"} | ({"lr": cfg.lr * g["lr_scale"]} if "lr_scale" in g else {})
              for g in param_groups]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """``LambdaLR`` with :func:`trained_factor`; every parameter group (e.g. the bank's) follows it."""
    frozen = cfg.model_copy(deep=True)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: trained_factor(epoch, frozen))


def configure(param_groups: Iterable[dict], cfg: OptimConfig) -> dict:
    optimizer = build_optimizer(param_groups, cfg)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": build_scheduler(optimizer, cfg), "interval": "epoch"}}
