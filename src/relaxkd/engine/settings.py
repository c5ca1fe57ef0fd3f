"""What the engine reads: the optimiser and its schedule, and the Lightning Trainer's settings.

Lightning modules take these as plain dicts (saved with their hyper-parameters) and parse them
here; the experiment config (config.py) embeds the same models as its ``optim`` and ``trainer``
sections, so each setting has one definition.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from relaxkd.schema import Strict


class OptimConfig(Strict):
    """The optimiser (SGD by default, or AdamW) and its per-epoch schedule (engine/optim.py). Defaults: the authors' CIFAR-100
    teachers
    (``script/script_cifar100_regularizerV2.sh``: 61 epochs, ``--lr_steps 25 40 60``, batch 128;
    ``mainCLIPKD_regularizerV2.py``: lr 0.1, momentum 0.9, no weight decay, warm-up 8, γ 0.1)."""

    #: "sgd": SGD with momentum (the authors'); "adamw": torch.optim.AdamW (betas 0.9/0.999, momentum
    #: unused), the recipe of DMAE's main_finetune.py. Left out of the dump while "sgd", so existing
    #: stable-hashed artifact keys do not change.
    optimizer: Literal["sgd", "adamw"] = "sgd"
    stable_defaults = {"optimizer": "sgd", "base_lr": None}
    epochs: int = Field(61, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0)
    #: the authors' SGD has none (only the relaxed bank has its own, multimodal.bank_weight_decay)
    weight_decay: float = Field(0.0, ge=0)
    #: "step": the authors' LambdaLR (absolute milestones, γ per milestone passed);
    #: "cosine": CosineAnnealingLR over cosine_t_max epochs down to min_lr; both train epoch e at the
    #: formula's e + 1, as the authors' scheduler stepped before each epoch. "warmup_cosine": MAE's
    #: and DMAE's linear warm-up over warmup_epochs, then a half cosine to min_lr (engine/optim.py).
    schedule: Literal["step", "cosine", "warmup_cosine"] = "step"
    #: linear warm-up: factor (1 + epoch) / warmup_epochs while epoch < warmup_epochs
    warmup_epochs: int = Field(8, ge=0)
    #: step schedule: epochs (counted from 0) at which the rate is multiplied by gamma
    milestones: list[int] = Field(default_factory=lambda: [25, 40, 60])
    gamma: float = Field(0.1, gt=0)
    #: cosine schedule: period T_max in epochs (None = the number of epochs)
    cosine_t_max: int | None = Field(None, gt=0)
    #: cosine schedule: the floor eta_min the rate decays to
    min_lr: float = Field(0.0, ge=0)

    #: MAE's and DMAE's base rate: when set, lr = base_lr * batch_size / 256 (their linear scaling rule)
    base_lr: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _lr_from_base_lr(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("base_lr") is not None:
            values = {**values, "lr": values["base_lr"] * values.get("batch_size", cls.model_fields["batch_size"].default) / 256}
        return values

    @model_validator(mode="before")
    @classmethod
    def _cosine_has_no_milestones(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("schedule") in ("cosine", "warmup_cosine") and "milestones" not in values:
            values = {**values, "milestones": []}
        return values

    @field_validator("milestones")
    @classmethod
    def _sorted_milestones(cls, milestones: list[int]) -> list[int]:
        if any(m < 0 for m in milestones) or milestones != sorted(milestones):
            raise ValueError(f"milestones must be non-negative epochs in increasing order, got {milestones}")
        return milestones

    @model_validator(mode="after")
    def _schedule_settings(self) -> OptimConfig:
        if self.schedule != "step" and self.milestones:
            raise ValueError(
                f"milestones {self.milestones} apply to schedule 'step' only; drop them for schedule {self.schedule!r}"
            )
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr:g} is larger than lr {self.lr:g}")
        return self


class TrainerConfig(Strict):
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = Field(1, gt=0)
    strategy: str = "auto"
    #: Lightning precision; "auto" = bf16-mixed on GPUs that support it, else 32-true.
    precision: str = "auto"
    accumulate_grad_batches: int = Field(1, gt=0)
    deterministic: bool = True
    progress: bool = True
    logger: Literal["csv", "tensorboard", "none"] = "csv"

    @field_validator("devices")
    @classmethod
    def _devices(cls, devices: int | str) -> int | str:
        text = str(devices).strip()
        if text == "auto" or (isinstance(devices, int) and devices > 0):
            return devices
        if isinstance(devices, str) and text and all(p.strip().isdigit() for p in text.split(",") if p.strip()) and "," in text:
            return devices  # device indices, e.g. "0,1"
        raise ValueError("must be 'auto', a positive number of devices, or device indices like '0,1' "
                         "('auto' uses every device)")
