"""Teachers: the unimodal image ensemble T_m and the multimodal teacher T_x (Lightning modules)."""
from relaxkd.teachers.multimodal import MultimodalTeacher, TxSettings
from relaxkd.teachers.text_modes import MODE_IDS, assign_noise_classes, assign_text_modes
from relaxkd.teachers.unimodal import UnimodalTeacher

__all__ = ["MODE_IDS", "MultimodalTeacher", "TxSettings", "UnimodalTeacher", "assign_noise_classes", "assign_text_modes"]
