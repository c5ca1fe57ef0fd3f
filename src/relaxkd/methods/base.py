"""The KD-method plug-in interface: one class per method, registered by name, with typed parameters.

A method is an ``nn.Module`` (its buffers travel in checkpoints, so a resumed run continues with
the same state). Every training step it receives a :class:`Step`: the epoch and step, the batch,
and the student's and each teacher's :class:`Outputs` (logits, plus the named intermediate
features the method asked for). It returns named loss terms; ``loss`` is optimised.

Class attributes declare what a method needs, and the distillation checks them before training:

- ``Params``: a pydantic model of the method's own parameters (unknown keys are refused, listing
  the valid ones). ``temperature``, ``ce_weight`` and ``kd_weight`` may also be set through
  ``distill.temperature`` etc.; values left unset take the method's own recipe.
- ``needs_teachers``; ``teacher_features`` / ``student_features`` (names of intermediate
  outputs, see ``features.py``); ``updates_teachers`` (the method trains its teachers).
  Cached teacher targets (``distill.targets=cached``) replay logits only: they serve every
  method that neither asks for teacher features nor updates teachers.
- ``students``: backbone families the method works with (``None`` = any).
- ``long_tailed_only``: the method is defined for long-tailed training sets only.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from relaxkd.engine.metrics import is_long_tailed
from relaxkd.errors import UserError
from relaxkd.losses.distill import AGGREGATORS
from relaxkd.registry import Registry


class MethodParams(BaseModel):
    """Base of every method's parameters: strict (unknown keys refused), validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


class LogitParams(MethodParams):
    """CE + KD weighting shared by logit methods: ``ce_weight·CE + kd_weight·KD(τ)``. The defaults
    (τ 4, 1, 1) are a plug-in's starting point; every built-in method sets its own recipe."""

    temperature: float = Field(4.0, gt=0)
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0)


