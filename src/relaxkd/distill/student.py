"""The student: an image classifier distilled from teachers by a KD method (relaxkd.methods).

Every teacher sees the same augmented batch, re-normalised to its own input statistics (timm's
distillation task does the same). Teachers are frozen, kept in eval mode, run under
``inference_mode`` and are excluded from checkpoints and gradient synchronisation. With cached
teacher targets (targets.py) no teacher runs: their recorded logits for this epoch's views are
replayed. A method that refines its teachers (FFKD) owns trainable copies instead; they live in the
method's state, which checkpoints carry.

The training step stays on the device: no ``.item()``/``.tolist()`` on its path.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from relaxkd.data.transforms import Stats, renormalize
from relaxkd.distill.teacher_set import TeacherSet
from relaxkd.engine import optim
from relaxkd.engine.evaluation import ClassifierModule
from relaxkd.engine.settings import OptimConfig
from relaxkd.losses import adaptive_teacher_weights, kd_loss
from relaxkd.losses.distill import AGGREGATORS
from relaxkd.methods import (
    METHODS,
    FeatureTap,
    KDMethod,
    MethodContext,
    MethodParams,
    Outputs,
    Step,
    check_method_inputs,
    resolved_params,
)
from relaxkd.models import build_backbone


def adaptive_validation_loss(logits: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, params: Any) -> torch.Tensor:
    """One teacher's validation loss for the adaptive weights: the authors' per-teacher ``loss_kd``
    (``trainer_regularizerV2.py``, ``my_train_withCLIP_v3_helper``), i.e. the same weighted
    ``ce_weight · CE + kd_weight · τ² · KL`` the student trains on (0.6 / 0.4 in their scripts).
    ``params``: the KD method's resolved parameters (temperature, ce_weight, kd_weight)."""
    ce = torch.nn.functional.cross_entropy(logits, targets)
    ce_weight, kd_weight = getattr(params, "ce_weight", 1.0), getattr(params, "kd_weight", 1.0)
    return ce_weight * ce + kd_weight * kd_loss(logits, teacher, params.temperature)


class _Frozen(nn.Module):
    """Holds teachers so they move with the student but stay frozen and in eval mode (``follow_student``:
    in the student's mode, as the released code leaves them, BatchNorm statistics and dropout live)."""

    def __init__(self, modules: dict[str, nn.Module], follow_student: bool = False):
        super().__init__()
        self.members = nn.ModuleDict(modules)
        self.follow_student = follow_student
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(mode and self.follow_student)


def _resolve_method(
    loss: str, params: MethodParams | dict[str, Any] | None, aggregate: str, teachers: TeacherSet | None,
    class_counts: list[int] | None,
) -> tuple[type[KDMethod], MethodParams, TeacherSet]:
    """The KD method's class, its parameters (the resolved object, or a mapping validated against the
    method's ``Params``) and the teachers it sees (none for a method that needs none). Bad names and
    inputs a method cannot use fail here, not at the first training step."""
    method_cls = METHODS.get(loss)
    AGGREGATORS.get(aggregate)
    resolved = resolved_params(loss, params)
    teacher_set = teachers or TeacherSet(names=[])
    if not method_cls.needs_teachers:
        teacher_set = TeacherSet(names=[])
    check_method_inputs(
        method_cls, teachers=teacher_set.names, cached=teacher_set.cached is not None, class_counts=class_counts,
    )
    return method_cls, resolved, teacher_set


@dataclass(frozen=True)
class StudentSettings:
    """The distill section's settings the student reads, as one object. :meth:`of` reads them by
    name from the config's section (``cfg.distill``), so a setting added here and to the section
    under the same name reaches the module with no other edit."""

    student: str
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: str = "kd"
    #: the KD method's resolved parameters (``DistillConfig.method_params()``; a mapping is validated
    #: against the method's ``Params``); None: its recipe
    params: MethodParams | dict[str, Any] | None = None
    aggregate: str = "mean_logits"
    #: run the student through torch.compile
    compile_student: bool = False
    #: the released train_model_withCLIP / my_train_withCLIP_v3's handling, where it differs from the
    #: paper: teachers left in train mode, the adaptive weights starting at 1/3 each, computed from
    #: the student's validation loss in train mode, averaged per batch
    released_code: bool = False

    @classmethod
    def of(cls, section: Any) -> StudentSettings:
        """The settings of a distill section (``DistillConfig``), its method's parameters resolved."""
        values = {f.name: getattr(section, f.name) for f in fields(cls) if f.name != "params"}
        return cls(**values, params=section.method_params())

    def hparams(self, params: MethodParams) -> dict[str, Any]:
        """Plain values for the checkpoint (loaded with weights_only) and the resume check."""
        return {"arch": self.student, "optim_cfg": self.optim.model_dump(), "loss": self.loss, "params": params.model_dump(),
                "aggregate": self.aggregate, "compile_student": self.compile_student, "released_code": self.released_code}


