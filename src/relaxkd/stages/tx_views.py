"""Stage ``tx-views``: CLIP embeddings of every epoch's augmented training views for T_x, once.

T_x's faithful input (``multimodal.input: online``, the authors') runs CLIP on every strongly
augmented batch. Views are a pure function of (seed, epoch, index) (engine/sampling.py), so they
can be embedded ahead of time exactly like cached teacher targets (distill/targets.py), and every T_x
trained on the same data, views, CLIP, seed, epochs and batch size (e.g. all trials of Table 2)
replays them: ``multimodal.input: cached_views``. The embeddings equal the online ones (same
batches, same CLIP); the cost moves from every T_x to one pass, and storage is
``epochs × N × d`` float32 (CIFAR-100, 61 epochs: 61 × 50,000 × 512 × 4 B = 6.2 GB).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from relaxkd.artifacts import write_json
from relaxkd.stages.context import device, log
from relaxkd.stages.graph import Job, StageRecord, no_inputs, register
from relaxkd.stages.specs import clip_spec, views_spec


def spec(job: Job) -> dict[str, Any]:
    m = job.cfg.multimodal
    return {
        **views_spec(job.ctx),
        "clip": clip_spec(job.cfg),
        "augment": m.augment,
        "epochs": m.optim.epochs,
        "batch_size": m.optim.batch_size,  # T_x's batches: the same CLIP forward passes as online
        "seed": job.cfg.seed,
    }


def build(job: Job, out: Path) -> None:
    from relaxkd.clip.online import OnlineClip
    from relaxkd.data.transforms import CLIP_STATS
    from relaxkd.distill import build_targets

    ctx, m = job.ctx, job.cfg.multimodal
    enc = ctx.clip
    online = OnlineClip(enc, CLIP_STATS)
    train = ctx.augmented(ctx.raw_train, m.augment, CLIP_STATS, enc.image_size)
    val = ctx.augmented(ctx.raw_val, "clip", CLIP_STATS, enc.image_size)

    def embed(images, targets, indices, split):
        return [online(images).float()]

    build_targets(embed, train, val, out=out, work=job.work_dir(), epochs=m.optim.epochs,
                  seed=ctx.cfg.seed, batch_size=m.optim.batch_size, num_workers=ctx.cfg.data.num_workers,
                  top_k=0, temperature=1.0, device=device(), log=log)
    write_json(out / "views.json", {"epochs": m.optim.epochs, "augment": m.augment, "num_train": len(train),
                                    "num_val": len(val), "dim": enc.embed_dim})


RECORD = register(
    StageRecord(
        "tx-views",
        "CLIP embeddings of every epoch's augmented views for T_x (multimodal.input: cached_views)",
        no_inputs,
        spec,
        build,
    )
)
STAGE = RECORD.name


class CachedViews(Dataset):
    """``(embedding, label, index)`` items from a ``tx-views`` artifact, by the sampler's encoded
    ``epoch * N + index`` (engine/sampling.py): epoch e's item i is the CLIP embedding of the view
    an online run would have drawn for (seed, e, i). ``split="val"`` ignores the epoch."""

    def __init__(self, root: Path, labels: torch.Tensor, split: str, epochs: int):
        from relaxkd.distill.targets import TRAIN_FILE, VAL_FILE

        self.root, self.labels, self.split, self.epochs = Path(root), labels.long(), split, epochs
        self._files = (TRAIN_FILE, VAL_FILE)
        self._epoch: int | None = None
        self._emb: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def _embeddings(self, epoch: int) -> torch.Tensor:
        from relaxkd.errors import UserError

        if self.split == "val":
            epoch = 0
        elif epoch >= self.epochs:
            raise UserError(f"cached T_x views {self.root} cover {self.epochs} epochs, training asked for epoch {epoch + 1}; "
                            "rebuild them with multimodal.optim.epochs set to T_x's epochs")
        if self._epoch != epoch or self._emb is None:
            name = self._files[1] if self.split == "val" else self._files[0].format(epoch=epoch)
            self._emb, self._epoch = load_file(str(self.root / name))["logits"][0], epoch
        return self._emb

    def __getitems__(self, encoded_indices: list[int]) -> list:
        n = len(self.labels)
        items = []
        for encoded in encoded_indices:
            epoch, index = divmod(int(encoded), n)
            items.append((self._embeddings(epoch)[index], int(self.labels[index]), index))
        return items

    def __getitem__(self, encoded: int):
        return self.__getitems__([encoded])[0]
