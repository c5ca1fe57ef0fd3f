"""Stage ``teacher-multimodal``: T_x, a classifier over (CLIP image embedding, text embedding) trained
with eq. 6 (docs/method.md §6)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.config import ExperimentConfig
from relaxkd.stages import embed_images, relax, tx_views
from relaxkd.stages.context import Context
from relaxkd.stages.graph import Job, Node, StageRecord, artifact, register
from relaxkd.stages.specs import (
    augmentation_spec,
    clip_spec,
    contiguous,
    data_spec,
    metrics,
    model_info,
    train_spec,
    weights_file_hash,
)


def needs_bank(cfg: ExperimentConfig) -> bool:
    """T_x retrieves from the relaxed bank only when some samples have the ``wn`` text mode."""
    return cfg.multimodal.proportions.get("wn", 0.0) > 0


def inputs(ctx: Context, arg: str | None) -> dict[str, Node]:
    found = {"images": Node(embed_images.STAGE)}
    if needs_bank(ctx.cfg):
        found["bank"] = Node(relax.STAGE)
    if ctx.cfg.multimodal.input == "cached_views":
        found["views"] = Node(tx_views.STAGE)
    return found


def spec(job: Job) -> dict[str, Any]:
    ctx, m = job.ctx, job.cfg.multimodal
    bank, views = job.inputs.get("bank"), job.inputs.get("views")
    spec: dict[str, Any] = {
        "images": job.inputs["images"].key,
        "bank": bank.key if bank is not None else None,
        "multimodal": m.model_dump(exclude={"preset"}),
        # a batch without wn text leaves the bank alone (only mixes of wn with other modes can have one)
        **({"bank_idle_without_wn": True} if 0 < m.proportions.get("wn", 0) < 1 else {}),
        "seed": ctx.cfg.seed,
        "train": train_spec(ctx.cfg),
    }
    if m.head == "resnet50-1x1":
        # the authors' 7x7/s2/p3 conv1 (its init scale) and ImageNet's fc kept for 1,000 classes
        spec.update(weights_file_hash(m.weights), head_stem="7x7-s2-p3")
    if views is not None:
        spec["views"] = views.key
    if m.input == "online":
        spec["online"] = {"data": data_spec(ctx), "clip": clip_spec(ctx.cfg), **augmentation_spec(ctx.cfg)}
    return spec


def build(job: Job, out: Path) -> None:
    from relaxkd.engine.trainer import SeededDataModule, build_trainer, fit, seed_everything
    from relaxkd.teachers.text_modes import mode_proportions

    ctx, m = job.ctx, job.cfg.multimodal
    bank = job.inputs.get("bank")
    seed_everything(ctx.cfg.seed)
    emb = load_file(str(job.inputs["images"].file("embeddings.safetensors")))
    bank_tensor = load_file(str(bank.file("bank.safetensors")))["bank"] if bank is not None else None
    module = new_teacher(ctx, emb, bank_tensor)
    init = initialise_head(ctx, module)
    train, val = _training_data(ctx, module, emb, job.inputs.get("views"))
    data = SeededDataModule(train, val, m.optim.batch_size, ctx.cfg.data.num_workers, ctx.cfg.seed)
    work = job.work_dir()
    fit(build_trainer(ctx.cfg.trainer, work, m.optim.epochs), module, data, work)
    module.image_encoder = None
    save_file(contiguous(module.state_dict()), str(out / "model.safetensors"))
    write_json(out / "teacher.json", model_info(ctx, "multimodal", hparams=dict(module.hparams)))
    measured = {
        "measured_train_proportions": mode_proportions(module.train_modes),
        "measured_val_proportions": mode_proportions(module.val_modes),
    }
    record = metrics(ctx.cfg, module, epochs=m.optim.epochs, input=m.input, proportions=m.proportions, **measured,
                     bank=m.bank, text_only=m.text_only, augment=m.augment if m.input == "online" else None,
                     head=m.head, head_init=init)
    write_json(out / "metrics.json", record)


RECORD = register(StageRecord("teacher-multimodal", "the multimodal teacher T_x (CLIP image + text embeddings, eq. 6)",
                              inputs, spec, build, trains=True))
STAGE = RECORD.name


def multimodal_teacher(ctx: Context) -> Artifact:
    return artifact(ctx, Node(STAGE))


def _training_data(ctx: Context, module, emb: dict[str, torch.Tensor], views: Artifact | None = None):
    """T_x's training and validation sets: augmented images through CLIP (online), their embeddings
    recorded once (cached_views) or the clean cached embeddings."""
    from relaxkd.engine.sampling import SeededAugmentation

    if ctx.cfg.multimodal.input == "cached_views":
        epochs = ctx.cfg.multimodal.optim.epochs
        return (tx_views.CachedViews(views.path, emb["train_labels"], "train", epochs),
                tx_views.CachedViews(views.path, emb["val_labels"], "val", epochs))
    if ctx.cfg.multimodal.input == "online":
        from relaxkd.clip.online import OnlineClip
        from relaxkd.data.transforms import CLIP_STATS

        enc = ctx.clip
        module.image_encoder = OnlineClip(enc, CLIP_STATS)
        train = ctx.augmented(ctx.raw_train, ctx.cfg.multimodal.augment, CLIP_STATS, enc.image_size)
        val = ctx.augmented(ctx.raw_val, "clip", CLIP_STATS, enc.image_size)
        return train, val
    seed = ctx.cfg.seed
    return (SeededAugmentation(_EmbeddingSet(emb["train"], emb["train_labels"]), None, seed),
            SeededAugmentation(_EmbeddingSet(emb["val"], emb["val_labels"]), None, seed))


def initialise_head(ctx: Context, module) -> dict[str, Any]:
    """Start T_x's head as the authors do: the resnet50-1x1 head from ImageNet ResNet50 weights (all
    but conv1 and fc) when it can have them; says what happened (metrics.json, the report)."""
    from relaxkd.models import init_head_from_imagenet
    from relaxkd.stages.context import log

    m = ctx.cfg.multimodal
    if m.head != "resnet50-1x1":
        return {"init": "random", "loaded": 0, "note": f"random init ({m.head} head)"}
    init = init_head_from_imagenet(module.head, m.weights)
    log(f"{STAGE}: resnet50-1x1 head: {init['note']}")
    return init


def new_teacher(ctx: Context, emb: dict[str, torch.Tensor], bank: torch.Tensor | None):
    """An untrained T_x for this config: its bank, class-name texts and per-sample text modes set."""
    from relaxkd.teachers import MultimodalTeacher, TxSettings, assign_noise_classes, assign_text_modes

    m = ctx.cfg.multimodal
    num_train, num_val, seed = len(emb["train"]), len(emb["val"]), ctx.cfg.seed
    settings = TxSettings.of(m)
    texts = {split: (assign_text_modes(n, _split_proportions(m.proportions, split, settings.label_noise), seed + offset),
                     assign_noise_classes(n, ctx.num_classes, seed + offset))
             for split, n, offset in (("train", num_train, 0), ("val", num_val, 1))}
    return MultimodalTeacher(
        settings,
        embed_dim=emb["train"].shape[1],
        num_classes=ctx.num_classes,
        bank_size=len(bank) if bank is not None else 0,
        num_train=num_train,
        num_val=num_val,
        class_counts=ctx.class_counts,
        bank=bank,
        class_text=emb["class_text"],
        text_assignment=texts,
    )


def _split_proportions(proportions: dict[str, float], split: str, label_noise: bool) -> dict[str, float]:
    """Label noise relabels training samples only: the released code validates on the clean set,
    each sample with its own class name (the ``noise`` share counts as ``gt`` there)."""
    if not label_noise or split == "train":
        return proportions
    merged = {k: v for k, v in proportions.items() if k != "noise"}
    merged["gt"] = merged.get("gt", 0.0) + proportions["noise"]
    return merged


class _EmbeddingSet(torch.utils.data.Dataset):
    """Cached CLIP embeddings as ``(embedding, label, index)`` items."""

    def __init__(self, embeddings: torch.Tensor, labels: torch.Tensor):
        self.embeddings, self.labels = embeddings, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.embeddings[index].float(), int(self.labels[index]), index
