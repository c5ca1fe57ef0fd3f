"""Every setting reaches what it determines (issue 21): for each field of the config schema, changing
it changes the key of an artifact of the demo's graph (its spec holds it, so the stage that reads
it rebuilds), or it is listed below as not determining any result, with the reason. Keys come
from the plan's graph (plan.graph: specs alone, nothing built). That the value then reaches the
module that uses it is shown for the settings that were dropped before: distill.methods /
distill.params (tests/test_distill.py, per-method settings inside the trained student).
"""
from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from relaxkd.config import ExperimentConfig, load_config
from relaxkd.stages.context import Context
from relaxkd.stages.plan import graph

from conftest import REPO, tiny_overrides

#: settings that determine no artifact, and why
NOT_IN_KEYS = {
    "name": "the run directory's name",
    "run_root": "where runs live (keys never depend on where the stores are)",
    "cache_root": "where the shared cache lives",
    "sweeps": "which sweep families run, not what an artifact holds",
    "sweep_students": "which sweep students train",
    "seeds": "the seeds of sweep trials (each trial's seed enters its keys as `seed`)",
    "compare_no_kd": "whether `run` adds the no-KD comparison trials",
    "data.download": "whether a missing dataset is fetched",
    "data.num_workers": "loader processes: views are a function of (seed, epoch, index)",
    "clip.batch_size": "how many images CLIP embeds at once",
    "distill.vit_student": "the student of the sweeps' ViT-only trials (enters as distill.student there)",
    "distill.compile_teachers": "torch.compile of frozen teachers: the same logits",
    "attribute.batch_size": "Integrated Gradients' batch: the same shares",
    "trainer.devices": "how many devices (DDP gives the same result per the resume/DDP tests)",
    "trainer.num_nodes": "how many machines",
    "trainer.strategy": "how processes synchronise",
    "trainer.deterministic": "deterministic kernels (always on by default)",
    "trainer.progress": "progress bars",
    "trainer.logger": "the training log's format",
    "launcher": "what a cluster job asks for (launcher.slurm.*)",
    "multimodal.preset": "named loss weights, applied to the fields they set (lambda_hier, lambda_cos: in the key)",
    "distill.preset": "named loss weights, applied to the fields they set (in the key)",
    "profile": "named settings applied to the fields they set (in the key)",
}

#: settings whose key change needs data or files of their own: covered by the named test
ELSEWHERE = {
    "data.dataset": "test_fingerprint.py (data_spec: dataset, root, params, files)",
    "data.root": "test_fingerprint.py",
    "data.params": "test_fingerprint.py",
    "data.fingerprint": "test_fingerprint.py (how the files are identified)",
    "data.synset_overrides": "test_wordnet.py / test_fingerprint.py (the override file by content)",
    "clip.model": "test_clip.py (a model needs its weights)",
    "clip.weights": "test_clip.py",
    "clip.precision": "an accelerator's precision: CPU runs fp32 whatever it says (test_clip.py)",
    "trainer.accelerator": "batch_stage=auto on a GPU (test_transforms.py: device batch stage in the views' spec)",
}

#: the value a setting is changed to, where adding one or flipping it does not give a valid one
CHANGED = {
    "seed": "1",
    "data.image_size": "10",
    "data.batch_stage": "device",
    "nouns.hypernym_depth": "2",
    "relax.num_clusters": "12",
    "relax.sample_size": "100",
    "relax.max_points_per_centroid": "64",
    "unimodal.arch": "resnet18",
    "unimodal.weights": "imagenet",
    "unimodal.members": "[{name: strong, aug: weak, seed: 0}, {name: weak, aug: weak, seed: 0}]",
    "multimodal.head": "resnet50-1x1",
    "multimodal.proportions": "{gt: 0.5, wn: 0.5}",
    "multimodal.weights": "none",
    "distill.student": "resnet18",
    "distill.teachers": "[strong, tx]",
    "distill.loss": "dkd",
    "distill.params": "{temperature: 2.0}",
    "distill.methods": "{kd: {temperature: 2.0}}",
    "distill.temperature": "2.0",
    "distill.ce_weight": "0.5",
    "distill.kd_weight": "0.5",
    "distill.dkd_alpha": "2.0",
    "distill.dkd_beta": "2.0",
    "attribute.num_samples": "32",
    "trainer.precision": "bf16-mixed",
    "multimodal.noise": "text",
    **{f"{s}.optim.cosine_t_max": "3" for s in ("unimodal", "multimodal", "distill")},
    **{f"{s}.optim.base_lr": "0.2" for s in ("unimodal", "multimodal", "distill")},
    **{f"{s}.optim.milestones": "[1]" for s in ("unimodal", "multimodal", "distill")},
}

#: overrides under which a setting is read at all (it is in the spec of the stage that reads it there)
WHEN = {
    "nouns.hypernym_depth": ["nouns.candidates=neighbourhood"],
    "multimodal.weights": ["multimodal.head=resnet50-1x1"],
    "multimodal.hidden_dim": [],
    "multimodal.noise": ["multimodal.proportions={gt: 0.5, noise: 0.5}"],
    "distill.dkd_alpha": ["distill.loss=dkd"],
    "distill.dkd_beta": ["distill.loss=dkd"],
    "distill.cache_top_k": ["distill.targets=cached"],
    "distill.tx_input": [],
    **{
        f"{s}.optim.cosine_t_max": [f"{s}.optim.schedule=cosine", f"{s}.optim.milestones=[]"]
        for s in ("unimodal", "multimodal", "distill")
    },
    **{f"{s}.optim.schedule": [f"{s}.optim.milestones=[]"] for s in ("unimodal", "multimodal", "distill")},
}


