"""Stage ``dmae-pretrain``: DMAE's MAE pre-training of the ViT student with feature distillation
from a frozen teacher (relaxkd/methods/dmae.py); the ``distill`` stage then fine-tunes it."""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.errors import UserError
from relaxkd.names import DMAE_PRETRAIN_STAGE, TX
from relaxkd.stages.context import Context
from relaxkd.stages.graph import Job, Node, StageRecord, artifact, register
from relaxkd.stages.specs import check_teacher, metrics, train_spec, views_spec
from relaxkd.stages.teacher_loading import TEACHER, teacher_inputs, teachers_of

#: the fine-tuning parameters, which do not change the pre-training
FINE_TUNING = ("ce_weight", "label_smoothing")


def inputs(ctx: Context, arg: str | None) -> dict[str, Node]:
    """The one image teacher whose features the student's pre-training aligns."""
    teachers = {n: node for n, node in teacher_inputs(ctx).items() if n.startswith(TEACHER)}
    if not teachers:
        raise UserError("KD method 'dmae' distils features from a teacher; list one in distill.teachers")
    if f"{TEACHER}{TX}" in teachers:
        raise UserError("KD method 'dmae' aligns image features; distill.teachers must name an image teacher, not tx")
    name = next(iter(teachers))
    return {name: teachers[name]}


def spec(job: Job) -> dict:
    d = job.cfg.distill
    (teacher,) = teachers_of(job).values()
    return {
        **views_spec(job.ctx),
        "student": d.student,
        "teacher": teacher.key,
        "params": d.method_params().model_dump(exclude=set(FINE_TUNING)),
        "seed": job.cfg.seed,
        "train": train_spec(job.cfg),
    }


def build(job: Job, out: Path) -> None:
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.engine.trainer import SeededDataModule, build_trainer, fit, seed_everything
    from relaxkd.methods.dmae import DMAEPretrainer
    from relaxkd.models import build_backbone

    ctx, d = job.ctx, job.cfg.distill
    params = d.method_params()
    ((teacher_name, artifact_),) = teachers_of(job).items()
    info = check_teacher(ctx, artifact_, teacher_name)
    teacher = build_backbone(info.arch, ctx.num_classes, "none")
    teacher.load_state_dict(load_file(str(artifact_.file("model.safetensors"))))
    seed_everything(ctx.cfg.seed)
    student = build_backbone(d.student, ctx.num_classes, "none")
    module = DMAEPretrainer(student, teacher, params)
    data = SeededDataModule(
        ctx.augmented(ctx.raw_train, "weak", IMAGENET_STATS), None, params.pretrain_batch_size,
        ctx.cfg.data.num_workers, ctx.cfg.seed,
    )
    work = job.work_dir()
    fit(build_trainer(ctx.cfg.trainer, work, params.pretrain_epochs), module, data, work)
    save_file(module.encoder_state(), str(out / "student.safetensors"))
    # the aligned layers sit beside the numbers, not in the provenance (where specs.metrics puts its extras)
    record = {**metrics(ctx.cfg, module), "teacher": teacher_name, "teacher_layer": module.teacher_layer,
              "student_block": module.student_block}
    write_json(out / "metrics.json", record)


def pretrained_student(found: Artifact):
    return load_file(str(found.file("student.safetensors")))


RECORD = register(
    StageRecord(
        DMAE_PRETRAIN_STAGE,
        "DMAE's MAE pre-training of the ViT student, aligned with a teacher's features",
        inputs,
        spec,
        build,
        student_init=pretrained_student,
        trains=True,
    )
)
STAGE = RECORD.name


def dmae_pretrain(ctx: Context) -> Artifact:
    return artifact(ctx, Node(STAGE))
