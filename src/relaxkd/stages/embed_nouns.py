"""Stage ``embed-nouns``: CLIP text embeddings of the candidate WordNet nouns (in the shared cache store)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.stages.context import Context
from relaxkd.stages.embed_images import class_synsets
from relaxkd.stages.specs import clip_spec

STAGE = "embed-nouns"


def nouns_spec(ctx: Context) -> dict[str, Any]:
    """What determines the candidate list, without building it (a WordNet pass takes seconds)."""
    from relaxkd.wordnet import WORDNET_VERSION

    n = ctx.cfg.nouns
    spec: dict[str, Any] = {"candidates": n.candidates, "wordnet": WORDNET_VERSION, "exclude_class_names": n.exclude_class_names}
    if n.exclude_class_names or n.candidates == "neighbourhood":
        spec["classes"] = ctx.classes
    if n.candidates == "neighbourhood":
        spec.update(synsets=class_synsets(ctx), hypernym_depth=n.hypernym_depth)
    return spec


def embed_nouns(ctx: Context) -> Artifact:
    from relaxkd.clip import TEMPLATES

    from relaxkd.clip.templates import WORD_EMBEDDING

    spec = {"clip": clip_spec(ctx.cfg), "templates": list(TEMPLATES), "word_embedding": WORD_EMBEDDING, "nouns": nouns_spec(ctx)}

    def build(out: Path) -> None:
        from relaxkd.wordnet import candidate_nouns

        n = ctx.cfg.nouns
        nouns = candidate_nouns(
            n.candidates,
            class_synsets=class_synsets(ctx),
            class_names=ctx.classes,
            exclude_class_names=n.exclude_class_names,
            hypernym_depth=n.hypernym_depth,
        )
        emb = ctx.clip.embed_words(nouns).half().contiguous()
        save_file({"embeddings": emb}, str(out / "embeddings.safetensors"))
        write_json(out / "nouns.json", nouns)

    return ctx.resolve(ctx.shared, STAGE, spec, build)
