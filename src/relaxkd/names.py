"""Names that several layers share, defined once."""

#: the multimodal teacher T_x's name: in ``distill.teachers``, in a ``TeacherSet``, in sweep records
TX = "tx"

#: T_x's per-sample text modes (docs/method.md §5), in the order of their ids
TEXT_MODES = ("gt", "wn", "noise", "none")

#: LFME's subset experts: one teacher per shot group of a long-tailed training set (many > 100,
#: medium 20-100, few < 20 training images), named ``expert_<group>``
SHOT_GROUPS = ("many", "medium", "few")
EXPERT_TEACHERS = tuple(f"expert_{group}" for group in SHOT_GROUPS)

#: the names of the stages a KD method declares it needs (``KDMethod.stages`` / ``state_from``): the
#: methods name them, the stages' records (stages/dmae_pretrain.py, stages/expert.py) are called so
DMAE_PRETRAIN_STAGE = "dmae-pretrain"
EXPERT_STAGE = "teacher-expert"
