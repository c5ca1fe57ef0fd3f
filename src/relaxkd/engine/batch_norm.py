"""BatchNorm on a training batch that gives a layer one value per channel.

A training set of one more than a multiple of the batch size ends every epoch with a batch of one
sample. The authors' code keeps that batch for T_m, T_x and the student (``DataLoaderCIFAR.py``'s
training loader: its ``drop_last=True`` is commented out), and so does relaxkd in every stage: data
order, batches and cached teacher targets stay the same whatever the set's size. Most layers train on it as on any batch: a
BatchNorm2d over a feature map
larger than 1×1 still has several values per channel. Only a layer that sees a single value per
channel (BatchNorm1d in T_x's MLP head with ``multimodal.batch_norm``, the 1×1 head ``resnet50-1x1``,
a ResNet's last stage on images of 32 px) cannot compute batch statistics, and torch stops with
"Expected more than 1 value per channel when training". For that batch such a layer normalises
with its running statistics, as in evaluation, and leaves them unchanged; every other layer and
batch trains as before, so a run that trained before gives bit-identical results (and keys).
"""
from __future__ import annotations

import torch
from torch.nn.modules.batchnorm import _BatchNorm

_GUARDED = "_relaxkd_single_value_guard"


def guard_single_value_batches(module: torch.nn.Module) -> int:
    """Install the rule above on every BatchNorm layer of ``module`` that keeps running statistics;
    returns how many layers it covers (installing twice changes nothing)."""
    covered = 0
    for layer in module.modules():
        if not isinstance(layer, _BatchNorm) or not layer.track_running_stats:
            continue
        covered += 1
        if getattr(layer, _GUARDED, False):
            continue
        layer.register_forward_pre_hook(_use_running_stats_for_one_value)
        layer.register_forward_hook(_back_to_training)
        setattr(layer, _GUARDED, True)
    return covered


def _use_running_stats_for_one_value(layer: _BatchNorm, args) -> None:
    x = args[0]
    if layer.training and x.dim() >= 2 and x.numel() == x.shape[1]:  # one value per channel
        layer.training = False
        layer._relaxkd_was_training = True


def _back_to_training(layer: _BatchNorm, args, output) -> None:
    if getattr(layer, "_relaxkd_was_training", False):
        layer.training = True
        layer._relaxkd_was_training = False
