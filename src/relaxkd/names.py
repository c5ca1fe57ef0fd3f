"""Names that several layers share, defined once."""

#: the multimodal teacher T_x's name: in ``distill.teachers``, in a ``TeacherSet``, in sweep records
TX = "tx"

#: T_x's per-sample text modes (docs/method.md §5), in the order of their ids
TEXT_MODES = ("gt", "wn", "noise", "none")
