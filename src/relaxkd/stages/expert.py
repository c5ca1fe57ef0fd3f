"""Stage ``teacher-expert``: an LFME expert, trained on one class subset of a long-tailed training
set (many > 100, medium 20-100, few < 20 training images) with the unimodal teachers' recipe; and
what LFME's distillation reads from its experts (``lfme_state``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.errors import UserError
from relaxkd.names import EXPERT_STAGE
from relaxkd.records import Metrics, read_record
from relaxkd.stages.context import Context, device
from relaxkd.stages.graph import Job, Node, StageRecord, artifact, no_inputs, register
from relaxkd.stages.specs import contiguous, metrics, model_info, train_spec, views_spec, weights_file_hash


def expert_subsets(ctx: Context) -> dict[str, list[int]]:
    from relaxkd.methods.lfme import shot_subsets

    return shot_subsets(ctx.class_counts)


def _classes(ctx: Context, name: str) -> list[int]:
    subset = name.removeprefix("expert_")
    classes = expert_subsets(ctx)[subset]
    if not classes:
        raise UserError(f"teacher {name!r}: the training set has no {subset}-shot classes, so that expert cannot be trained")
    return classes


def spec(job: Job) -> dict:
    u = job.cfg.unimodal
    return {
        **views_spec(job.ctx),
        "arch": u.arch,
        "weights": u.weights,
        **weights_file_hash(u.weights),
        "subset": job.arg.removeprefix("expert_"),
        "classes": _classes(job.ctx, job.arg),
        "seed": job.cfg.seed,
        "optim": u.optim.model_dump(),
        "train": train_spec(job.cfg),
    }


def build(job: Job, out: Path) -> None:
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.engine.trainer import SeededDataModule, build_trainer, fit, seed_everything
    from relaxkd.methods.lfme import ClassSubset, SubsetExpert

    ctx, name, u = job.ctx, job.arg, job.cfg.unimodal
    subset, classes = name.removeprefix("expert_"), _classes(ctx, name)
    seed_everything(ctx.cfg.seed)
    module = SubsetExpert(u.arch, ctx.num_classes, classes, u.optim.model_dump(), u.weights)
    data = SeededDataModule(
        ctx.augmented(ClassSubset(ctx.raw_train, classes), "strong", IMAGENET_STATS),
        ctx.augmented(ClassSubset(ctx.raw_val, classes), "test", IMAGENET_STATS),
        u.optim.batch_size,
        ctx.cfg.data.num_workers,
        ctx.cfg.seed,
    )
    work = job.work_dir()
    fit(build_trainer(ctx.cfg.trainer, work, u.optim.epochs), module, data, work)
    save_file(contiguous(module.model.state_dict()), str(out / "model.safetensors"))
    info = model_info(ctx, "unimodal", name=name, arch=u.arch, aug="strong", subset=subset, subset_classes=classes)
    write_json(out / "teacher.json", info)
    write_json(out / "metrics.json", metrics(ctx.cfg, module, epochs=u.optim.epochs, subset=subset, subset_classes=classes))


def lfme_state(ctx: Context, artifacts: dict[str, Artifact]) -> dict[str, Any]:
    """What LFME needs from its experts: their classes, their validation accuracy on their subset,
    and every training sample's curriculum weight (from the experts' confidence on clean images)."""
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.engine.sampling import EpochAwareSampler
    from relaxkd.methods.lfme import SUBSETS, instance_hardness, scale_instance_weights
    from relaxkd.models import build_backbone
    from relaxkd.stages.specs import check_teacher

    subsets = expert_subsets(ctx)
    experts, accuracy, classes = {}, {}, {}
    dev = device()
    for subset, (name, _) in SUBSETS.items():
        if name not in artifacts:
            continue
        info = check_teacher(ctx, artifacts[name], name)
        model = build_backbone(info.arch, ctx.num_classes, "none")
        model.load_state_dict(load_file(str(artifacts[name].file("model.safetensors"))))
        experts[subset] = model.eval().to(dev)
        accuracy[subset] = float(read_record(Metrics, artifacts[name].file("metrics.json")).top1)
        classes[subset] = subsets[subset]
    data = ctx.augmented(ctx.raw_train, "test", IMAGENET_STATS)
    loader = torch.utils.data.DataLoader(
        data, batch_size=ctx.cfg.distill.optim.batch_size, num_workers=ctx.cfg.data.num_workers,
        sampler=EpochAwareSampler(data, seed=ctx.cfg.seed, shuffle=False),
    )
    hardness, labels = instance_hardness(experts, classes, loader, ctx.num_classes, dev)
    subset_of_class = ["many"] * ctx.num_classes
    for subset, members in subsets.items():
        for c in members:
            subset_of_class[c] = subset
    weights = scale_instance_weights(hardness, labels, subset_of_class, ctx.class_counts)
    return {"lfme": {"classes": classes, "accuracy": accuracy, "instance_weights": weights}}


RECORD = register(
    StageRecord(
        EXPERT_STAGE,
        "an LFME subset expert (expert_many, expert_medium, expert_few)",
        no_inputs,
        spec,
        build,
        method_state=lfme_state,
        trains=True,
    )
)
STAGE = RECORD.name


def expert_teacher(ctx: Context, name: str) -> Artifact:
    """The expert ``name`` (expert_many / expert_medium / expert_few)."""
    return artifact(ctx, Node(STAGE, name))
