"""Stage ``distill``: the student trained from its teachers (docs/method.md §8), online or
from the cached teacher targets."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.names import TX
from relaxkd.stages import targets
from relaxkd.stages.context import Context
from relaxkd.stages.graph import STAGES, Job, Node, StageRecord, artifact, register
from relaxkd.stages.specs import contiguous, metrics, model_info, train_spec, views_spec
from relaxkd.stages.teacher_loading import load_teachers, teacher_inputs, teachers_of, teachers_spec


def inputs(ctx: Context, arg: str | None) -> dict[str, Node]:
    """The teachers, their cached targets (``distill.targets=cached``) and the stages the method
    declares it needs (``KDMethod.stages``: DMAE's pre-training)."""
    from relaxkd.methods import METHODS  # here, not at the top: export reads this record without Lightning (DMAE's module)

    found = teacher_inputs(ctx)
    if ctx.cfg.distill.targets == "cached" and found:
        found["targets"] = Node(targets.STAGE)
    found.update({name: Node(name) for name in METHODS.get(ctx.cfg.distill.loss).stages})
    return found


def distill_settings(d) -> dict[str, Any]:
    """The distill section as it determines this student: other methods' settings (distill.methods)
    and the sweeps' ViT choice do not; the preset is already applied."""
    # settings added later (compile_student, released_code) follow the key rule: DistillConfig.stable_defaults
    settings = d.model_dump(exclude={"preset", "methods", "vit_student"})
    if d.loss in d.methods:
        settings["methods"] = {d.loss: d.methods[d.loss]}
    return settings


def spec(job: Job) -> dict[str, Any]:
    from relaxkd.methods import METHODS

    method = METHODS.get(job.cfg.distill.loss)
    cached = job.inputs.get("targets")
    return {
        **views_spec(job.ctx),
        "seed": job.cfg.seed,
        **teachers_spec(job),
        # the method's own stages by key (``dmae_pretrain``: the key names kept from before the stage records)
        **{name.replace("-", "_"): job.inputs[name].key for name in method.stages},
        "targets": cached.key if cached is not None else None,
        "distill": distill_settings(job.cfg.distill),
        "train": train_spec(job.cfg),
    }


def build(job: Job, out: Path) -> None:
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.distill import StudentDistiller, StudentSettings
    from relaxkd.engine.trainer import build_trainer, fit, seed_everything
    from relaxkd.methods import METHODS

    ctx, d = job.ctx, job.cfg.distill
    settings = StudentSettings.of(d)  # the method's parameters resolved once: the student and its record read them
    method = METHODS.get(d.loss)
    teachers = teachers_of(job)
    teacher_set = _teacher_set(job, method.runs_teachers)
    # seeded after the teachers are built (their construction draws random numbers): the
    # student starts from the same weights whichever teachers it has, online or cached
    seed_everything(ctx.cfg.seed)
    state = STAGES[method.state_from].method_state(ctx, teachers) if method.state_from else {}
    init = None
    for name in method.stages:  # a stage of the method's own may hold the student's starting weights
        if STAGES[name].student_init is not None:
            init = STAGES[name].student_init(job.inputs[name])
    module = StudentDistiller(settings, num_classes=ctx.num_classes, input_stats=IMAGENET_STATS, class_counts=ctx.class_counts,
                              teachers=teacher_set, method_state=state, student_init=init)
    work = job.work_dir()
    fit(build_trainer(ctx.cfg.trainer, work, d.optim.epochs), module, targets.student_data(ctx), work)
    save_file(contiguous(module.student.state_dict()), str(out / "student.safetensors"))
    info = model_info(ctx, "student", arch=d.student, input_stats="imagenet", image_size=ctx.cfg.data.image_size)
    write_json(out / "student.json", info)
    tx_input = d.tx_input if TX in teachers else None
    record = metrics(
        ctx.cfg,
        module,
        epochs=d.optim.epochs,
        teachers=list(teachers),
        loss=d.loss,
        params=settings.params.model_dump(),
        aggregate=d.aggregate,
        tx_input=tx_input,
        targets=d.targets if teachers else None,
    )
    write_json(out / "metrics.json", record)


def _teacher_set(job: Job, run_teachers: bool):
    """The student's teachers: their recorded logits (cached targets), names only (the method runs
    no teacher), or the trained teachers themselves."""
    from relaxkd.distill import CachedTargets, TeacherSet

    cached, teachers = job.inputs.get("targets"), teachers_of(job)
    if cached is not None:
        names = cached.read_json("targets.json")["teachers"]
        d = job.cfg.distill
        replay = CachedTargets(cached.path, num_teachers=len(names), num_classes=job.ctx.num_classes, epochs=d.optim.epochs,
                               seed=job.cfg.seed)
        return TeacherSet(names=names, cached=replay)
    if not run_teachers:
        return TeacherSet(names=list(teachers))
    return load_teachers(job.ctx, teachers, job.inputs.get("tx_embeddings"))


RECORD = register(StageRecord("distill", "the student, distilled from its teachers by the KD method (distill.loss)",
                              inputs, spec, build, trains=True))
STAGE = RECORD.name


def distill(ctx: Context) -> Artifact:
    return artifact(ctx, Node(STAGE))
