"""The frozen teachers of one distillation and how they turn a batch into logits.

Teachers run online (every augmented batch goes through every teacher) or, with cached targets,
not at all: their logits for every (epoch, sample) were computed once by the teacher-targets stage
and are replayed (see targets.py). Both paths go through ``TeacherSet.logits``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from relaxkd.data.transforms import Stats, renormalize
from relaxkd.errors import UserError
from relaxkd.methods import FeatureTap, Outputs
from relaxkd.models import TeacherEnsemble
from relaxkd.names import TX
from relaxkd.teachers.multimodal import MultimodalTeacher

if TYPE_CHECKING:
    from relaxkd.distill.targets import CachedTargets



@dataclass
class TeacherSet:
    """Frozen teachers of one distillation: image teachers and optionally T_x."""

    names: list[str]
    image_teachers: TeacherEnsemble | None = None
    image_stats: Stats | None = None
    multimodal: MultimodalTeacher | None = None
    #: online T_x: images (student statistics) -> CLIP image embeddings
    clip_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: cached T_x: clean-image CLIP embeddings of the training / validation sets, by index
    cached_embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    #: cached teacher targets: no teacher runs, their recorded logits are replayed
    cached: CachedTargets | None = None
    #: the image teachers' own models by name (unfused): for named features and for methods that
    #: refine their teachers (these get copies)
    members: dict[str, torch.nn.Module] = field(default_factory=dict)

    @property
    def multimodal_index(self) -> int | None:
        return self.names.index(TX) if TX in self.names else None

    def modules(self, include_members: bool = False) -> dict[str, torch.nn.Module]:
        """The teachers' modules (none when targets are cached), to move them with the student;
        ``include_members``: also the unfused image models (for named teacher features)."""
        found: dict[str, torch.nn.Module] = {}
        if include_members:
            found.update({f"member_{n}": m for n, m in self.members.items()})
        if self.image_teachers is not None:
            found["image"] = self.image_teachers
        if self.multimodal is not None:
            found[TX] = self.multimodal
        return found

    def outputs(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor,
        split: str,
        input_stats: Stats | None,
        epoch: int = 0,
        features: tuple[str, ...] = (),
    ) -> dict[str, Outputs]:
        """Each teacher's :class:`~relaxkd.methods.Outputs` by name; named features on request."""
        if not features:
            return {n: Outputs(z) for n, z in zip(self.names, self.logits(images, targets, indices, split, input_stats, epoch))}
        if self.cached is not None:
            raise UserError("cached teacher targets hold logits only; a method that needs teacher features runs them online")
        if self.multimodal is not None:
            raise UserError("teacher features are available from image teachers only; remove tx from distill.teachers")
        return self._member_outputs(images, input_stats, features)

    @torch.inference_mode()
    def _member_outputs(self, images, input_stats, features) -> dict[str, Outputs]:
        x = images if self.image_stats == input_stats else renormalize(images, input_stats, self.image_stats)
        out = {}
        for name in self.names:
            model = self.members[name]
            tap = FeatureTap(model, features)
            try:
                logits = model(x).float().clone()
                found = {k: v.clone() for k, v in tap.collect().items()}
            finally:
                tap.remove()
            out[name] = Outputs(logits, found)
        return out

    def _embeddings(self, split: str, device: torch.device) -> torch.Tensor:
        """The split's cached CLIP embeddings where the indices live, copied there once (a gather
        on the device, no per-step host sync)."""
        table = self.cached_embeddings[split]
        if table.device != device:
            table = self.cached_embeddings[split] = table.to(device)
        return table

    @torch.inference_mode()
    def logits(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor,
        split: str,
        input_stats: Stats | None,
        epoch: int = 0,
    ) -> list[torch.Tensor]:
        """One ``[B, C]`` logit tensor per teacher, in ``names`` order, for an augmented batch.

        ``images`` are normalised with ``input_stats``; each teacher gets them re-normalised to its
        own statistics. ``epoch`` selects the recorded targets when they are cached.
        """
        if self.cached is not None:
            out = self.cached.logits(split, epoch, indices)
            return [t.to(images.device) for t in out]
        out = []
        if self.image_teachers is not None:
            x = images if self.image_stats == input_stats else renormalize(images, input_stats, self.image_stats)
            out.extend(self.image_teachers(x).float().unbind(0))
        if self.multimodal is not None:
            if self.clip_encoder is not None:
                emb = self.clip_encoder(images).float()
            else:
                emb = self._embeddings(split, indices.device)[indices].to(images.device).float()
            out.append(self.multimodal.logits(emb, targets, indices, split).float())
        # leave inference mode: these enter the student's autograd graph as constants
        return [t.clone() for t in out]
