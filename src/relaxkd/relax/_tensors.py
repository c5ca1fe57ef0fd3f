"""Input checks shared by the Algorithm 1 functions (tensor or numpy in, torch tensor out)."""
from __future__ import annotations

import numpy as np
import torch

from relaxkd.errors import UserError

# Rows whose norm is this close to 1 count as already L2-normalised (no copy is made).
UNIT_NORM_TOLERANCE = 1e-3


def as_matrix(values, name: str) -> torch.Tensor:
    """Returns ``values`` as a 2-D floating torch tensor, sharing memory where possible."""
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(values)
    if not isinstance(values, torch.Tensor):
        raise UserError(f"{name} must be a torch tensor or numpy array, got {type(values).__name__}")
    if values.ndim != 2:
        raise UserError(f"{name} must be a 2-D [count, dim] matrix, got shape {tuple(values.shape)}")
    if not values.is_floating_point():
        values = values.float()
    return values


def require_rows(values: torch.Tensor, name: str, hint: str = "") -> None:
    if values.shape[0] == 0:
        raise UserError(f"{name} is empty{'; ' + hint if hint else ''}")


def require_same_dim(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise UserError(
            f"{a_name} have dimension {a.shape[1]} but {b_name} have dimension {b.shape[1]};"
            " both must come from the same CLIP model"
        )


def unit_rows(values: torch.Tensor) -> torch.Tensor:
    """L2-normalises the rows, returning ``values`` itself when they already are unit-norm.

    Skipping the copy matters at ImageNet scale, where the embeddings alone take 2.6 GB.
    """
    norms = torch.linalg.vector_norm(values, dim=1)
    if norms.numel() == 0 or float((norms - 1).abs().max()) <= UNIT_NORM_TOLERANCE:
        return values
    return values / norms.clamp_min(1e-12).unsqueeze(1)
