"""The trained teachers a distillation uses: which artifacts, what their keys say, and loading them."""
from __future__ import annotations

from typing import Any

from safetensors.torch import load_file

from relaxkd.artifacts import Artifact
from relaxkd.errors import UserError
from relaxkd.names import EXPERT_TEACHERS, TX
from relaxkd.stages.context import Context
from relaxkd.stages.embed_images import embed_images
from relaxkd.stages.expert import expert_teacher
from relaxkd.stages.multimodal import multimodal_teacher
from relaxkd.stages.specs import check_teacher, clip_spec
from relaxkd.stages.unimodal import unimodal_teacher


def check_method(ctx: Context) -> None:
    """Refuse, in one line and before any work, inputs the configured KD method cannot use."""
    from relaxkd.engine.metrics import is_long_tailed
    from relaxkd.methods import METHODS, check_method_inputs
    from relaxkd.models import BACKBONES

    d = ctx.cfg.distill
    method = METHODS.get(d.loss)
    check_method_inputs(
        method,
        teachers=list(d.teachers) if method.needs_teachers else [],
        cached=d.targets == "cached",
        class_counts=ctx.class_counts if method.long_tailed_only else None,
        student_family=BACKBONES.get(d.student).family,
        student=d.student,
        dataset=ctx.cfg.data.dataset,
    )
    experts = [n for n in d.teachers if n in EXPERT_TEACHERS] if method.needs_teachers else []
    if experts and not is_long_tailed(ctx.class_counts):
        raise UserError(
            f"teachers {', '.join(experts)} are LFME's subset experts, defined for long-tailed training sets; "
            f"dataset {ctx.cfg.data.dataset!r} is balanced; use e.g. cifar100_lt or imagenet_lt"
        )


def teacher_artifact(ctx: Context, name: str) -> Artifact:
    """Any teacher a distillation may name: T_x, an LFME subset expert or a unimodal member."""
    if name == TX:
        return multimodal_teacher(ctx)
    if name in EXPERT_TEACHERS:
        return expert_teacher(ctx, name)
    return unimodal_teacher(ctx, name)


def used_teachers(cfg) -> list[str]:
    """The teachers the distillation uses: ``distill.teachers``, none when the method needs none."""
    from relaxkd.methods import METHODS

    return list(cfg.distill.teachers) if METHODS.get(cfg.distill.loss).needs_teachers else []


def teacher_artifacts(ctx: Context) -> dict[str, Artifact]:
    """The distillation's teacher artifacts by name (built when missing); none for a method without teachers."""
    check_method(ctx)
    return {n: teacher_artifact(ctx, n) for n in used_teachers(ctx.cfg)}


def teachers_spec(ctx: Context, artifacts: dict[str, Artifact]) -> dict[str, Any]:
    """The teacher artifacts a distillation uses, and what feeds T_x: the CLIP it runs online or
    the image embeddings it reads (named by key, so the manifest's ``inputs`` lists them)."""
    spec: dict[str, Any] = {"teachers": {n: a.key for n, a in artifacts.items()}}
    if TX in artifacts and ctx.cfg.distill.tx_input == "online":
        from relaxkd.clip.online import RESIZE

        spec["clip"] = {**clip_spec(ctx.cfg), "resize": RESIZE}
    elif TX in artifacts:
        spec["tx_embeddings"] = embed_images(ctx).key
    return spec


def load_multimodal(ctx: Context, artifact: Artifact):
    """The trained T_x of ``artifact``, in eval mode."""
    from relaxkd.teachers import MultimodalTeacher

    info = check_teacher(ctx, artifact, TX)
    module = MultimodalTeacher(**info["hparams"])
    module.load_state_dict(load_file(str(artifact.file("model.safetensors"))))
    return module.eval()


def load_teachers(ctx: Context, artifacts: dict[str, Artifact]):
    """A :class:`~relaxkd.distill.TeacherSet` of the trained teachers: T_m's members, then T_x."""
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.distill import TeacherSet
    from relaxkd.models import TeacherEnsemble, build_backbone

    image_models, names = [], []
    for name, art in artifacts.items():
        info = check_teacher(ctx, art, name)
        if info["kind"] == "unimodal":
            model = build_backbone(info["arch"], ctx.num_classes, "none")
            model.load_state_dict(load_file(str(art.file("model.safetensors"))))
            image_models.append(model)
            names.append(name)
    tx: dict[str, Any] = {}
    if TX in artifacts:
        names.append(TX)
        tx["multimodal"] = load_multimodal(ctx, artifacts[TX])
        if ctx.cfg.distill.tx_input == "online":
            from relaxkd.clip.online import OnlineClip

            tx["clip_encoder"] = OnlineClip(ctx.clip, IMAGENET_STATS)
        else:
            emb = load_file(str(embed_images(ctx).file("embeddings.safetensors")))
            tx["cached_embeddings"] = {"train": emb["train"], "val": emb["val"]}
    ensemble = TeacherEnsemble(image_models, compiled=ctx.cfg.distill.compile_teachers) if image_models else None
    members = dict(zip(names, image_models))
    return TeacherSet(names=names, members=members, image_teachers=ensemble, image_stats=IMAGENET_STATS, **tx)
