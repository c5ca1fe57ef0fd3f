"""Integrated Gradients (Captum) on T_x: how much of its decision comes from image vs text."""
from __future__ import annotations

from collections.abc import Callable

import torch
from captum.attr import IntegratedGradients


def attribution_shares(
    forward: Callable[[torch.Tensor], torch.Tensor],
    fused_inputs: torch.Tensor,
    targets: torch.Tensor,
    image_dim: int,
    steps: int = 50,
    batch_size: int = 128,
) -> dict[str, float]:
    """Image share = Σ|attr[:, :d]| / Σ|attr| over all samples (zero baseline, target = label)."""
    ig = IntegratedGradients(forward)
    image_total = torch.zeros((), dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(fused_inputs), batch_size):
        x = fused_inputs[start : start + batch_size].detach().float().requires_grad_(True)
        attr = ig.attribute(x, baselines=torch.zeros_like(x), target=targets[start : start + batch_size], n_steps=steps)
        magnitude = attr.detach().abs().double()
        image_total += magnitude[:, :image_dim].sum()
        total += magnitude.sum()
    image_share = float(image_total / total) if total > 0 else float("nan")
    return {"image_share": image_share, "text_share": 1.0 - image_share, "num_samples": int(len(fused_inputs))}
