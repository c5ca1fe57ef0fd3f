"""Frozen teacher ensembles evaluated as one batched computation."""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state


def _same_architecture(models: Sequence[nn.Module]) -> bool:
    def signature(model: nn.Module):
        return type(model), [
            (key, value.shape, value.dtype) for key, value in model.state_dict(keep_vars=True).items()
        ]

    first = signature(models[0])
    return all(signature(model) == first for model in models[1:])


class TeacherEnsemble(nn.Module):
    """Frozen, always-eval teachers; ``forward(x)`` returns logits ``[T, B, C]``.

    Same-architecture teachers are stacked (``torch.func.stack_module_state``) and run as one
    ``vmap``-ed ``functional_call``; mixed architectures fall back to a loop. The teachers' weights
    are not part of this module's ``state_dict`` (they live in their own artifacts) and get no
    gradients, but ``.to()``/``.cuda()``/``.half()`` move them. ``input_stats`` lists each
    teacher's input statistics name (None where a teacher does not say).
    """

    def __init__(self, teachers: Sequence[nn.Module]):
        super().__init__()
        if len(teachers) == 0:
            raise ValueError("TeacherEnsemble needs at least one teacher")
        teachers = [teacher.eval().requires_grad_(False) for teacher in teachers]
        self.num_teachers = len(teachers)
        self.batched = len(teachers) > 1 and _same_architecture(teachers)
        self.input_stats = [getattr(teacher, "input_stats", None) for teacher in teachers]
        # Teacher weights are plain attributes, not parameters/buffers/submodules: they stay out
        # of state_dict(), parameters() and DDP's buffer broadcast; _apply still moves them.
        self._loop_teachers: list[nn.Module] = []
        self._stacked_params: dict[str, Tensor] = {}
        self._stacked_buffers: dict[str, Tensor] = {}
        if self.batched:
            params, buffers = stack_module_state(teachers)
            self._stacked_params = {name: value.detach() for name, value in params.items()}
            self._stacked_buffers = dict(buffers)
            # A weightless copy that only supplies the forward code; in a tuple so that .to()
            # never touches its meta tensors.
            self._skeleton = (copy.deepcopy(teachers[0]).to("meta").eval(),)
        else:
            self._loop_teachers = teachers

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._stacked_params = {name: fn(value) for name, value in self._stacked_params.items()}
        self._stacked_buffers = {name: fn(value) for name, value in self._stacked_buffers.items()}
        for teacher in self._loop_teachers:
            teacher._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> "TeacherEnsemble":
        # Teachers stay in eval mode (BatchNorm statistics, no dropout) whatever the parent does.
        super().train(mode)
        for teacher in self._loop_teachers:
            teacher.eval()
        return self

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if not self.batched:
            return torch.stack([teacher(x) for teacher in self._loop_teachers])
        skeleton = self._skeleton[0]

        def run_one(member_params, member_buffers, inputs):
            return functional_call(skeleton, (member_params, member_buffers), (inputs,))

        return torch.vmap(run_one, in_dims=(0, 0, None))(self._stacked_params, self._stacked_buffers, x)
