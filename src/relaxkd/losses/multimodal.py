"""Losses of the multimodal teacher T_x (docs/method.md §6, eq. 6)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _mean_one_minus_cos(a: Tensor, b: Tensor) -> Tensor:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.shape[0] == 0:
        return a.new_zeros(())
    return (1.0 - F.cosine_similarity(a, b, dim=1)).mean()


def hierarchical_loss(n_gt: Tensor, n_relaxed: Tensor) -> Tensor:
    """Mean over rows of 1 − cos(n_gt_i, t_i): pulls retrieved text towards the class name.

    Zero for an empty batch (no ``wn`` samples).
    """
    return _mean_one_minus_cos(n_gt, n_relaxed)


def cosine_regularization(bank: Tensor, bank_pretrained: Tensor) -> Tensor:
    """Mean over bank rows of 1 − cos(bank_i, pretrained_i): keeps the learnt bank near CLIP's."""
    return _mean_one_minus_cos(bank, bank_pretrained)


def multimodal_teacher_loss(
    logits: Tensor,
    targets: Tensor,
    n_gt_rows: Tensor,
    t_wn_rows: Tensor,
    bank: Tensor | None,
    bank_pretrained: Tensor | None,
    *,
    lambda_hier: float,
    lambda_cos: float,
) -> dict[str, Tensor]:
    """Eq. 6: CE + λ_hier·hierarchical (``wn`` rows only) + λ_cos·cosine regulariser.

    ``n_gt_rows``/``t_wn_rows`` hold only the ``wn`` samples' class-name and retrieved-text
    embeddings (possibly zero rows). ``bank=None`` (no relaxed bank) gives a zero regulariser.
    The weights' presets (the paper's, the authors' code's) are ``relaxkd.presets.MULTIMODAL_PRESETS``.
    Returns ``loss`` plus the unweighted terms ``ce``, ``hier``, ``cos`` for logging.
    """
    ce = F.cross_entropy(logits, targets)
    hier = hierarchical_loss(n_gt_rows, t_wn_rows).to(ce.dtype)
    if bank is None:
        cos = ce.new_zeros(())
    else:
        cos = cosine_regularization(bank, bank_pretrained).to(ce.dtype)
    loss = ce + lambda_hier * hier + lambda_cos * cos
    return {"loss": loss, "ce": ce, "hier": hier, "cos": cos}
