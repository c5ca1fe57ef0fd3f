"""``docs/config.md``: every config key with its type, default and meaning, generated from the schema.

    python -m relaxkd.configdoc > docs/config.md      (or `make docs`)

A key's meaning is, in order: the pydantic field's ``description``, the ``#:`` comment on the lines
just above the field in ``config.py``, or an entry of :data:`MEANINGS` below. A test fails when
``docs/config.md`` differs from what this module generates, or when a key has no meaning.
"""
from __future__ import annotations

import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

#: meanings of keys whose field carries neither a description nor a ``#:`` comment
MEANINGS: dict[str, str] = {
    "profile": "paper (default: the paper decides) or authors_code: the released code wherever it differs, every point at once "
               "(docs/reproduction.md)",
    "distill.released_code": "the released student loop: teachers in train mode, adaptive weights from 1/3, from the student's "
                             "train-mode validation loss, per-batch means",
    "name": "run name: artifacts go to `<run_root>/<name>/`. Default: the config file's name, or the data root's folder name "
            "when `data.dataset`/`data.root` are overridden on the command line",
    "seed": "seed of everything the run trains (text-mode split, k-means, T_x, student init and views)",
    "seeds": "seeds of sweep trials: each trial runs once per seed and reports mean ± std (empty: `seed` only)",
    "run_root": "folder holding one directory per run",
    "data": "the dataset",
    "data.dataset": "dataset format: cifar100, cifar100_lt, imagenet, imagenet_lt, scene, utkface, imagefolder, csv, digits "
                    "(bundled)",
    "data.root": "dataset folder (for imagefolder: `train/<class>/*` and `val/<class>/*`); not needed for digits",
    "data.download": "download the dataset when missing (cifar100 only)",
    "data.params": "extra dataset options, e.g. `{target: race}` for utkface",
    "data.image_size": "training/eval image side in pixels for the image teachers and the student",
    "data.synset_overrides": "YAML file of `class_name: synset.n.NN` lines choosing each class's WordNet sense",
    "data.num_workers": "DataLoader worker processes (0: load in the main process)",
    "clip": "the CLIP model behind T_x",
    "clip.model": "open_clip architecture name (relaxkd-tiny: a small random model for tests and the demo)",
    "clip.weights": "open_clip pretrained tag (openai), a weights file, or none (random init, seeded)",
    "clip.batch_size": "images/words per CLIP forward pass when embedding",
    "clip.precision": "CLIP inference precision (auto: bf16 on GPUs that support it, else fp32)",
    "nouns": "the candidate WordNet nouns of Algorithm 1",
    "nouns.candidates": "all: every WordNet 3.0 noun lemma; neighbourhood: synonyms, hypernyms and hyponyms of the class synsets",
    "nouns.hypernym_depth": "hypernym levels above each class synset (neighbourhood candidates)",
    "nouns.exclude_class_names": "drop the exact class names from the candidates",
    "relax": "Algorithm 1 (WordNet-relaxed noun selection)",
    "relax.num_clusters": "k-means clusters M; default round(N_train / 300), never fewer than the number of classes unless "
                          "relax.class_floor is false",
    "relax.top_k": "nouns kept per cluster",
    "relax.iterations": "spherical k-means iterations",
    "relax.restarts": "k-means restarts (the best inertia wins)",
    "relax.sample_size": "cluster a random subset of this many training embeddings (None: all)",
    "relax.class_floor": "never fewer clusters than classes (own small datasets, with a warning); the paper's configs: false",
    "relax.max_points_per_centroid": "faiss's cap on training points per centre (null: every point; the authors' code: 256)",
    "unimodal": "the image teachers T_m",
    "unimodal.arch": "backbone (resnet50, resnet18, tiny_cnn)",
    "unimodal.weights": "initial weights: imagenet, none (random) or a state-dict file",
    "unimodal.members": "the ensemble members: name, augmentation (strong/weak) and seed of each",
    "unimodal.optim": "training schedule of every T_m member",
    "multimodal": "the multimodal teacher T_x",
    "multimodal.head": "classifier over [image emb., text emb.]: mlp or resnet50-1x1",
    "multimodal.hidden_dim": "width of the mlp head's hidden layers",
    "multimodal.dropout": "dropout of the mlp head",
    "multimodal.proportions": "share of samples per text mode: gt (class name), wn (relaxed bank), noise (random class name), "
                              "none",
    "multimodal.text_split": "gt/wn split per sample (seeded; default) or per batch (the released code: the first p of each "
                             "epoch's batches gt)",
    "multimodal.bank_dtype": "the relaxed bank's precision between steps: fp32, or fp16 as the released code",
    "multimodal.noise": "noise samples: label (relabelled once to a random class: its name and CE target, as the released code) "
                        "or text (random class name only)",
    "multimodal.bank": "relaxed bank learnable (paper) or fixed at its CLIP embeddings (Table 3's n_pretrained)",
    "multimodal.preset": "eq. 6 weights: paper (λ_hier 0.1, λ_cos 0.01) or authors_code (0.2, 0.005)",
    "multimodal.lambda_hier": "weight of the hierarchical loss (wn samples' text pulled towards the class name)",
    "multimodal.lambda_cos": "weight of the cosine regulariser keeping the bank near its CLIP embeddings",
    "multimodal.bank_weight_decay": "weight decay of the bank parameters",
    "multimodal.temperature": "softmax temperature of the wn mode's soft retrieval from the relaxed bank",
    "multimodal.optim": "training schedule of T_x",
    "distill": "the student and how it is distilled",
    "distill.student": "student backbone (resnet18 in the paper)",
    "distill.loss": "kd (Hinton), zscore (logit-standardised KD), dkd (decoupled KD) or none (no teacher)",
    "distill.aggregate": "how teachers combine: mean_logits (eq. 1), mean_losses (authors' code) or adaptive",
    "distill.preset": "eq. 2-3 weights: paper (CE 1, KD 1, τ 4) or authors_code (CE 0.6, KD 0.4, τ 3, mean_losses)",
    "distill.temperature": "KD temperature τ",
    "distill.ce_weight": "weight of the cross-entropy term",
    "distill.kd_weight": "weight of the KD term",
    "distill.dkd_alpha": "DKD target-class weight α",
    "distill.dkd_beta": "DKD non-target-class weight β",
    "distill.optim": "training schedule of the student",
    "attribute": "Integrated Gradients on T_x (image vs text shares)",
    "attribute.steps": "integration steps",
    "attribute.batch_size": "samples per attribution batch",
    "trainer": "Lightning trainer settings shared by every training stage",
    "trainer.accelerator": "cpu, gpu, auto, …",
    "trainer.devices": "number of devices (or auto)",
    "trainer.num_nodes": "number of machines",
    "trainer.strategy": "auto, ddp, …",
    "trainer.accumulate_grad_batches": "gradient accumulation steps",
    "trainer.deterministic": "deterministic kernels (reproducible runs)",
    "trainer.progress": "progress display: a bar on a terminal, one line per epoch otherwise",
    "trainer.logger": "per-epoch metrics log in each stage's work folder",
    "optim.epochs": "training epochs",
    "optim.batch_size": "batch size",
    "optim.lr": "peak SGD learning rate",
    "optim.momentum": "SGD momentum",
    "optim.weight_decay": "SGD weight decay",
    "optim.warmup_epochs": "linear warm-up epochs",
    "optim.milestones": "epochs at which the learning rate is multiplied by gamma",
    "optim.gamma": "learning-rate decay factor at each milestone",
    "members.name": "member name, used in distill.teachers",
    "members.aug": "augmentation: strong (AutoAugment/RandAugment + Cutout) or weak (crop, flip, jitter)",
    "members.seed": "the member's own seed (initialisation and views)",
}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _list_model(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is list:
        args = typing.get_args(annotation)
        if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return args[0]
    return None


def field_type(field: Any) -> str:
    """A field's type for the table; path settings (schema.UserPath: ``~`` expanded) say so."""
    from relaxkd.schema import expand_home

    if any(getattr(m, "func", None) is expand_home for m in field.metadata):  # pydantic unwraps a bare UserPath
        return "path"
    return type_name(field.annotation)


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:  # UserPath | None keeps its Annotated inside the union
        from relaxkd.schema import UserPath

        return "path" if annotation == UserPath else type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _default(field) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        return field.default_factory()
    return PydanticUndefined


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def default_text(value: Any) -> str:
    if value is PydanticUndefined:
        return "required"
    value = _plain(value)
    if value is None:
        return "`null`"
    return "`" + json.dumps(value, ensure_ascii=False).replace("|", "\\|") + "`"


_COMMENT = re.compile(r"^\s*#:\s?(.*)$")
_FIELD = re.compile(r"^\s*(\w+)\s*:")


def source_comments(model: type[BaseModel]) -> dict[str, str]:
    """``#:`` comments directly above each field of ``model``'s class body."""
    try:
        lines = inspect.getsource(model).splitlines()
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        comment = _COMMENT.match(line)
        if comment:
            pending.append(comment.group(1).strip())
            continue
        field = _FIELD.match(line)
        if field and pending and field.group(1) in model.model_fields:
            found[field.group(1)] = " ".join(pending)
        pending = []
    return found


def meaning(model: type[BaseModel], name: str, path: str) -> str:
    field = model.model_fields[name]
    if field.description:
        return field.description
    comment = source_comments(model).get(name)
    if comment:
        return comment
    for key in (path, f"{model.__name__.removesuffix('Config').lower()}.{name}"):
        if key in MEANINGS:
            return MEANINGS[key]
    tail = ".".join(path.split(".")[-2:])
    for key, text in MEANINGS.items():  # e.g. unimodal.optim.lr -> optim.lr; unimodal.members.seed -> members.seed
        if key == tail or (key.startswith(("optim.", "members.")) and path.endswith("." + key)):
            return text
    return ""


def rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str, bool]]:
    """(key, type, default, meaning, is_section) for every field, sections before their keys."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        sub = _model_of(field.annotation)
        if sub is not None and _list_model(field.annotation) is None:
            yield path, "section", "", meaning(model, name, path), True
            yield from rows(sub, path + ".")
            continue
        item = _list_model(field.annotation)
        kind = f"list of {{{', '.join(item.model_fields)}}}" if item else field_type(field)
        yield path, kind, default_text(_default(field)), meaning(model, name, path), False
        if item is not None:
            for sub_name, sub_field in item.model_fields.items():
                sub_path = f"{path}[].{sub_name}"
                yield (sub_path, field_type(sub_field), default_text(_default(sub_field)),
                       meaning(item, sub_name, f"{path}.{sub_name}"), False)


def generate() -> str:
    from relaxkd.config import ExperimentConfig

    lines = [
        "# Configuration keys",
        "",
        "<!-- generated by `python -m relaxkd.configdoc > docs/config.md` (`make docs`); do not edit: "
        "tests/test_configdoc.py fails when this file is stale -->",
        "",
        "Every key of an experiment config (`configs/*.yaml`), with its type, its default and what it",
        "means. Set keys in the YAML file or on the command line as dotted `key=value` overrides",
        "(`relaxkd run configs/demo.yaml distill.temperature=3 'multimodal.proportions={gt: 0.2, wn: 0.8}'`).",
        "Unknown keys and invalid values are rejected before any work starts. Defaults below are the",
        "schema's (the paper's protocol where it states one); each config file overrides some of them:",
        "`relaxkd validate CONFIG` prints the resolved values. A `path` key (weights keys also take",
        "the tags their meaning lists) has a leading `~` expanded to the home folder, as have the paths",
        "given to commands (`--out`, `--model`, ...); a section set to null is refused (leave it out).",
        "",
    ]
    top = [r for r in rows(ExperimentConfig) if "." not in r[0]]
    sections: list[tuple[str, list]] = [("Top level", [r for r in top if not r[4]])]
    for key, _, _, text, is_section in top:
        if is_section:
            sections.append(
                (
                    f"`{key}`: {text}" if text else f"`{key}`",
                    [r for r in rows(ExperimentConfig) if r[0].startswith(key + ".") and not r[4]],
                )
            )
    for title, section_rows in sections:
        lines += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{k}` | {t} | {d} | {m} |" for k, t, d, m, _ in section_rows]
        lines.append("")
    return "\n".join(lines)


def missing_meanings() -> list[str]:
    from relaxkd.config import ExperimentConfig

    return [key for key, _, _, text, _ in rows(ExperimentConfig) if not text]


if __name__ == "__main__":
    sys.stdout.write(generate())
