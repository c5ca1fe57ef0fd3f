"""Stage ``embed-images``: CLIP image embeddings of the training and validation sets, and of the class names."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.stages.context import Context, log
from relaxkd.stages.specs import clip_spec, data_spec

STAGE = "embed-images"


def embed_images(ctx: Context) -> Artifact:
    from relaxkd.clip.templates import WORD_EMBEDDING

    # class_text (the class names' word embeddings) is part of the artifact
    spec = {"data": data_spec(ctx), "clip": clip_spec(ctx.cfg), "word_embedding": WORD_EMBEDDING}

    def build(out: Path) -> None:
        from relaxkd.engine.sampling import SeededAugmentation

        senses = class_senses(ctx)  # a class missing from WordNet fails before minutes of encoding
        synsets = [str(r["synset"]) for r in senses]
        enc = ctx.clip
        tensors: dict[str, torch.Tensor] = {}
        for split, raw in (("train", ctx.raw_train), ("val", ctx.raw_val)):
            data = SeededAugmentation(raw, enc.preprocess_transform(), ctx.cfg.seed)
            emb, labels, _ = enc.encode_dataset(data, batch_size=ctx.cfg.clip.batch_size, num_workers=ctx.cfg.data.num_workers)
            tensors[split] = emb.half().contiguous()
            tensors[f"{split}_labels"] = labels.long().contiguous()
        tensors["class_text"] = enc.embed_words(ctx.classes).float().contiguous()
        save_file(tensors, str(out / "embeddings.safetensors"))
        write_json(out / "classes.json", {
            "classes": ctx.classes,
            "synsets": synsets,
            "glosses": [r["gloss"] for r in senses],
            "senses": [r["senses"] for r in senses],
            "sense_sources": [r["source"] for r in senses],
        })

    return ctx.resolve(ctx.store, STAGE, spec, build)


def class_senses(ctx: Context) -> list[dict]:
    """Each class's WordNet sense with its gloss, printed so a wrong sense is seen before it matters;
    a warning names the override file when a name's sense was WordNet's first of several."""
    from relaxkd.wordnet import ambiguity_warning, describe_class_senses, format_senses, shared_sense_warning

    d = ctx.cfg.data
    raw = ctx.raw_train
    rows = describe_class_senses(ctx.classes, wnids=raw.wnids, overrides=d.synset_overrides, dataset=getattr(raw, "name", None))
    log(f"classes -> WordNet senses ({len(rows)}):")
    for line in format_senses(rows):
        log(f"  {line}")
    suggested = Path(d.root).expanduser() / "synsets.yaml" if d.root else Path("synsets.yaml")
    warning = ambiguity_warning(rows, d.synset_overrides, suggested)
    if warning:
        log(f"warning: {warning}")
    shared = shared_sense_warning(rows)
    if shared:
        log(f"warning: {shared}")
    return rows
