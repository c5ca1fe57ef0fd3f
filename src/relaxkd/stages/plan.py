"""The order of the stages, declared once, and running them (an experiment, a sweep's trials) with one
progress display.

``pipeline_stages`` lists the stages one experiment needs, in order; ``TRIAL_STAGES`` the stages a
sweep trial may ask for, in the same order. To add a stage: write ``stages/<name>.py`` exposing
``<name>(ctx) -> Artifact`` (its spec next to its build) and list it here.
"""
from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Callable

from relaxkd.artifacts import Artifact, write_json
from relaxkd.config import ExperimentConfig, apply_overrides, build_config
from relaxkd.names import TX
from relaxkd.stages.attribute import attribute
from relaxkd.stages.context import Context, log
from relaxkd.stages.distill import distill
from relaxkd.stages.dmae_pretrain import dmae_pretrain
from relaxkd.stages.embed_images import embed_images
from relaxkd.stages.embed_nouns import embed_nouns
from relaxkd.stages.multimodal import multimodal_teacher, needs_bank
from relaxkd.stages.relax import relax
from relaxkd.stages.teacher_loading import teacher_artifact
from relaxkd.trials import Trial, select_trials

Step = tuple[str, Callable[[Context], Artifact]]

#: the stages a sweep trial may name (``Trial.stages``), in pipeline order
TRIAL_STAGES: dict[str, Callable[[Context], Artifact]] = {TX: multimodal_teacher, "attribute": attribute, "distill": distill}


def uses_tx(cfg: ExperimentConfig) -> bool:
    return TX in cfg.distill.teachers and cfg.distill.loss != "none"


def pipeline_stages(cfg: ExperimentConfig) -> list[Step]:
    """The stages of one experiment, in order (each also builds any input it finds missing)."""
    stages: list[Step] = [("embed images", embed_images)]
    if uses_tx(cfg) and needs_bank(cfg):
        stages += [("embed nouns", embed_nouns), ("relax", relax)]
    for name in cfg.distill.teachers if cfg.distill.loss != "none" else []:
        if name != TX:
            stages.append((f"teacher {name}", partial(teacher_artifact, name=name)))
    if uses_tx(cfg):
        stages += [(f"teacher {TX}", multimodal_teacher), ("attribute", attribute)]
    if cfg.distill.loss == "dmae":
        stages.append(("dmae pre-training", dmae_pretrain))
    stages.append(("distill", distill))
    return stages


class StageProgress:
    """One progress display across stages, with an estimate of the remaining time."""

    def __init__(self, names: list[str]):
        self.names, self.started, self.done = names, time.time(), 0

    def run(self, name: str, fn: Callable[[], object]) -> object:
        elapsed = time.time() - self.started
        remaining = len(self.names) - self.done
        eta = f", about {elapsed / self.done * remaining / 60:.1f} min left" if self.done else ""
        log(f"stage {self.done + 1}/{len(self.names)}: {name}{eta}")
        result = fn()
        self.done += 1
        return result


def run_experiment(ctx: Context, then: list[tuple[str, Callable[[], object]]] = ()) -> object:
    """Every stage of the experiment, then its sweeps, then ``then`` (the command line's report);
    returns the last result."""
    steps: list[tuple[str, Callable[[], object]]] = [(name, partial(fn, ctx)) for name, fn in pipeline_stages(ctx.cfg)]
    steps += [(f"sweep {family}", partial(run_sweep, ctx, family)) for family in ctx.cfg.sweeps]
    steps += list(then)
    progress = StageProgress([name for name, _ in steps])
    result = None
    for name, fn in steps:
        result = progress.run(name, fn)
    return result


def run_sweep(ctx: Context, family: str, names: str | None = None) -> None:
    """Run the trials of one family on top of ``ctx``'s config; record them in ``sweep-<family>.json``."""
    trials = select_trials(family, names)
    record_path = ctx.cfg.run_dir / f"sweep-{family}.json"
    record = _read_record(record_path)
    progress = StageProgress([t.name for t in trials])
    for trial in trials:
        stages = [s for s in TRIAL_STAGES if s in trial.stages and (s != "distill" or ctx.cfg.sweep_students)]
        if not stages:
            continue
        trial_ctx = ctx.derive(build_config(apply_overrides(ctx.cfg.to_dict(), list(trial.overrides))))

        def execute(trial_ctx: Context = trial_ctx, trial: Trial = trial, stages: list[str] = stages) -> None:
            found = {stage: str(TRIAL_STAGES[stage](trial_ctx).path) for stage in stages}
            record[trial.name] = {"labels": trial.labels, "artifacts": found, "overrides": trial.overrides}
            write_json(record_path, record)

        progress.run(f"{family} trial {trial.name}", execute)


def _read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
