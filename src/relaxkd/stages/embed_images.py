"""Stage ``embed-images``: CLIP image embeddings of the training and validation sets, and of the class names."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.stages.context import Context
from relaxkd.stages.specs import clip_spec, data_spec

STAGE = "embed-images"


def embed_images(ctx: Context) -> Artifact:
    spec = {"data": data_spec(ctx.cfg), "clip": clip_spec(ctx.cfg)}

    def build(out: Path) -> None:
        from relaxkd.engine.sampling import SeededAugmentation

        synsets = ctx.synsets  # a class missing from WordNet fails before minutes of encoding
        enc = ctx.clip
        tensors: dict[str, torch.Tensor] = {}
        for split, raw in (("train", ctx.raw_train), ("val", ctx.raw_val)):
            data = SeededAugmentation(raw, enc.preprocess_transform(), ctx.cfg.seed)
            emb, labels, _ = enc.encode_dataset(data, batch_size=ctx.cfg.clip.batch_size, num_workers=ctx.cfg.data.num_workers)
            tensors[split] = emb.half().contiguous()
            tensors[f"{split}_labels"] = labels.long().contiguous()
        tensors["class_text"] = enc.embed_words(ctx.classes).float().contiguous()
        save_file(tensors, str(out / "embeddings.safetensors"))
        write_json(out / "classes.json", {"classes": ctx.classes, "synsets": synsets})

    return ctx.resolve(ctx.store, STAGE, spec, build)
