"""Stage ``relax``: Algorithm 1 (docs/method.md §4) on the image and noun embeddings -> the relaxed bank."""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.stages import embed_images, embed_nouns
from relaxkd.stages.context import Context, log
from relaxkd.stages.graph import Job, Node, StageRecord, artifact, register


def inputs(ctx: Context, arg: str | None) -> dict[str, Node]:
    return {"images": Node(embed_images.STAGE), "nouns": Node(embed_nouns.STAGE)}


def min_clusters(ctx: Context) -> int | None:
    """Unless relax.class_floor is off, k-means never uses fewer clusters than classes (relax_nouns' min_clusters)."""
    return ctx.num_classes if ctx.cfg.relax.class_floor else None


def spec(job: Job) -> dict:
    return {"images": job.inputs["images"].key, "nouns": job.inputs["nouns"].key, "relax": job.cfg.relax.model_dump(),
            "seed": job.cfg.seed, "min_clusters": min_clusters(job.ctx)}


def build(job: Job, out: Path) -> None:
    from relaxkd.relax import format_listing, relax_nouns

    ctx, r, images, nouns = job.ctx, job.cfg.relax, job.inputs["images"], job.inputs["nouns"]
    train = load_file(str(images.file("embeddings.safetensors")))["train"].float()
    noun_emb = load_file(str(nouns.file("embeddings.safetensors")))["embeddings"].float()
    names = nouns.read_json("nouns.json")
    result = relax_nouns(
        train,
        noun_emb,
        num_clusters=r.num_clusters,
        top_k=r.top_k,
        iterations=r.iterations,
        restarts=r.restarts,
        seed=ctx.cfg.seed,
        sample_size=r.sample_size,
        min_clusters=min_clusters(ctx),
        max_points_per_centroid=r.max_points_per_centroid,
    )
    raised = result.info.get("clusters_raised_from")
    if raised is not None:
        how = "relax.num_clusters" if r.num_clusters is not None else f"round({len(train)} images / 300)"
        log(
            f"warning: {how} gives {raised} cluster(s), fewer than the {ctx.num_classes} classes (too few clusters give a "
            f"bank of generic nouns such as entity, abstraction); using {result.info['num_clusters']} clusters (set "
            f"relax.num_clusters "
            f"to at least {ctx.num_classes} to choose, or relax.class_floor=false for round(N / 300) alone)"
        )
    tensors = {
        "bank": result.bank.float(),
        "indices": result.indices.long(),
        "cluster_ids": result.cluster_ids.long(),
        "scores": result.scores.float(),
        "centers": result.centers.float(),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "bank.safetensors"))
    write_json(out / "bank_nouns.json", [names[i] for i in result.indices.tolist()])
    (out / "nouns.txt").write_text(format_listing(result, names))
    write_json(out / "info.json", result.info)


RECORD = register(
    StageRecord("relax", "Algorithm 1: the WordNet-relaxed noun bank and its per-cluster listing", inputs, spec, build)
)
STAGE = RECORD.name


def relax(ctx: Context) -> Artifact:
    return artifact(ctx, Node(STAGE))
