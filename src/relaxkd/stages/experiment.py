"""Whole experiments: attribution, the full pipeline (`run`) and the paper's trial families (`sweep`)."""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from relaxkd.config import load_config
from relaxkd.errors import UserError
from relaxkd.stages.artifacts import Artifact, write_json
from relaxkd.stages.pipeline import Pipeline, log


# -- attribution -------------------------------------------------------------------------------
def attribute_stage(p: Pipeline) -> Artifact:
    tx = p.multimodal()
    images = p.embed_images()
    a = p.cfg.attribute
    spec = {"teacher": tx.key, "attribute": a.model_dump(), "seed": p.cfg.seed}

    def build(out: Path) -> None:
        from relaxkd.attribute import attribution_shares

        module = p.load_multimodal(tx)
        emb = load_file(str(images.file("embeddings.safetensors")))
        val, labels = emb["val"].float(), emb["val_labels"].long()
        indices = torch.arange(len(labels))
        if a.num_samples is not None and a.num_samples < len(labels):
            generator = torch.Generator().manual_seed(p.cfg.seed)
            indices = torch.randperm(len(labels), generator=generator)[: a.num_samples].sort().values
        with torch.no_grad():
            modes, noise = module.sample_text(indices, "val")
            text = module.text_embeddings(val[indices], labels[indices], modes, noise)
            fused = module.fuse(val[indices], text)
        result = attribution_shares(module, fused, labels[indices], val.shape[1], a.steps, a.batch_size)
        write_json(out / "attribution.json", {**result, "method": "integrated_gradients", "steps": a.steps, "baseline": "zero", "provenance": p.provenance()})

    return p._stage(p.store, "attribute", spec, build)


# -- the whole pipeline ------------------------------------------------------------------------
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


def pipeline_stages(p: Pipeline) -> list[tuple[str, Callable[[], Artifact]]]:
    cfg = p.cfg
    stages: list[tuple[str, Callable[[], Artifact]]] = [("embed images", p.embed_images)]
    uses_tx = "tx" in cfg.distill.teachers and cfg.distill.loss != "none"
    if uses_tx and cfg.multimodal.proportions.get("wn", 0) > 0:
        stages += [("embed nouns", p.embed_nouns), ("relax", p.relax)]
    for name in cfg.distill.teachers if cfg.distill.loss != "none" else []:
        if name != "tx":
            stages.append((f"teacher {name}", lambda n=name: p.unimodal(n)))
    if uses_tx:
        stages += [("teacher tx", p.multimodal), ("attribute", lambda: attribute_stage(p))]
    stages.append(("distill", p.distill))
    return stages


def run_experiment(p: Pipeline) -> Path:
    from relaxkd.report import write_report

    stages = pipeline_stages(p)
    stages += [(f"sweep {family}", lambda f=family: run_sweep(p, f)) for family in p.cfg.sweeps]
    progress = StageProgress([n for n, _ in stages] + ["report"])
    for name, fn in stages:
        progress.run(name, fn)
    log(f"stage {len(stages) + 1}/{len(stages) + 1}: report")
    return write_report(p.cfg.run_dir)


# -- sweeps ------------------------------------------------------------------------------------
@dataclass
class Trial:
    name: str
    overrides: list[str]
    #: what the trial needs beyond shared artifacts: "tx", "attribute", "distill"
    stages: tuple[str, ...]
    labels: dict[str, object] = field(default_factory=dict)


def _props(**proportions: float) -> str:
    body = ", ".join(f"{k}: {v:g}" for k, v in proportions.items() if v > 0)
    return f"multimodal.proportions={{{body}}}"


def table2_trials() -> list[Trial]:
    trials = []
    for other, gts in (("wn", (1.0, 0.8, 0.5, 0.2, 0.0)), ("noise", (0.8, 0.5, 0.2, 0.0))):
        for gt in gts:
            rest = round(1.0 - gt, 6)
            base = f"gt{int(gt * 100)}-{other}{int(rest * 100)}"
            props = _props(gt=gt, **{other: rest})
            labels = {"gt": gt, "other": other, "other_share": rest}
            trials.append(Trial(f"{base}/tx-s", [props, "distill.teachers=[tx]"], ("tx", "attribute", "distill"), {**labels, "teachers": "T_x S_s"}))
            trials.append(Trial(f"{base}/tm-tx-s", [props, "distill.teachers=[strong, weak, tx]"], ("distill",), {**labels, "teachers": "T_m T_x S_s"}))
    return trials


