"""Student distillation from a set of frozen teachers (docs/method.md §8), online or from cached targets."""
from relaxkd.distill.student import StudentDistiller, StudentSettings
from relaxkd.distill.targets import CachedTargets, build_targets
from relaxkd.distill.teacher_set import TeacherSet

__all__ = ["CachedTargets", "StudentDistiller", "StudentSettings", "TeacherSet", "build_targets"]