@dataclass
class Outputs:
    """One model's outputs on one batch: logits and named intermediate features."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Step:
    """Everything a method may use to compute its loss for one batch."""

    epoch: int  #: 0-based, as Lightning counts
    step: int  #: global optimiser step
    images: Tensor
    targets: Tensor
    indices: Tensor
    student: Outputs
    #: teacher name -> outputs, in ``distill.teachers`` order (T_x, when present, last)
    teachers: dict[str, Outputs]
    #: per-teacher weights of the ``adaptive`` aggregation (a tensor, so the step stays on device)
    teacher_weights: Tensor | None = None


@dataclass
class MethodContext:
    """What a method may know about its run when it is built."""

    num_classes: int
    teacher_names: list[str]
    multimodal_index: int | None = None
    aggregate: str = "mean_logits"
    class_counts: list[int] | None = None
    total_epochs: int = 1
    #: teacher name -> module, handed over only to methods that update their teachers
    teacher_modules: dict[str, nn.Module] = field(default_factory=dict)
    #: the method's state computed by its own stage (e.g. LFME's expert statistics)
    extra: dict[str, Any] = field(default_factory=dict)


class KDMethod(nn.Module):
    """Base class of KD methods (see the module docstring)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams
    needs_teachers: ClassVar[bool] = True
    teacher_features: ClassVar[tuple[str, ...]] = ()
    student_features: ClassVar[tuple[str, ...]] = ()
    updates_teachers: ClassVar[bool] = False
    students: ClassVar[tuple[str, ...] | None] = None
    long_tailed_only: ClassVar[bool] = False
    #: stages the distillation needs besides the teachers, by stage name (DMAE: its pre-training,
    #: whose weights the student starts from)
    stages: ClassVar[tuple[str, ...]] = ()
    #: False: no teacher runs while the student trains (DMAE fine-tunes its pre-trained student)
    runs_teachers: ClassVar[bool] = True
    #: the stage whose artifacts (the teachers) yield the state the method is built with (LFME: its experts')
    state_from: ClassVar[str | None] = None

    def __init__(self, params: MethodParams, context: MethodContext):
        super().__init__()
        self.params = params
        self.context = context

    @classmethod
    def check_teachers(cls, names: list[str]) -> None:
        """Refuse (UserError, one line) teacher names this method cannot use; checked before any work."""

    @classmethod
    def serves_cached_targets(cls) -> bool:
        return not cls.teacher_features and not cls.updates_teachers

    def forward(self, step: Step) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    # optional hooks ------------------------------------------------------------------------
    def teacher_outputs(self, images: Tensor, step_info: dict[str, Any]) -> dict[str, Outputs] | None:
        """Methods that update teachers run them themselves (with gradients); None = the frozen set."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """Extra optimiser parameter groups (e.g. teachers refined online)."""
        return []

    def prepare_student(self, student: nn.Module) -> None:
        """Adjust the freshly built student (DMAE: drop path)."""

    def student_param_groups(self, student: nn.Module, weight_decay: float) -> list[dict[str, Any]] | None:
        """The student's optimiser groups (may carry ``lr_scale``); None = one group of every parameter."""
        return None

    def mix_batch(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """A training batch before the student sees it (DMAE: random erasing, mixup/cutmix -> soft targets)."""
        return images, targets

    def on_validation_metrics(self, metrics: dict[str, float]) -> None:
        """Called with each epoch's validation metrics (all ranks see the same values)."""

    def epoch_metrics(self) -> dict[str, float]:
        """Extra per-epoch values recorded in the metrics history."""
        return {}


class LogitMethod(KDMethod):
    """A method whose KD term compares student and teacher logits (aggregated over teachers)."""

    Params: ClassVar[type[MethodParams]] = LogitParams

    def kd_term(self, student: Tensor, teacher: Tensor, step: Step) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def kd_factor(self, step: Step) -> float:
        """Schedule on the KD term (1 unless the method's recipe warms it up)."""
        return 1.0

    def forward(self, step: Step) -> dict[str, Tensor]:
        p = self.params
        student = step.student.logits
        ce = F.cross_entropy(student, step.targets)
        teachers = [o.logits for o in step.teachers.values()]
        aggregator = AGGREGATORS.get(self.context.aggregate)
        kd = aggregator(
            student, teachers, lambda s, t: self.kd_term(s, t, step),
            multimodal_index=self.context.multimodal_index, teacher_weights=step.teacher_weights,
        )
        loss = p.ce_weight * ce + self.kd_factor(step) * p.kd_weight * kd
        return {"loss": loss, "ce": ce, "kd": kd}


METHODS: Registry[type[KDMethod]] = Registry("KD method")


def register_method(name: str) -> Callable[[type[KDMethod]], type[KDMethod]]:
    """Class decorator: ``@register_method("mykd")`` makes ``distill.loss=mykd`` available."""

    def decorator(cls: type[KDMethod]) -> type[KDMethod]:
        if not (isinstance(cls, type) and issubclass(cls, KDMethod)):
            raise TypeError(f"KD method {name!r} must subclass relaxkd.methods.KDMethod")
        cls.name = name
        return METHODS.register(name)(cls)

    return decorator


#: the distill.* fields shared by methods: method parameter -> distill field; a set field fills the
#: parameter of every method that has it (distill.dkd_beta -> DKD's beta)
SHARED_FIELDS = {"temperature": "temperature", "ce_weight": "ce_weight", "kd_weight": "kd_weight",
                 "alpha": "dkd_alpha", "beta": "dkd_beta"}


def method_params(
    name: str, params: dict[str, Any] | None = None, shared: dict[str, Any] | None = None
) -> MethodParams:
    """Validate a method's parameters: ``shared`` (distill.temperature…) fill the fields the
    method has, ``params`` (distill.params) override them; the rest is the method's recipe."""
    cls = METHODS.get(name)
    fields = cls.Params.model_fields
    merged = {k: v for k, v in (shared or {}).items() if v is not None and k in fields}
    merged.update(params or {})
    try:
        return cls.Params.model_validate(merged)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise UserError(
                f"distill.params: unknown key {key!r} for KD method {name!r}; valid keys: {', '.join(fields) or '(none)'}"
            ) from None
        if first["type"] == "model_type":
            raise UserError(f"distill.params of KD method {name!r} must be a mapping of its parameters, got {params!r}") from None
        msg = first["msg"].removeprefix("Value error, ")
        raise UserError(f"distill.params.{key} of KD method {name!r}: {msg} (got {first.get('input')!r})") from None


def resolved_params(name: str, params: MethodParams | dict[str, Any] | None) -> MethodParams:
    """The method ``name``'s parameters: an already resolved object as it is, a mapping validated
    by :func:`method_params`."""
    if not isinstance(params, MethodParams):
        return method_params(name, params)
    expected = METHODS.get(name).Params
    if not isinstance(params, expected):
        raise TypeError(f"KD method {name!r} takes {expected.__name__}, got {type(params).__name__}")
    return params


def build_method(name: str, context: MethodContext, params: MethodParams | dict[str, Any] | None = None) -> KDMethod:
    """The method ``name`` with its parameters (resolved, or a mapping validated here), ready to compute losses."""
    return METHODS.get(name)(resolved_params(name, params), context)


def check_method_inputs(method: type[KDMethod], *, teachers: list[str], cached: bool, class_counts: list[int] | None,
                        student_family: str | None = None, dataset: str | None = None, student: str | None = None) -> None:
    """Refuse a method its inputs cannot serve, with one line each (before any work)."""
    name = method.name
    if method.needs_teachers and not teachers:
        raise UserError(f"KD method {name!r} needs teachers; list them in distill.teachers or set distill.loss=none")
    if method.needs_teachers:
        method.check_teachers(list(teachers))
    if cached and not method.serves_cached_targets():
        what = "needs teacher features" if method.teacher_features else "updates its teachers"
        raise UserError(f"KD method {name!r} {what}, which cached teacher targets cannot serve; set distill.targets=online")

    if method.long_tailed_only and class_counts is not None and not is_long_tailed(class_counts):
        ratio = max(class_counts) / max(1, min(class_counts))
        where = f"dataset {dataset!r}" if dataset else "the training set"
        raise UserError(
            f"KD method {name!r} needs a long-tailed training set (largest/smallest class >= 10); "
            f"{where} is balanced (ratio {ratio:.1f}); use e.g. cifar100_lt or imagenet_lt"
        )
    if method.students is not None and student_family is not None and student_family not in method.students:
        raise UserError(
            f"KD method {name!r} needs a {' or '.join(method.students)} student, but distill.student={student or '?'} is a "
            f"{student_family}; use e.g. distill.student=vit_tiny_patch16 (vit_micro for tests)"
        )


def teacher_logits_list(step: Step) -> list[Tensor]:
    return [o.logits for o in step.teachers.values()]


def zero_like(t: Tensor) -> Tensor:
    return t.new_zeros(())


__all__ = [
    "KDMethod", "LogitMethod", "check_method_inputs", "LogitParams", "METHODS", "MethodContext", "MethodParams", "Outputs",
    "SHARED_FIELDS", "Step", "build_method", "method_params", "register_method", "torch",
]
