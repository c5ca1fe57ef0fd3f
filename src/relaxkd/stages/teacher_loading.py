"""The trained teachers a distillation uses: which artifacts, what their keys say, and loading them."""
from __future__ import annotations

from typing import Any

from safetensors.torch import load_file

from relaxkd.artifacts import Artifact
from relaxkd.errors import UserError
from relaxkd.names import EXPERT_TEACHERS, TX
from relaxkd.stages import embed_images, expert, multimodal, unimodal
from relaxkd.stages.context import Context
from relaxkd.stages.graph import Job, Node
from relaxkd.stages.specs import check_teacher, clip_spec


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


def teacher_node(name: str) -> Node:
    """The artifact of any teacher a distillation may name: T_x, an LFME subset expert or a unimodal member."""
    if name == TX:
        return Node(multimodal.STAGE)
    if name in EXPERT_TEACHERS:
        return Node(expert.STAGE, name)
    return Node(unimodal.STAGE, name)


def used_teachers(cfg) -> list[str]:
    """The teachers the distillation uses: ``distill.teachers``, none when the method needs none."""
    from relaxkd.methods import METHODS

    return list(cfg.distill.teachers) if METHODS.get(cfg.distill.loss).needs_teachers else []


#: the input-name prefix of a distillation's teachers (``teacher:strong``): they sit beside its other inputs
TEACHER = "teacher:"


def teacher_inputs(ctx: Context) -> dict[str, Node]:
    """A distillation's teachers as inputs (checked against the method first, before any work), and
    the image embeddings T_x reads when it runs on cached embeddings."""
    check_method(ctx)
    found = {f"{TEACHER}{name}": teacher_node(name) for name in used_teachers(ctx.cfg)}
    if TX in used_teachers(ctx.cfg) and ctx.cfg.distill.tx_input == "cached":
        found["tx_embeddings"] = Node(embed_images.STAGE)
    return found


def teachers_of(job: Job) -> dict[str, Artifact]:
    """The teacher artifacts among ``job``'s inputs, by teacher name, in ``distill.teachers`` order."""
    return {name.removeprefix(TEACHER): a for name, a in job.inputs.items() if name.startswith(TEACHER)}


def teachers_spec(job: Job) -> dict[str, Any]:
    """The teacher artifacts a distillation uses, and what feeds T_x: the CLIP it runs online or
    the image embeddings it reads (named by key, so the manifest's ``inputs`` lists them)."""
    artifacts = teachers_of(job)
    spec: dict[str, Any] = {"teachers": {n: a.key for n, a in artifacts.items()}}
    if TX in artifacts and job.cfg.distill.tx_input == "online":
        from relaxkd.clip.online import RESIZE

        spec["clip"] = {**clip_spec(job.cfg), "resize": RESIZE}
    elif TX in artifacts:
        spec["tx_embeddings"] = job.inputs["tx_embeddings"].key
    return spec


def load_multimodal(ctx: Context, artifact: Artifact):
    """The trained T_x of ``artifact``, in eval mode."""
    from relaxkd.teachers import MultimodalTeacher

    info = check_teacher(ctx, artifact, TX)
    module = MultimodalTeacher.from_hparams(info.hparams)
    module.load_state_dict(load_file(str(artifact.file("model.safetensors"))))
    return module.eval()


def load_teachers(ctx: Context, artifacts: dict[str, Artifact], tx_embeddings: Artifact | None = None):
    """A :class:`~relaxkd.distill.TeacherSet` of the trained teachers: T_m's members, then T_x (with
    CLIP online, or reading ``tx_embeddings``, the embed-images artifact, with ``distill.tx_input=cached``)."""
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.distill import TeacherSet
    from relaxkd.models import TeacherEnsemble, build_backbone

    image_models, names = [], []
    for name, art in artifacts.items():
        info = check_teacher(ctx, art, name)
        if info.kind == "unimodal":
            model = build_backbone(info.arch, ctx.num_classes, "none")
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
            emb = load_file(str(tx_embeddings.file("embeddings.safetensors")))
            tx["cached_embeddings"] = {"train": emb["train"], "val": emb["val"]}
    ensemble = TeacherEnsemble(image_models, compiled=ctx.cfg.distill.compile_teachers) if image_models else None
    members = dict(zip(names, image_models))
    return TeacherSet(names=names, members=members, image_teachers=ensemble, image_stats=IMAGENET_STATS, **tx)
