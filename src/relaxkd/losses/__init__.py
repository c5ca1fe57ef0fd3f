"""Pure loss functions over tensors: KD, z-score KD, DKD, multi-teacher aggregation, T_x losses.

KD *methods* (which loss, with which recipe, on which teachers) live in relaxkd.methods.
"""
from relaxkd.losses.distill import AGGREGATORS, adaptive_teacher_weights, aggregate_teacher_logits
from relaxkd.losses.kd import dkd_loss, kd_loss, standardize_logits
from relaxkd.losses.multimodal import cosine_regularization, hierarchical_loss, multimodal_teacher_loss

__all__ = [
    "AGGREGATORS",
    "adaptive_teacher_weights",
    "aggregate_teacher_logits",
    "cosine_regularization",
    "dkd_loss",
    "hierarchical_loss",
    "kd_loss",
    "multimodal_teacher_loss",
    "standardize_logits",
]
