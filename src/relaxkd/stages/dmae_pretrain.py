"""Stage ``dmae-pretrain``: DMAE's MAE pre-training of the ViT student with feature distillation
from a frozen teacher (relaxkd/methods/dmae.py); the ``distill`` stage then fine-tunes it."""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.errors import UserError
from relaxkd.methods.dmae import PRETRAIN_STAGE
from relaxkd.names import TX
from relaxkd.stages.context import Context
from relaxkd.stages.specs import provenance, train_spec, views_spec
from relaxkd.stages.specs import check_teacher
from relaxkd.stages.teacher_loading import teacher_artifacts

STAGE = PRETRAIN_STAGE
#: the fine-tuning parameters, which do not change the pre-training
FINE_TUNING = ("ce_weight", "label_smoothing")


def dmae_pretrain(ctx: Context) -> Artifact:
    d = ctx.cfg.distill
    params = d.method_params()
    artifacts = teacher_artifacts(ctx)
    if not artifacts:
        raise UserError("KD method 'dmae' distils features from a teacher; list one in distill.teachers")
    if TX in artifacts:
        raise UserError("KD method 'dmae' aligns image features; distill.teachers must name an image teacher, not tx")
    teacher_name = next(iter(artifacts))
    spec = {
        **views_spec(ctx),
        "student": d.student,
        "teacher": artifacts[teacher_name].key,
        "params": params.model_dump(exclude=set(FINE_TUNING)),
        "seed": ctx.cfg.seed,
        "train": train_spec(ctx.cfg),
    }

    def build(out: Path) -> None:
        from relaxkd.data.transforms import IMAGENET_STATS
        from relaxkd.engine.trainer import SeededDataModule, build_trainer, fit, seed_everything
        from relaxkd.methods.dmae import DMAEPretrainer
        from relaxkd.models import build_backbone

        info = check_teacher(ctx, artifacts[teacher_name], teacher_name)
        teacher = build_backbone(info["arch"], ctx.num_classes, "none")
        teacher.load_state_dict(load_file(str(artifacts[teacher_name].file("model.safetensors"))))
        seed_everything(ctx.cfg.seed)
        student = build_backbone(d.student, ctx.num_classes, "none")
        module = DMAEPretrainer(student, teacher, params)
        data = SeededDataModule(
            ctx.augmented(ctx.raw_train, "weak", IMAGENET_STATS), None, params.pretrain_batch_size,
            ctx.cfg.data.num_workers, ctx.cfg.seed,
        )
        work = ctx.work_dir(STAGE, spec)
        fit(build_trainer(ctx.cfg.trainer, work, params.pretrain_epochs), module, data, work)
        save_file(module.encoder_state(), str(out / "student.safetensors"))
        final = dict(module.history[-1]) if module.history else {}
        final.pop("epoch", None)
        record = {**final, "history": module.history, "teacher": teacher_name, "teacher_layer": module.teacher_layer,
                  "student_block": module.student_block, "provenance": provenance(ctx.cfg)}
        write_json(out / "metrics.json", record)

    return ctx.resolve(ctx.store, STAGE, spec, build)


def pretrained_student(artifact: Artifact):
    return load_file(str(artifact.file("student.safetensors")))
