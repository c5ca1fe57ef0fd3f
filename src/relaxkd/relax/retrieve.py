"""Soft retrieval of a text embedding from the relaxed bank (the ``wn`` text mode, docs/method.md §5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from relaxkd.errors import UserError
from relaxkd.presets import RETRIEVAL_TEMPERATURE
from relaxkd.relax._tensors import as_matrix, require_rows, require_same_dim

DEFAULT_TEMPERATURE = RETRIEVAL_TEMPERATURE


def retrieve(image_embeddings, bank, temperature: float = DEFAULT_TEMPERATURE, chunk_size: int | None = None) -> torch.Tensor:
    """``normalise(softmax(v · bank^T / temperature) · bank)`` for every image embedding ``v``.

    Differentiable with respect to ``bank`` (and ``image_embeddings``): the multimodal teacher
    trains the bank through this. Runs in at least float32 with autocast off, because at
    temperature 0.005 the logits reach ±200 and half-precision rounding would reshuffle the
    softmax. ``chunk_size`` bounds memory to ``chunk_size × bank size`` when embedding a whole
    dataset at once. Returns ``[N, d]`` unit-norm rows.
    """
    if not temperature > 0:
        raise UserError(f"retrieval temperature must be positive, got {temperature}")
    images = as_matrix(image_embeddings, "image embeddings")
    bank = as_matrix(bank, "relaxed bank")
    require_rows(bank, "relaxed bank", "Algorithm 1 kept no nouns")
    require_same_dim(images, "image embeddings", bank, "relaxed bank")
    if chunk_size is not None and chunk_size < 1:
        raise UserError(f"retrieval chunk_size must be at least 1, got {chunk_size}")

    dtype = torch.promote_types(torch.promote_types(images.dtype, bank.dtype), torch.float32)
    with torch.autocast(device_type=bank.device.type, enabled=False):
        bank = bank.to(dtype)
        images = images.to(device=bank.device, dtype=dtype)
        step = chunk_size or max(1, images.shape[0])
        parts = [_retrieve_block(images[start : start + step], bank, temperature) for start in range(0, images.shape[0], step)]
    if not parts:
        return images.new_zeros((0, bank.shape[1]))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _retrieve_block(images: torch.Tensor, bank: torch.Tensor, temperature: float) -> torch.Tensor:
    weights = torch.softmax(images @ bank.T / temperature, dim=1)
    return F.normalize(weights @ bank, dim=1)
