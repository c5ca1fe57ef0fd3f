"""Student distillation from a set of frozen teachers (DESIGN §2.7)."""
from relaxkd.distill.student import StudentDistiller, TeacherSet

__all__ = ["StudentDistiller", "TeacherSet"]
