"""Names that several layers share, defined once."""

#: the multimodal teacher T_x's name: in ``distill.teachers``, in a ``TeacherSet``, in sweep records
TX = "tx"
