"""Checks a config before any work, without importing torch: registry names and the paths it names.

``relaxkd validate`` runs these and finishes in well under 2 s. The name lists below mirror the
registries (a test keeps them equal); a name they do not know falls back to the registries
themselves (slower: they import torch), so plug-ins registered elsewhere still validate.
"""
from __future__ import annotations

from pathlib import Path

from relaxkd.errors import UserError

#: registered names, mirrored here so that validating a config does not import torch
DATASETS = ("cifar100", "cifar100_lt", "csv", "digits", "imagefolder", "imagenet", "imagenet_lt", "scene", "utkface")
BACKBONES = ("resnet18", "resnet50", "tiny_cnn", "vit_base_patch16", "vit_micro", "vit_tiny_patch16")
FUSION_HEADS = ("mlp", "resnet50-1x1")
#: KD methods whose parameters are all shared config fields (checked by the schema itself)
PLAIN_METHODS = ("dkd", "kd", "none", "zscore")
#: every built-in KD method (distill.methods' keys; their settings are validated when a stage starts)
METHODS = ("dkd", "dmae", "ffkd", "kd", "lfme", "none", "zscore")

#: datasets that need no data.root (bundled with a dependency)
BUNDLED = ("digits",)
#: datasets that can fetch themselves with data.download=true
DOWNLOADABLE = ("cifar100", "cifar100_lt")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def check_names(cfg) -> None:
    """Every registry name of ``cfg``; the registries are imported only for names not listed here."""
    known = (
        (cfg.data.dataset, DATASETS),
        (cfg.unimodal.arch, BACKBONES),
        (cfg.distill.student, BACKBONES),
        (cfg.distill.vit_student, BACKBONES),
        (cfg.multimodal.head, FUSION_HEADS),
        *((name, METHODS) for name in cfg.distill.methods),
    )
    # no teachers: only the method can say whether it needs some (config.check_names asks it)
    plain_method = cfg.distill.loss in PLAIN_METHODS and not getattr(cfg.distill, "params", None) and bool(cfg.distill.teachers)
    # data.params are typed by the dataset's own signature (config.check_dataset_params imports it)
    if all(name in names for name, names in known) and plain_method and not cfg.data.params:
        return
    from relaxkd.config import check_names as check_registries

    check_registries(cfg)


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.startswith("~") or value.lower().endswith(_CHECKPOINT_SUFFIXES)


def check_paths(cfg) -> None:
    """The files and folders the config names exist (data.root, overrides, weights files)."""
    d = cfg.data
    if d.dataset not in BUNDLED:
        downloadable = d.download and d.dataset in DOWNLOADABLE
        if not d.root and not downloadable:
            raise UserError(f"dataset {d.dataset!r} needs a data directory: set data.root to the dataset's folder")
        if d.root:
            root = Path(d.root).expanduser()
            if root.exists() and not root.is_dir():
                raise UserError(f"data.root {str(root)!r} is a file, not a folder; set data.root to the dataset's folder")
            if not root.exists() and not downloadable:
                raise UserError(f"data directory {str(root)!r} (data.root) does not exist; set data.root to the dataset's folder")
    if d.synset_overrides:
        path = Path(d.synset_overrides).expanduser()
        if not path.is_file():
            raise UserError(f"synset override file {str(path)!r} (data.synset_overrides) does not exist")
    weights = cfg.unimodal.weights
    if weights not in ("none", "imagenet") and not Path(weights).expanduser().is_file():
        raise UserError(f"unimodal.weights: {weights!r} is not a file; use imagenet, none or a state-dict file")
    clip = cfg.clip.weights
    if clip.startswith("local-dir:"):
        if not Path(clip.removeprefix("local-dir:")).expanduser().is_dir():
            raise UserError(f"clip.weights: folder {clip.removeprefix('local-dir:')!r} does not exist")
    elif not clip.startswith("hf-hub:") and _looks_like_path(clip) and not Path(clip).expanduser().is_file():
        raise UserError(f"clip.weights: file {clip!r} does not exist; use a pretrained tag (openai), none or a weights file")
    for setting in ("run_root", "cache_root"):
        path = Path(getattr(cfg, setting)).expanduser()
        if path.exists() and not path.is_dir():
            raise UserError(f"{setting} {str(path)!r} is a file, not a folder")
