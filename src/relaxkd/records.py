"""The record files a trained artifact holds, as one typed model each: ``teacher.json`` /
``student.json`` (:class:`ModelInfo`: what the model is) and ``metrics.json`` (:class:`Metrics`: its
last epoch's validation numbers, the history and :class:`Provenance`).

The stages write them through these models (stages/specs.py), so a misspelt key fails when the
artifact is built; the report and export read them back through the same models, so a key renamed
on one side is a validation error naming it, not an empty cell. A record written before a field
existed reads with that field unset.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from relaxkd.errors import UserError


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelInfo(_Record):
    """``teacher.json`` / ``student.json``: what a trained model is and the classes it predicts."""

    kind: Literal["unimodal", "multimodal", "student"]
    dataset: str
    num_classes: int
    classes: list[str]
    #: a teacher's name in ``distill.teachers`` (T_m members, LFME's experts)
    name: str | None = None
    arch: str | None = None
    aug: str | None = None
    #: LFME's experts: their shot group and its classes
    subset: str | None = None
    subset_classes: list[int] | None = None
    #: T_x: the keyword arguments that rebuild its module
    hparams: dict[str, Any] | None = None
    #: students: the statistics and size their input images are prepared with
    input_stats: str | None = None
    image_size: int | None = None


class Provenance(_Record):
    """Where a trained model's numbers come from: the run's setting and what its stage recorded."""

    dataset: str
    demo_data: bool
    clip: str
    random_weight_clip: bool
    seed: int
    epochs: int | None = None
    # students
    teachers: list[str] | None = None
    loss: str | None = None
    #: the KD method's resolved parameters (DistillConfig.method_params), as the student trained
    params: dict[str, Any] | None = None
    aggregate: str | None = None
    tx_input: str | None = None
    targets: str | None = None
    # T_x
    input: str | None = None
    proportions: dict[str, float] | None = None
    measured_train_proportions: dict[str, float] | None = None
    measured_val_proportions: dict[str, float] | None = None
    bank: str | None = None
    text_only: bool | None = None
    augment: str | None = None
    head: str | None = None
    head_init: dict[str, Any] | None = None
    noise: str | None = None
    # LFME's experts
    subset: str | None = None
    subset_classes: list[int] | None = None


class Metrics(BaseModel):
    """``metrics.json``. Besides the fields below it holds the last epoch's other values (a method's
    own per-epoch numbers), which are open-ended."""

    model_config = ConfigDict(extra="allow")

    top1: float | None = None
    top5: float | None = None
    many_shot: float | None = None
    medium_shot: float | None = None
    few_shot: float | None = None
    num_samples: int | None = None
    history: list[dict[str, Any]] = []
    provenance: Provenance


R = TypeVar("R", bound=BaseModel)


def written(model: type[R], **values: Any) -> dict[str, Any]:
    """``values`` checked against ``model`` and returned as written to disk (the keys given)."""
    return model.model_validate(values).model_dump(exclude_unset=True)


def read_record(model: type[R], path: str | Path) -> R:
    """The record file ``path`` as ``model``; UserError naming the file and the first bad key."""
    try:
        data = json.loads(Path(path).read_text())
        return model.model_validate(data)
    except (OSError, ValueError) as err:
        if isinstance(err, ValidationError):
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(the file)"
            raise UserError(
                f"record {path}: {where}: {first['msg']}; the artifact was written by another version, rebuild it"
            ) from None
        raise UserError(f"record {path} cannot be read ({err}); rebuild its artifact") from None
