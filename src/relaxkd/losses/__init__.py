"""Pure loss functions over tensors: KD, z-score KD, DKD, multi-teacher aggregation, T_x losses."""
from relaxkd.losses.distill import (
    AGGREGATORS,
    AUTHORS_CODE,
    KD_METHODS,
    PAPER,
    DistillPreset,
    adaptive_teacher_weights,
    aggregate_teacher_logits,
    distillation_loss,
)
from relaxkd.losses.kd import dkd_loss, kd_loss, standardize_logits
from relaxkd.losses.multimodal import (
    TEACHER_LOSS_AUTHORS_CODE,
    TEACHER_LOSS_PAPER,
    TeacherLossPreset,
    cosine_regularization,
    hierarchical_loss,
    multimodal_teacher_loss,
)

__all__ = [
    "AGGREGATORS",
    "AUTHORS_CODE",
    "KD_METHODS",
    "PAPER",
    "TEACHER_LOSS_AUTHORS_CODE",
    "TEACHER_LOSS_PAPER",
    "DistillPreset",
    "TeacherLossPreset",
    "adaptive_teacher_weights",
    "aggregate_teacher_logits",
    "cosine_regularization",
    "distillation_loss",
    "dkd_loss",
    "hierarchical_loss",
    "kd_loss",
    "multimodal_teacher_loss",
    "standardize_logits",
]
