"""Stage ``relax``: Algorithm 1 (docs/method.md §4) on the image and noun embeddings -> the relaxed bank."""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.stages.context import Context, log
from relaxkd.stages.embed_images import embed_images
from relaxkd.stages.embed_nouns import embed_nouns

STAGE = "relax"


def relax(ctx: Context) -> Artifact:
    images, nouns = embed_images(ctx), embed_nouns(ctx)
    r = ctx.cfg.relax
    # unless relax.class_floor is off, k-means never uses fewer clusters than classes (relax_nouns' min_clusters)
    min_clusters = ctx.num_classes if r.class_floor else None
    spec = {"images": images.key, "nouns": nouns.key, "relax": r.model_dump(), "seed": ctx.cfg.seed,
            "min_clusters": min_clusters}

    def build(out: Path) -> None:
        from relaxkd.relax import format_listing, relax_nouns

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
            min_clusters=min_clusters,
            max_points_per_centroid=r.max_points_per_centroid,
        )
        raised = result.info.get("clusters_raised_from")
        if raised is not None:
            how = "relax.num_clusters" if r.num_clusters is not None else f"round({len(train)} images / 300)"
            log(f"warning: {how} gives {raised} cluster(s), fewer than the {ctx.num_classes} classes (too few clusters give a "
                f"bank of generic nouns such as entity, abstraction); using {result.info['num_clusters']} clusters (set relax.num_clusters "
                f"to at least {ctx.num_classes} to choose, or relax.class_floor=false for round(N / 300) alone)")
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

    return ctx.resolve(ctx.store, STAGE, spec, build)