def leaves(model: BaseModel, prefix: str = ""):
    for name, field in type(model).model_fields.items():
        value, path = getattr(model, name), prefix + name
        if isinstance(value, BaseModel) and path != "launcher":
            yield from leaves(value, path + ".")
        else:
            yield path, field.annotation, value


def changed(path: str, annotation, value) -> str:
    if path in CHANGED:
        return CHANGED[path]
    if isinstance(value, bool):
        return str(not value).lower()
    if typing.get_origin(annotation) is typing.Literal:
        return next(str(choice) for choice in typing.get_args(annotation) if choice != value)
    if isinstance(value, int):
        return str(value + 1)
    if isinstance(value, float):
        return str(round(value + 0.01, 6))
    raise AssertionError(f"say what {path} changes to in CHANGED")


def graph_ids(tmp_path, overrides: list[str]) -> set[str]:
    cfg = load_config(REPO / "configs" / "demo.yaml", [*tiny_overrides(tmp_path / "runs"), *overrides])
    return {node.id for node in graph(Context(cfg), sweeps=False)}


#: the tiny demo's settings (what graph_ids starts from), each to be changed
SETTINGS = [(p, a, v) for p, a, v in leaves(load_config(REPO / "configs" / "demo.yaml", tiny_overrides(Path("runs"))))
            if p not in NOT_IN_KEYS | ELSEWHERE]


def test_every_setting_is_listed_once():
    paths = [p for p, _, _ in leaves(ExperimentConfig())]
    assert set(NOT_IN_KEYS) <= set(paths) and set(ELSEWHERE) <= set(paths)
    assert not set(NOT_IN_KEYS) & set(ELSEWHERE)


@pytest.mark.parametrize("path, annotation, value", SETTINGS, ids=[p for p, _, _ in SETTINGS])
def test_changing_a_setting_changes_the_key_of_what_it_determines(tmp_path, path, annotation, value):
    context = WHEN.get(path, [])
    before = graph_ids(tmp_path, context)
    after = graph_ids(tmp_path, [*context, f"{path}={changed(path, annotation, value)}"])
    assert before != after, f"{path} changes no artifact key: put it in a spec, or in NOT_IN_KEYS with the reason"


def test_the_student_takes_its_settings_from_the_distill_section_by_name():
    """One object, read by name: a field of StudentSettings is a field of the distill section, and its
    value is the one inside the built module."""
    from dataclasses import fields

    from relaxkd.config import DistillConfig
    from relaxkd.distill import StudentDistiller, StudentSettings, TeacherSet

    assert {f.name for f in fields(StudentSettings)} - {"params"} <= set(DistillConfig.model_fields)
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        [
            "distill.loss=dkd",
            "distill.methods={dkd: {beta: 3.0}}",
            "distill.aggregate=mean_losses",
            "distill.optim.lr=0.02",
            "distill.teachers=[strong]",
        ],
    )
    settings = StudentSettings.of(cfg.distill)
    module = StudentDistiller(settings, num_classes=10, teachers=TeacherSet(names=["strong"]))
    assert (module.method.params.beta, module.method.context.aggregate, module.optim_cfg.lr) == (3.0, "mean_losses", 0.02)
    assert module.hparams["params"]["beta"] == 3.0 and module.hparams["arch"] == cfg.distill.student


@pytest.mark.parametrize(
    "override, field, value",
    [
        ("multimodal.head=resnet50-1x1", "head", "resnet50-1x1"),
        (
            "multimodal.hidden_dim=64",
            "head_kwargs",
            {"hidden_dim": 64, "dropout": 0.1, "batch_norm": True},
        ),  # the demo: batch_norm on
        ("multimodal.bank=fixed", "bank_learnable", False),
        ("multimodal.text_only=true", "text_only", True),
        ("multimodal.temperature=0.02", "temperature", 0.02),
        ("multimodal.lambda_hier=0.3", "lambda_hier", 0.3),
        ("multimodal.lambda_cos=0.2", "lambda_cos", 0.2),
        ("multimodal.bank_weight_decay=0.001", "bank_weight_decay", 0.001),
        ("multimodal.proportions={gt: 0.5, noise: 0.5}", "label_noise", True),
        ("multimodal.text_split=batch", "text_split", "batch"),
        ("multimodal.proportions={gt: 0.25, wn: 0.75}", "gt_share", 0.25),
        ("multimodal.bank_dtype=fp16", "bank_fp16", True),
        ("multimodal.optim.lr=0.02", "optim", 0.02),
    ],
)
def test_tx_takes_its_settings_from_the_multimodal_section(override, field, value):
    """Each setting T_x reads reaches the built module (its hparams, which teacher.json keeps)."""
    from relaxkd.teachers import MultimodalTeacher, TxSettings

    cfg = load_config(REPO / "configs" / "demo.yaml", [override])
    module = MultimodalTeacher(TxSettings.of(cfg.multimodal), embed_dim=4, num_classes=3, bank_size=2, num_train=3, num_val=1)
    found = module.hparams["optim_cfg"]["lr"] if field == "optim" else module.hparams[field]
    assert found == value
    assert MultimodalTeacher.from_hparams(dict(module.hparams)).hparams == module.hparams  # teacher.json rebuilds it
