"""Stage ``distill``: the student trained from its teachers (docs/method.md §8), online or
from the cached teacher targets."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from safetensors.torch import save_file

from relaxkd.artifacts import Artifact, write_json
from relaxkd.names import TX
from relaxkd.stages.context import Context
from relaxkd.stages import dmae_pretrain as pretraining
from relaxkd.stages import expert
from relaxkd.stages.specs import contiguous, metrics, model_info, train_spec, views_spec
from relaxkd.stages.targets import student_data, teacher_targets
from relaxkd.stages.teacher_loading import load_teachers, teacher_artifacts, teachers_spec

STAGE = "distill"
#: a method's own stage whose artifact the student starts from: stage name -> (its stage, the weights it holds)
STUDENT_INIT = {pretraining.STAGE: (pretraining.dmae_pretrain, pretraining.pretrained_student)}
#: the state a method computes from its teachers' stage (KDMethod.state_from): stage name -> reader
_STATE = {expert.STAGE: expert.lfme_state}


@dataclass
class MethodInputs:
    """What the KD method needs besides its teachers (built by its own stages), and its spec part."""

    spec: dict[str, Any] = field(default_factory=dict)
    #: False: the method runs no teacher while the student trains (DMAE's fine-tuning)
    run_teachers: bool = True
    state: Callable[[], dict[str, Any]] = dict
    student_init: Callable[[], dict | None] = lambda: None


def method_inputs(ctx: Context, artifacts: dict[str, Artifact]) -> MethodInputs:
    """What the method declares it needs besides its teachers: its own stages, their weights the
    student starts from, the state its teachers' stage computes for it."""
    from relaxkd.methods import METHODS

    method = METHODS.get(ctx.cfg.distill.loss)
    extras = MethodInputs(run_teachers=method.runs_teachers)
    for name in method.stages:
        make, read = STUDENT_INIT[name]
        found = make(ctx)
        extras.spec[name.replace("-", "_")] = found.key
        extras.student_init = lambda found=found, read=read: read(found)
    if method.state_from is not None:
        extras.state = lambda: _STATE[method.state_from](ctx, artifacts)
    return extras


def distill_settings(d) -> dict[str, Any]:
    """The distill section as it determines this student: other methods' settings (distill.methods)
    and the sweeps' ViT choice do not; the preset is already applied."""
    # compile_student only when on (its kernels round differently): keys of eager runs unchanged
    settings = d.model_dump(exclude={"preset", "methods", "vit_student", *(() if d.compile_student else ("compile_student",))})
    if d.loss in d.methods:
        settings["methods"] = {d.loss: d.methods[d.loss]}
    return settings


def distill(ctx: Context) -> Artifact:
    d = ctx.cfg.distill
    params = d.method_params()  # resolved once: the student, its record (and the targets' temperature) read it
    artifacts = teacher_artifacts(ctx)
    extras = method_inputs(ctx, artifacts)
    cached = teacher_targets(ctx) if d.targets == "cached" and artifacts else None
    spec = {
        **views_spec(ctx),
        "seed": ctx.cfg.seed,
        **teachers_spec(ctx, artifacts),
        **extras.spec,
        "targets": cached.key if cached is not None else None,
        "distill": distill_settings(d),
        "train": train_spec(ctx.cfg),
    }

    def build(out: Path) -> None:
        from relaxkd.data.transforms import IMAGENET_STATS
        from relaxkd.distill import StudentDistiller
        from relaxkd.engine.trainer import build_trainer, fit, seed_everything

        teacher_set = _teacher_set(ctx, artifacts, cached, extras.run_teachers)
        # seeded after the teachers are built (their construction draws random numbers): the
        # student starts from the same weights whichever teachers it has, online or cached
        seed_everything(ctx.cfg.seed)
        module = StudentDistiller(
            arch=d.student,
            num_classes=ctx.num_classes,
            optim_cfg=d.optim.model_dump(),
            loss=d.loss,
            params=params,
            aggregate=d.aggregate,
            input_stats=IMAGENET_STATS,
            class_counts=ctx.class_counts,
            teachers=teacher_set,
            method_state=extras.state(),
            student_init=extras.student_init(),
            compile_student=d.compile_student,
        )
        work = ctx.work_dir(STAGE, spec)
        fit(build_trainer(ctx.cfg.trainer, work, d.optim.epochs), module, student_data(ctx), work)
        save_file(contiguous(module.student.state_dict()), str(out / "student.safetensors"))
        info = model_info(ctx, "student", arch=d.student)
        write_json(out / "student.json", {**info, "input_stats": "imagenet", "image_size": ctx.cfg.data.image_size})
        tx_input = d.tx_input if TX in artifacts else None
        record = metrics(ctx.cfg, module, epochs=d.optim.epochs, teachers=list(artifacts), loss=d.loss,
                         params=params.model_dump(), aggregate=d.aggregate, tx_input=tx_input, targets=d.targets if artifacts else None)
        write_json(out / "metrics.json", record)

    return ctx.resolve(ctx.store, STAGE, spec, build)


def _teacher_set(ctx: Context, artifacts: dict[str, Artifact], cached: Artifact | None, run_teachers: bool):
    """The student's teachers: their recorded logits (cached targets), names only (the method runs
    no teacher), or the trained teachers themselves."""
    from relaxkd.distill import CachedTargets, TeacherSet

    if cached is not None:
        names = cached.read_json("targets.json")["teachers"]
        d = ctx.cfg.distill
        replay = CachedTargets(cached.path, num_teachers=len(names), num_classes=ctx.num_classes, epochs=d.optim.epochs,
                               seed=ctx.cfg.seed)
        return TeacherSet(names=names, cached=replay)
    if not run_teachers:
        return TeacherSet(names=list(artifacts))
    return load_teachers(ctx, artifacts)
