"""Classification metrics, including many/medium/few-shot accuracy for long-tailed data."""
from __future__ import annotations

import torch

#: docs/method.md §10: many > 100 training images, medium 20-100, few < 20.
MANY_SHOT, FEW_SHOT = 100, 20


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1)


def classification_metrics(
    logits: torch.Tensor, targets: torch.Tensor, class_counts: list[int] | None = None
) -> dict[str, float]:
    top1 = topk_correct(logits, targets, 1).float()
    metrics = {
        "top1": 100.0 * top1.mean().item(),
        "top5": 100.0 * topk_correct(logits, targets, 5).float().mean().item(),
        "num_samples": int(targets.numel()),
    }
    if class_counts is not None and is_long_tailed(class_counts):
        counts = torch.as_tensor(class_counts)[targets]
        for name, mask in (
            ("many_shot", counts > MANY_SHOT),
            ("medium_shot", (counts >= FEW_SHOT) & (counts <= MANY_SHOT)),
            ("few_shot", counts < FEW_SHOT),
        ):
            metrics[name] = 100.0 * top1[mask].mean().item() if mask.any() else float("nan")
    return metrics


def is_long_tailed(class_counts: list[int]) -> bool:
    return min(class_counts) > 0 and max(class_counts) / min(class_counts) >= 10
