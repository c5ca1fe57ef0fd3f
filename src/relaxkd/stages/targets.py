"""Stage ``teacher-targets``: every teacher's logits on every epoch's student views, computed once
and replayed by a distillation with ``distill.targets: cached``."""
from __future__ import annotations

from pathlib import Path

from relaxkd.artifacts import Artifact, write_json
from relaxkd.names import TX
from relaxkd.stages.context import Context, device, log
from relaxkd.stages.graph import Job, Node, StageRecord, artifact, register
from relaxkd.stages.specs import views_spec
from relaxkd.stages.teacher_loading import load_teachers, teacher_inputs, teachers_of, teachers_spec


def cache_temperature(d) -> float | None:
    """τ at which a top-k cache keeps the softened mass: the student's method's resolved temperature
    (``DistillConfig.method_params``); None for an exact cache."""
    if not d.cache_top_k:
        return None
    return float(getattr(d.method_params(), "temperature", None) or d.temperature or 4.0)


def inputs(ctx: Context, arg: str | None) -> dict[str, Node]:
    return teacher_inputs(ctx)


def spec(job: Job) -> dict:
    d = job.cfg.distill
    return {
        **views_spec(job.ctx),
        "seed": job.cfg.seed,
        **teachers_spec(job),
        "tx_input": d.tx_input if TX in teachers_of(job) else None,
        "epochs": d.optim.epochs,
        "batch_size": d.optim.batch_size,  # same batches as the student: bit-identical logits
        "top_k": d.cache_top_k,
        # the fill value of a top-k cache preserves the softened mass at this temperature
        "temperature": cache_temperature(d),
    }


def build(job: Job, out: Path) -> None:
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.distill import build_targets

    ctx, d = job.ctx, job.cfg.distill
    teacher_set = load_teachers(ctx, teachers_of(job), job.inputs.get("tx_embeddings"))
    dev = device()
    for module in teacher_set.modules().values():
        module.to(dev)
    data = student_data(ctx)

    def logits(images, targets, indices, split):
        return teacher_set.logits(images, targets, indices, split, IMAGENET_STATS)

    build_targets(
        logits,
        data.train_set,
        data.val_set,
        out=out,
        work=job.work_dir(),
        epochs=d.optim.epochs,
        seed=ctx.cfg.seed,
        batch_size=d.optim.batch_size,
        num_workers=ctx.cfg.data.num_workers,
        top_k=d.cache_top_k,
        temperature=cache_temperature(d) or 1.0,  # unused by an exact cache
        device=dev,
        log=log,
    )
    write_json(out / "targets.json", {"teachers": teacher_set.names, "epochs": d.optim.epochs, "top_k": d.cache_top_k})


RECORD = register(
    StageRecord(
        "teacher-targets", "every teacher's logits on every epoch's student views (distill.targets: cached)", inputs, spec, build
    )
)
STAGE = RECORD.name


def teacher_targets(ctx: Context) -> Artifact:
    return artifact(ctx, Node(STAGE))


def student_data(ctx: Context):
    """The student's seeded views: strong augmentation for training, the test transform for validation."""
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.engine.trainer import SeededDataModule

    d = ctx.cfg.distill
    return SeededDataModule(
        ctx.augmented(ctx.raw_train, "strong", IMAGENET_STATS),
        ctx.augmented(ctx.raw_val, "test", IMAGENET_STATS),
        d.optim.batch_size,
        ctx.cfg.data.num_workers,
        ctx.cfg.seed,
    )
