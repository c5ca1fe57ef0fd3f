"""Stage ``attribute``: Integrated Gradients on T_x's fused input -> the image and text attribution shares
(docs/method.md §9)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.stages.context import Context
from relaxkd.stages.embed_images import embed_images
from relaxkd.stages.multimodal import multimodal_teacher
from relaxkd.stages.specs import provenance
from relaxkd.stages.teacher_loading import load_multimodal

STAGE = "attribute"


def attribute(ctx: Context) -> Artifact:
    tx = multimodal_teacher(ctx)
    images = embed_images(ctx)
    a = ctx.cfg.attribute
    spec = {"teacher": tx.key, "attribute": a.model_dump(), "seed": ctx.cfg.seed}

    def build(out: Path) -> None:
        from relaxkd.attribute import attribution_shares

        module = load_multimodal(ctx, tx)
        emb = load_file(str(images.file("embeddings.safetensors")))
        val, labels = emb["val"].float(), emb["val_labels"].long()
        indices = torch.arange(len(labels))
        if a.num_samples is not None and a.num_samples < len(labels):
            generator = torch.Generator().manual_seed(ctx.cfg.seed)
            indices = torch.randperm(len(labels), generator=generator)[: a.num_samples].sort().values
        with torch.no_grad():
            modes, noise = module.sample_text(indices, "val")
            text = module.text_embeddings(val[indices], labels[indices], modes, noise)
            fused = module.fuse(val[indices], text)
        result = attribution_shares(module, fused, labels[indices], val.shape[1], a.steps, a.batch_size)
        record = {**result, "method": "integrated_gradients", "steps": a.steps, "baseline": "zero", "provenance": provenance(ctx.cfg)}
        write_json(out / "attribution.json", record)

    return ctx.resolve(ctx.store, STAGE, spec, build)
