"""Named intermediate features of a model, captured with forward hooks.

A feature name is a submodule path (``layer3``, ``features.1``, ``blocks.2``) or ``penultimate``:
the input of the classifier (``fc`` or timm's ``head``). ``FeatureTap(model, names)`` hooks them
once; after each forward ``tap.collect()`` returns (and forgets) the captured tensors.
"""
from __future__ import annotations

from torch import Tensor, nn

from relaxkd.errors import UserError

PENULTIMATE = "penultimate"


def classifier_of(model: nn.Module) -> nn.Module:
    for name in ("fc", "head"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Module):
            return layer
    raise UserError(
        f"{type(model).__name__} has no classifier named fc or head; request a submodule path instead of {PENULTIMATE!r}"
    )


class FeatureTap:
    def __init__(self, model: nn.Module, names: tuple[str, ...] | list[str]):
        self.names = tuple(names)
        self._captured: dict[str, Tensor] = {}
        self._handles = []
        modules = dict(model.named_modules())
        for name in self.names:
            if name == PENULTIMATE:
                self._handles.append(classifier_of(model).register_forward_pre_hook(self._pre_hook(name)))
                continue
            if name not in modules:
                valid = ", ".join([PENULTIMATE, *[n for n, _ in model.named_children()]])
                raise UserError(f"unknown feature {name!r} of {type(model).__name__}; valid names include: {valid}")
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self._captured[name] = output

        return hook

    def _pre_hook(self, name: str):
        def hook(module, inputs):
            self._captured[name] = inputs[0]

        return hook

    def collect(self) -> dict[str, Tensor]:
        captured, self._captured = self._captured, {}
        return captured

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
