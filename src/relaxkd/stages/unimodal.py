"""Stage ``teacher-unimodal``: one member of the image ensemble T_m (a CNN trained on the images alone)."""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.errors import UserError
from relaxkd.stages.context import Context
from relaxkd.stages.graph import Job, Node, StageRecord, artifact, no_inputs, register
from relaxkd.stages.specs import contiguous, metrics, model_info, train_spec, views_spec, weights_file_hash


def spec(job: Job) -> dict:
    member, u = _member(job.ctx, job.arg), job.cfg.unimodal
    return {
        **views_spec(job.ctx),
        "arch": u.arch,
        "weights": u.weights,
        **weights_file_hash(u.weights),
        "member": member.model_dump(),
        "views_seed": "member",  # the member's seed draws its training views, not the run's seed
        "optim": u.optim.model_dump(),
        "train": train_spec(job.cfg),
    }


def build(job: Job, out: Path) -> None:
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.engine.trainer import SeededDataModule, build_trainer, fit, seed_everything
    from relaxkd.teachers import UnimodalTeacher

    ctx, name, u = job.ctx, job.arg, job.cfg.unimodal
    member = _member(ctx, name)
    seed_everything(member.seed)
    module = UnimodalTeacher(u.arch, ctx.num_classes, u.optim.model_dump(), u.weights, ctx.class_counts)
    data = SeededDataModule(
        # the member's seed draws its views (it is in the key; the run's seed is not)
        ctx.augmented(ctx.raw_train, member.aug, IMAGENET_STATS, seed=member.seed),
        ctx.augmented(ctx.raw_val, "test", IMAGENET_STATS, seed=member.seed),
        u.optim.batch_size,
        ctx.cfg.data.num_workers,
        member.seed,
    )
    work = job.work_dir()
    fit(build_trainer(ctx.cfg.trainer, work, u.optim.epochs), module, data, work)
    save_file(contiguous(module.model.state_dict()), str(out / "model.safetensors"))
    write_json(out / "teacher.json", model_info(ctx, "unimodal", name=name, arch=u.arch, aug=member.aug))
    write_json(out / "metrics.json", metrics(ctx.cfg, module, epochs=u.optim.epochs))


RECORD = register(StageRecord("teacher-unimodal", "a member of the image teacher T_m (unimodal.members)", no_inputs, spec, build,
                              trains=True))
STAGE = RECORD.name


def unimodal_teacher(ctx: Context, name: str) -> Artifact:
    return artifact(ctx, Node(STAGE, name))


def _member(ctx: Context, name: str | None):
    for m in ctx.cfg.unimodal.members:
        if m.name == name:
            return m
    valid = ", ".join(m.name for m in ctx.cfg.unimodal.members)
    raise UserError(f"unknown unimodal teacher {name!r}; valid members: {valid}")
