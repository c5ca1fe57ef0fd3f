"""Stage ``attribute``: Integrated Gradients on T_x's fused input -> the image and text attribution shares
(docs/method.md §9)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.stages import embed_images, multimodal
from relaxkd.stages.context import Context
from relaxkd.stages.graph import Job, Node, StageRecord, artifact, register
from relaxkd.stages.specs import provenance
from relaxkd.stages.teacher_loading import load_multimodal


def inputs(ctx: Context, arg: str | None) -> dict[str, Node]:
    return {"teacher": Node(multimodal.STAGE), "images": Node(embed_images.STAGE)}


def spec(job: Job) -> dict:
    return {"teacher": job.inputs["teacher"].key, "attribute": job.cfg.attribute.model_dump(), "seed": job.cfg.seed}


def build(job: Job, out: Path) -> None:
    from relaxkd.attribute import attribution_shares

    ctx, a = job.ctx, job.cfg.attribute
    module = load_multimodal(ctx, job.inputs["teacher"])
    emb = load_file(str(job.inputs["images"].file("embeddings.safetensors")))
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


RECORD = register(
    StageRecord("attribute", "Integrated Gradients on T_x: the image and text attribution shares", inputs, spec, build)
)
STAGE = RECORD.name


def attribute(ctx: Context) -> Artifact:
    return artifact(ctx, Node(STAGE))