def figure2_trials() -> list[Trial]:
    return [
        Trial(f"text-only-wn{int(wn * 100)}", [_props(gt=round(1 - wn, 6), wn=wn), "multimodal.text_only=true"], ("tx", "attribute"), {"wn": wn})
        for wn in (0.0, 0.2, 0.5, 0.8, 1.0)
    ]


def table3_trials() -> list[Trial]:
    return [
        Trial(f"bank-{bank}", [f"multimodal.bank={bank}", "distill.teachers=[strong, weak, tx]"], ("tx", "attribute", "distill"), {"bank": bank})
        for bank in ("fixed", "learnable")
    ]


def table1_trials() -> list[Trial]:
    methods = {
        "ours": ["distill.teachers=[strong, weak, tx]", "distill.loss=kd"],
        "ensemble-kd": ["distill.teachers=[strong, weak, strong2]", "distill.loss=kd"],
        "zscore-kd": ["distill.teachers=[strong, weak, strong2]", "distill.loss=zscore"],
        "dkd": ["distill.teachers=[strong]", "distill.loss=dkd"],
        "vanilla-kd": ["distill.teachers=[strong]", "distill.loss=kd"],
        "no-kd": ["distill.loss=none"],
    }
    return [Trial(name, ov, ("distill",), {"method": name}) for name, ov in methods.items()]


SWEEPS: dict[str, Callable[[], list[Trial]]] = {
    "table1": table1_trials,
    "table2": table2_trials,
    "table3": table3_trials,
    "figure2": figure2_trials,
}


def select_trials(family: str, names: str | None) -> list[Trial]:
    if family not in SWEEPS:
        raise UserError(f"unknown sweep family {family!r}; valid families: {', '.join(SWEEPS)}")
    trials = SWEEPS[family]()
    if names is None:
        return trials
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {t.name: t for t in trials}
    for name in wanted:
        if name not in known:
            raise UserError(f"unknown trial {name!r} in sweep {family}; valid trials: {', '.join(known)}")
    return [known[n] for n in wanted]


def sweep_commands(config: Path, overrides: list[str], family: str, names: str | None) -> list[str]:
    """One independent command per trial, for a cluster scheduler (artifacts are shared by hash)."""
    return [
        shlex.join(["relaxkd", "sweep", str(config), *overrides, "--family", family, "--trials", t.name])
        for t in select_trials(family, names)
    ]


def run_sweep(p: Pipeline, family: str, names: str | None = None) -> None:
    """Run the trials of one family on top of ``p``'s config; record them for the report."""
    from relaxkd.config import apply_overrides, build_config

    trials = select_trials(family, names)
    record_path = p.cfg.run_dir / f"sweep-{family}.json"
    record = _read_record(record_path)
    progress = StageProgress([t.name for t in trials])
    for trial in trials:
        stages = [s for s in trial.stages if s != "distill" or p.cfg.sweep_students]
        if not stages:
            continue
        tp = Pipeline(build_config(apply_overrides(p.cfg.to_dict(), list(trial.overrides))))
        tp._resolved = p._resolved  # share verified artifacts across trials

        def execute(tp: Pipeline = tp, trial: Trial = trial, stages: list[str] = stages) -> None:
            found: dict[str, str] = {}
            if "tx" in stages:
                found["tx"] = str(tp.multimodal().path)
            if "attribute" in stages:
                found["attribute"] = str(attribute_stage(tp).path)
            if "distill" in stages:
                found["distill"] = str(tp.distill().path)
            record[trial.name] = {"labels": trial.labels, "artifacts": found, "overrides": trial.overrides}
            write_json(record_path, record)

        progress.run(f"{family} trial {trial.name}", execute)


def _read_record(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