class StudentDistiller(ClassifierModule):
    """The student and its KD method, configured by one :class:`StudentSettings`."""

    def __init__(
        self,
        settings: StudentSettings,
        *,
        num_classes: int,
        input_stats: Stats | None = None,
        class_counts: list[int] | None = None,
        teachers: TeacherSet | None = None,
        method_state: dict[str, Any] | None = None,
        student_init: dict[str, torch.Tensor] | None = None,
    ):
        super().__init__(class_counts)
        s = self.settings = settings
        method_cls, resolved, teacher_set = _resolve_method(s.loss, s.params, s.aggregate, teachers, class_counts)
        self.save_hyperparameters({"num_classes": num_classes, **s.hparams(resolved)})
        self.optim_cfg = s.optim
        self.student = build_backbone(s.student, num_classes, "none")
        if student_init is not None:
            self.student.load_state_dict(student_init)
        if s.compile_student:  # in place: the state dict keeps its keys (checkpoints, export)
            self.student.compile()
        self.input_stats = input_stats
        self.teacher_set = teacher_set
        context = MethodContext(
            num_classes=num_classes,
            teacher_names=list(teacher_set.names),
            multimodal_index=teacher_set.multimodal_index,
            aggregate=s.aggregate,
            class_counts=class_counts,
            total_epochs=self.optim_cfg.epochs,
            teacher_modules=dict(teacher_set.members) if method_cls.updates_teachers else {},
            extra=dict(method_state or {}),
        )
        self.method: KDMethod = method_cls(resolved, context)
        self.method.prepare_student(self.student)
        # teachers a method refines are its own copies: the frozen set then holds nothing
        frozen = {} if method_cls.updates_teachers else teacher_set.modules(include_members=bool(method_cls.teacher_features))
        self.teachers = _Frozen(frozen, follow_student=s.released_code)
        self._student_tap = FeatureTap(self.student, method_cls.student_features) if method_cls.student_features else None
        count = max(1, len(teacher_set.names))
        self.register_buffer("teacher_weights", torch.full((count,), 1.0 / 3 if s.released_code else 1.0 / count))
        self.strict_loading = False  # frozen teachers are not saved with the student
        self._val_kd: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.student(images)

    # -- outputs -------------------------------------------------------------------------------
    def student_outputs(self, images: torch.Tensor) -> Outputs:
        logits = self.student(images)
        return Outputs(logits, self._student_tap.collect() if self._student_tap is not None else {})

    def teacher_outputs(
        self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, split: str
    ) -> dict[str, Outputs]:
        if not self.teacher_set.names:
            return {}
        own = self.method.teacher_outputs(images, {"split": split, "renormalize": self._to_teacher_stats})
        if own is not None:
            return own
        return self.teacher_set.outputs(
            images, targets, indices, split, self.input_stats, epoch=self.current_epoch, features=self.method.teacher_features
        )

    def teacher_logits(
        self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, split: str
    ) -> list[torch.Tensor]:
        return [o.logits for o in self.teacher_outputs(images, targets, indices, split).values()]

    def _to_teacher_stats(self, images: torch.Tensor) -> torch.Tensor:
        stats = self.teacher_set.image_stats
        if stats is None or self.input_stats is None or stats == self.input_stats:
            return images
        return renormalize(images, self.input_stats, stats)

    # -- training ------------------------------------------------------------------------------
    def step_inputs(self, batch, split: str = "train") -> Step:
        images, targets, indices = batch
        return Step(
            epoch=self.current_epoch,
            step=self.global_step,
            images=images,
            targets=targets,
            indices=indices,
            student=self.student_outputs(images),
            teachers=self.teacher_outputs(images, targets, indices, split),
            teacher_weights=self.teacher_weights if self.hparams.aggregate == "adaptive" else None,
        )

    def training_step(self, batch, batch_idx):
        images, targets, indices = batch
        terms = self.method(self.step_inputs((*self.method.mix_batch(images, targets), indices)))
        self.log_train({f"train/{k}": v for k, v in terms.items()})  # no host sync on an accelerator
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        images, targets, indices = batch
        logits = self(images)
        self.store_validation(logits, targets, indices)
        temperature = getattr(self.method.params, "temperature", None)
        if self.hparams.aggregate == "adaptive" and self.teacher_set.names and temperature is not None:
            released = self.settings.released_code
            if released:  # the released code evaluates the student for these weights in train mode
                self.student.train()
                logits = self(images)
                self.student.eval()
            # per sample (each counts once), or the released code's mean of per-batch means
            size = 1.0 if released else float(len(targets))
            per_teacher = [adaptive_validation_loss(logits, t, targets, self.method.params) * size
                           for t in self.teacher_logits(images, targets, indices, "val")]
            self._val_kd.append(torch.stack([p.detach() for p in per_teacher] + [logits.new_tensor(size)]))

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_kd = []

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.history:
            self.method.on_validation_metrics(self.history[-1])
        if self._val_kd:
            # adaptive aggregation: next epoch's teacher weights ∝ 1 / validation loss (CE + KD terms)
            sums = self.trainer.strategy.reduce(torch.stack(self._val_kd).sum(0), reduce_op="sum")
            val_losses = (sums[:-1] / sums[-1]).tolist()
            self.teacher_weights.copy_(torch.tensor(adaptive_teacher_weights(val_losses)))
            self._val_kd = []

    def extra_epoch_metrics(self) -> dict[str, float]:
        found = dict(self.method.epoch_metrics())
        if self.hparams.aggregate == "adaptive" and self.teacher_set.names:
            found.update({f"weight_{n}": w for n, w in zip(self.teacher_set.names, self.teacher_weights.tolist())})
        return found

    def configure_optimizers(self):
        student = self.method.student_param_groups(self.student, self.optim_cfg.weight_decay) or [
            {"params": self.student.parameters()}
        ]
        groups = [*student, *self.method.param_groups()]
        return optim.configure(groups, self.optim_cfg)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teachers.")}
