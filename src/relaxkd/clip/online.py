"""CLIP image embeddings of image batches that were normalised for another model (online T_x)."""
from __future__ import annotations

import torch

from relaxkd.data.transforms import CLIP_STATS, Stats, renormalize

#: how a batch of another size reaches CLIP's input size: ``ClipEncoder.encode_images``'s one
#: resize (bicubic, antialiased). Part of the key of every artifact an online CLIP feeds.
RESIZE = "bicubic-antialias"


class OnlineClip:
    """CLIP image embeddings of a batch normalised with another model's statistics."""

    def __init__(self, encoder, input_stats: Stats):
        self.encoder, self.input_stats = encoder, input_stats
        self._device: torch.device | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self._device != images.device:
            self.encoder.to(images.device)
            self._device = images.device
        if self.input_stats != CLIP_STATS:
            images = renormalize(images, self.input_stats, CLIP_STATS)
        return self.encoder.encode_images(images)  # resizes to CLIP's input size itself
