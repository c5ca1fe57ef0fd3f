"""Stage ``embed-nouns``: CLIP text embeddings of the candidate WordNet nouns (in the shared cache store)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.stages import embed_images
from relaxkd.stages.context import Context
from relaxkd.stages.graph import Job, Node, StageRecord, artifact, register
from relaxkd.stages.specs import clip_spec


def inputs(ctx: Context, arg: str | None) -> dict[str, Node]:
    """The image embeddings when they re-pick the class senses the neighbourhood nouns start from."""
    uses_senses = ctx.cfg.nouns.candidates == "neighbourhood"
    return {"images": Node(embed_images.STAGE)} if uses_senses and embed_images.senses_by_images(ctx) else {}


def nouns_spec(job: Job) -> dict[str, Any]:
    """What determines the candidate list, without building it (a WordNet pass takes seconds)."""
    from relaxkd.wordnet import WORDNET_VERSION

    ctx, n = job.ctx, job.cfg.nouns
    spec: dict[str, Any] = {"candidates": n.candidates, "wordnet": WORDNET_VERSION, "exclude_class_names": n.exclude_class_names}
    if n.exclude_class_names or n.candidates == "neighbourhood":
        spec["classes"] = ctx.classes
    if n.candidates == "neighbourhood":
        # senses re-picked by the images are that artifact's (its key); otherwise the names give them
        senses = {"senses_from": job.inputs["images"].key} if "images" in job.inputs else {"synsets": ctx.synsets}
        spec.update(**senses, hypernym_depth=n.hypernym_depth)
    return spec


def spec(job: Job) -> dict[str, Any]:
    from relaxkd.clip import TEMPLATES
    from relaxkd.clip.templates import WORD_EMBEDDING

    return {"clip": clip_spec(job.cfg), "templates": list(TEMPLATES), "word_embedding": WORD_EMBEDDING, "nouns": nouns_spec(job)}


def build(job: Job, out: Path) -> None:
    from relaxkd.wordnet import candidate_nouns

    ctx, n = job.ctx, job.cfg.nouns
    images = job.inputs.get("images")
    nouns = candidate_nouns(
        n.candidates,
        class_synsets=list(images.read_json("classes.json")["synsets"]) if images is not None else ctx.synsets,
        class_names=ctx.classes,
        exclude_class_names=n.exclude_class_names,
        hypernym_depth=n.hypernym_depth,
    )
    emb = ctx.clip.embed_words(nouns).half().contiguous()
    save_file({"embeddings": emb}, str(out / "embeddings.safetensors"))
    write_json(out / "nouns.json", nouns)


RECORD = register(StageRecord("embed-nouns", "CLIP embeddings of the candidate WordNet nouns (shared by datasets)",
                              inputs, spec, build, shared=True))
STAGE = RECORD.name


def embed_nouns(ctx: Context) -> Artifact:
    return artifact(ctx, Node(STAGE))
