"""The config's ``launcher`` section: what each stage kind asks a SLURM cluster for.

Resources are resolved per stage kind (the artifact stage's name, or ``report``): the built-in
:data:`STAGE_DEFAULTS` (training stages one GPU; noun embedding and Algorithm 1 CPUs and memory),
then ``launcher.slurm.resources.default``, then ``launcher.slurm.resources.<stage>``, field by field.
Nothing here changes a result: the section stays out of the config's dumps while at its defaults.
"""
from __future__ import annotations

import re

from pydantic import Field, field_validator

from relaxkd.schema import Strict

#: SLURM's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$")


class SlurmResources(Strict):
    """One stage kind's request (unset fields: the next level's value)."""

    #: GPUs per node (0: a CPU-only job)
    gpus: int | None = Field(None, ge=0)
    #: CPUs per task
    cpus: int | None = Field(None, gt=0)
    #: memory per node, as sbatch's --mem (e.g. 32G)
    mem: str | None = None
    #: time limit, as sbatch's --time (e.g. 1-00:00:00)
    time: str | None = None

    @field_validator("mem")
    @classmethod
    def _mem(cls, mem: str | None) -> str | None:
        if mem is not None and not _MEM.match(mem):
            raise ValueError(f"{mem!r} is not a SLURM memory size; use e.g. 4000M, 32G")
        return mem

    @field_validator("time")
    @classmethod
    def _time(cls, time: str | None) -> str | None:
        if time is not None and not _TIME.match(time):
            raise ValueError(f"{time!r} is not a SLURM time; use minutes, HH:MM:SS or D-HH:MM:SS")
        return time


_TRAIN = SlurmResources(gpus=1, cpus=8, mem="32G", time="1-00:00:00")
_ENCODE = SlurmResources(gpus=1, cpus=8, mem="32G", time="4:00:00")
_CPU = SlurmResources(gpus=0, cpus=16, mem="64G", time="4:00:00")
#: what each stage kind asks for unless the config says otherwise
STAGE_DEFAULTS: dict[str, SlurmResources] = {
    "embed-images": _ENCODE,
    "tx-views": _ENCODE,
    "embed-nouns": _CPU,
    "relax": _CPU,
    "teacher-unimodal": _TRAIN,
    "teacher-expert": _TRAIN,
    "teacher-multimodal": _TRAIN,
    "teacher-targets": _ENCODE,
    "dmae-pretrain": _TRAIN,
    "distill": _TRAIN,
    "attribute": _ENCODE,
    "report": SlurmResources(gpus=0, cpus=2, mem="8G", time="2:00:00"),
}
_FALLBACK = _TRAIN


class SlurmSettings(Strict):
    #: partition (sbatch -p); null: the cluster's default
    partition: str | None = None
    #: account to charge (sbatch -A); null: the user's default
    account: str | None = None
    #: quality of service (sbatch --qos); null: the default
    qos: str | None = None
    #: seconds before the time limit at which a job checkpoints and requeues itself (sbatch --signal)
    signal_seconds: int = Field(300, gt=0)
    #: further sbatch arguments for every job, e.g. [--constraint=a100, --exclusive]
    sbatch_args: list[str] = Field(default_factory=list)
    #: per stage kind (or `default` for all): gpus, cpus, mem, time
    resources: dict[str, SlurmResources] = Field(default_factory=dict)

    @field_validator("resources")
    @classmethod
    def _known_kinds(cls, resources: dict[str, SlurmResources]) -> dict[str, SlurmResources]:
        for kind in resources:
            if kind != "default" and kind not in STAGE_DEFAULTS:
                raise ValueError(f"unknown stage kind {kind!r}; valid kinds: default, {', '.join(STAGE_DEFAULTS)}")
        return resources

    def resources_for(self, kind: str) -> SlurmResources:
        """The request of ``kind``: built-in default < ``resources.default`` < ``resources.<kind>``."""
        merged = STAGE_DEFAULTS.get(kind, _FALLBACK).model_dump()
        for level in (self.resources.get("default"), self.resources.get(kind)):
            if level is not None:
                merged.update(level.model_dump(exclude_none=True))
        return SlurmResources(**merged)


class LauncherConfig(Strict):
    #: resources, account and time limits of the jobs of `--launcher slurm`
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
