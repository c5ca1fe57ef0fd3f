"""The relaxed text bank of T_x: learnable unit-norm noun embeddings with a frozen CLIP copy."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TextBank(nn.Module):
    """``embeddings`` (``[K, d]`` parameter, trained unless ``learnable=False``) and ``pretrained``
    (frozen buffer, the initial embeddings used by the cosine regulariser); both are saved.

    Rows are L2-normalised on construction; call :meth:`renormalize_` after every optimiser step.
    To load a saved bank, construct one of the same shape (e.g. ``torch.zeros(K, d)``) first.
    """

    def __init__(self, embeddings: Tensor, learnable: bool = True):
        super().__init__()
        if embeddings.dim() != 2:
            raise ValueError(f"text bank embeddings must be [K, d], got shape {tuple(embeddings.shape)}")
        initial = F.normalize(embeddings.detach().float(), dim=1)
        self.embeddings = nn.Parameter(initial.clone(), requires_grad=learnable)
        self.register_buffer("pretrained", initial.clone())

    @property
    def learnable(self) -> bool:
        return self.embeddings.requires_grad

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @torch.no_grad()
    def renormalize_(self) -> None:
        self.embeddings.copy_(F.normalize(self.embeddings, dim=1))
