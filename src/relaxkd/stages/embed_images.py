"""Stage ``embed-images``: CLIP image embeddings of the training and validation sets, and of the class names."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.stages.context import Context, log
from relaxkd.stages.graph import Job, Node, StageRecord, artifact, no_inputs, register
from relaxkd.stages.specs import clip_spec, data_spec

#: how a guessed class sense is re-picked with real CLIP weights (part of the artifact key then)
SENSES_BY_IMAGES = "mean image vs lemma+gloss through the templates"


def senses_by_images(ctx: Context) -> bool:
    """Guessed senses are re-picked by the class's images on the user's own folders with real CLIP
    weights (random weights would pick at random; the paper's datasets have curated senses)."""
    return ctx.cfg.clip.weights != "none" and ctx.cfg.data.dataset == "imagefolder"


def spec(job: Job) -> dict:
    from relaxkd.clip.templates import WORD_EMBEDDING

    # class_text (the class names' word embeddings) is part of the artifact
    spec = {"data": data_spec(job.ctx), "clip": clip_spec(job.cfg), "word_embedding": WORD_EMBEDDING}
    if senses_by_images(job.ctx):
        spec["senses"] = SENSES_BY_IMAGES
    return spec


def build(job: Job, out: Path) -> None:
    from relaxkd.engine.sampling import SeededAugmentation

    ctx = job.ctx
    senses = class_senses(ctx)  # a class missing from WordNet fails before minutes of encoding
    synsets = [str(r["synset"]) for r in senses]
    enc = ctx.clip
    tensors: dict[str, torch.Tensor] = {}
    for split, raw in (("train", ctx.raw_train), ("val", ctx.raw_val)):
        data = SeededAugmentation(raw, enc.preprocess_transform(), ctx.cfg.seed)
        emb, labels, _ = enc.encode_dataset(data, batch_size=ctx.cfg.clip.batch_size, num_workers=ctx.cfg.data.num_workers)
        tensors[split] = emb.half().contiguous()
        tensors[f"{split}_labels"] = labels.long().contiguous()
    if senses_by_images(ctx):
        senses = repick_senses(senses, tensors["train"], tensors["train_labels"], enc)
        synsets = [str(r["synset"]) for r in senses]
    tensors["class_text"] = enc.embed_words(ctx.classes).float().contiguous()
    save_file(tensors, str(out / "embeddings.safetensors"))
    write_json(out / "classes.json", {
        "classes": ctx.classes,
        "synsets": synsets,
        "glosses": [r["gloss"] for r in senses],
        "senses": [r["senses"] for r in senses],
        "sense_sources": [r["source"] for r in senses],
        "sense_runner_up": [r.get("runner_up") for r in senses],
        "sense_margin": [r.get("margin") for r in senses],
    })


RECORD = register(StageRecord("embed-images", "CLIP embeddings of the training and validation images and of the class names",
                              no_inputs, spec, build))
STAGE = RECORD.name


def embed_images(ctx: Context) -> Artifact:
    return artifact(ctx, Node(STAGE))


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


def class_synsets(ctx: Context) -> list[str]:
    """The classes' WordNet senses as the run uses them: those this stage re-picked by the class
    images when it does (:func:`senses_by_images`), else the ones the names give."""
    if senses_by_images(ctx):
        return list(embed_images(ctx).read_json("classes.json")["synsets"])
    return ctx.synsets


def repick_senses(rows: list[dict], embeddings: torch.Tensor, labels: torch.Tensor, enc) -> list[dict]:
    """Each guessed sense re-picked by the class's mean image embedding, said with runner-up and margin."""
    from relaxkd.wordnet import format_senses
    from relaxkd.wordnet.synsets import rerank_by_images

    emb = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    means = torch.zeros(len(rows), emb.shape[1]).index_add_(0, labels, emb)
    rows = rerank_by_images(rows, means, lambda texts: enc.embed_words(texts).float().cpu())
    picked = [r for r in rows if r["source"] == "images"]
    if picked:
        log(f"senses re-picked by the class images ({len(picked)}):")
        for line in format_senses(picked, max_alternatives=0):
            if " -> " in line:  # the alternatives were listed above
                log(f"  {line}")
    return rows
