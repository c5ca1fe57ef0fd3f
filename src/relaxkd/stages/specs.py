"""Spec parts several stages share (what determines the data, the CLIP model, the augmented views,
the training), and the record files every trained artifact writes next to its weights."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from relaxkd.artifacts import file_sha256
from relaxkd.config import ExperimentConfig
from relaxkd.errors import UserError
from relaxkd.records import Metrics, ModelInfo, read_record, written
from relaxkd.schema import omit_defaults

#: datasets shipped with a dependency, used for the offline demo (reports must say so)
DEMO_DATASETS = ("digits",)


def data_spec(ctx) -> dict[str, Any]:
    """What determines the data: its config and, for data read from files, the files themselves
    (``files``: Context.data_fingerprint; absent for data shipped inside a package, e.g. digits)."""
    d = ctx.cfg.data
    root = str(Path(d.root).resolve()) if d.root else None
    spec = {"dataset": d.dataset, "root": root, "params": d.params, "synset_overrides": d.synset_overrides}
    if ctx.data_fingerprint is not None:
        spec["files"] = ctx.data_fingerprint
    return spec


def batch_stage(cfg: ExperimentConfig) -> str:
    """Where training augmentation's batch stage runs (``data.batch_stage``; ``auto``: on the
    device when training on a GPU, in the loader otherwise)."""
    stage = cfg.data.batch_stage
    if stage == "auto":
        on_gpu = torch.cuda.is_available() and str(cfg.trainer.accelerator).lower() in ("auto", "gpu", "cuda")
        stage = "device" if on_gpu else "loader"
    return stage


def augmentation_spec(cfg: ExperimentConfig) -> dict[str, Any]:
    """What determines the random views of training images besides the seed. The device batch
    stage runs tensor ops at every size and on the device's kernels: its views are its own."""
    from relaxkd.data.transforms import AUGMENTATION_VERSION, IMAGENET_STRONG_VERSION

    spec = {"policy": cfg.data.policy, "cutout": cfg.data.cutout, "augmentation": AUGMENTATION_VERSION,
            # the strong ImageNet pipeline's version is read only by that policy
            "imagenet_strong": IMAGENET_STRONG_VERSION if cfg.data.policy == "imagenet" else None,
            "batch_stage": batch_stage(cfg)}
    return omit_defaults(spec, VIEWS_STABLE_DEFAULTS)


#: values the views' spec gained after artifact keys were published, left out while they hold
#: these (the key rule, schema.Strict.stable_defaults)
VIEWS_STABLE_DEFAULTS = {"imagenet_strong": None, "batch_stage": "loader"}


def views_spec(ctx) -> dict[str, Any]:
    """What determines the augmented training views at the data's image size, epoch by epoch."""
    cfg = ctx.cfg
    return {"data": data_spec(ctx), "image_size": cfg.data.image_size, **augmentation_spec(cfg)}


def clip_spec(cfg: ExperimentConfig) -> dict[str, Any]:
    c = cfg.clip
    spec: dict[str, Any] = {"model": c.model, "weights": c.weights}
    if Path(c.weights).is_file():
        spec["weights_sha256"] = file_sha256(Path(c.weights))
    if c.weights == "none":
        spec["seed"] = c.seed  # random init is seeded (clip.seed: the same CLIP whatever the run's seed)
        from importlib.metadata import version

        from relaxkd.clip.loading import TINY_CONFIG, TINY_MODEL

        # a random-weight model is defined by its architecture and the library that builds it
        spec["open_clip"] = version("open_clip_torch")
        if c.model == TINY_MODEL:
            spec["config_sha256"] = file_sha256(TINY_CONFIG)
    return spec


def train_spec(cfg: ExperimentConfig) -> dict[str, Any]:
    from relaxkd.engine.optim import SCHEDULE_VERSION

    t = cfg.trainer
    return {"precision": t.precision, "accumulate_grad_batches": t.accumulate_grad_batches, "schedule": SCHEDULE_VERSION}


def weights_file_hash(weights: str) -> dict[str, str]:
    """A weights file's content, not just its path, determines the artifact (as for clip_spec)."""
    path = Path(weights).expanduser()
    return {"weights_sha256": file_sha256(path)} if weights not in ("none", "imagenet") and path.is_file() else {}


def provenance(cfg: ExperimentConfig) -> dict[str, Any]:
    return {
        "dataset": cfg.data.dataset,
        "demo_data": cfg.data.dataset in DEMO_DATASETS,
        "clip": f"{cfg.clip.model}/{cfg.clip.weights}",
        "random_weight_clip": cfg.clip.weights == "none",
        "seed": cfg.seed,
    }


def model_info(ctx, kind: str, **extra) -> dict[str, Any]:
    """``teacher.json`` / ``student.json`` (records.ModelInfo): what a trained model is and the classes it predicts."""
    return written(ModelInfo, kind=kind, dataset=ctx.cfg.data.dataset, num_classes=ctx.num_classes, classes=ctx.classes, **extra)


def check_teacher(ctx, artifact, name: str) -> ModelInfo:
    """``teacher.json`` of a teacher artifact, refused when it predicts another dataset's classes."""
    info = read_record(ModelInfo, artifact.file("teacher.json"))
    if info.num_classes != ctx.num_classes or info.dataset != ctx.cfg.data.dataset:
        raise UserError(
            f"teacher {name!r} ({artifact.path}) was trained on {info.dataset} with {info.num_classes} classes, "
            f"but this run is {ctx.cfg.data.dataset} with {ctx.num_classes} classes; retrain it for this dataset"
        )
    return info


def metrics(cfg: ExperimentConfig, module, **extra) -> dict[str, Any]:
    """``metrics.json`` (records.Metrics): the last epoch's validation numbers, the history and the provenance."""
    history = module.history
    final = dict(history[-1]) if history else {}
    final.pop("epoch", None)
    return written(Metrics, **final, history=history, provenance={**provenance(cfg), **extra})


def contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}
