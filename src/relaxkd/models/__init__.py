"""Backbones registry, multimodal fusion heads, the relaxed text bank and teacher ensembles."""
from relaxkd.models.backbones import BACKBONES, BackboneSpec, TinyCNN, build_backbone
from relaxkd.models.ensemble import TeacherEnsemble
from relaxkd.models.fusion import FUSION_HEADS, MLPHead, ResNet50OneByOneHead, build_fusion_head, init_head_from_imagenet
from relaxkd.models.text_bank import TextBank

__all__ = [
    "BACKBONES",
    "FUSION_HEADS",
    "BackboneSpec",
    "MLPHead",
    "ResNet50OneByOneHead",
    "TeacherEnsemble",
    "TextBank",
    "TinyCNN",
    "build_backbone",
    "build_fusion_head",
    "init_head_from_imagenet",
]
