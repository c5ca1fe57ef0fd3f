"""Typed experiment configuration.

One YAML file per experiment under ``configs/``; ``key=value`` overrides on the command line use
dotted paths (``distill.temperature=3``). Unknown keys and invalid values are rejected before any
work starts, with one line naming the key and the valid choices.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from relaxkd.config_io import apply_overrides, default_run_name, format_validation_error, load_yaml
from relaxkd.engine.settings import OptimConfig, TrainerConfig
from relaxkd.errors import UserError
from relaxkd.launcher_config import LauncherConfig
from relaxkd.names import EXPERT_TEACHERS, TEXT_MODES, TX
from relaxkd.presets import DISTILL_PRESETS, MULTIMODAL_PRESETS, RETRIEVAL_TEMPERATURE, apply_profile
from relaxkd.schema import Strict, UserPath, omit_defaults
from relaxkd.trials import SWEEPS

SWEEP_FAMILIES = tuple(SWEEPS)  # defined with the trials themselves



#: seeds feed numpy's and Lightning's generators, which take 0 <= seed < 2**32
MAX_SEED = 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class DataConfig(Strict):
    dataset: str = "digits"
    root: UserPath | None = None
    download: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    image_size: int = Field(224, gt=0)
    #: augmentation family for the strong pipeline: AutoAugment+Cutout ("cifar") or the authors' ImageNet one (timm RandAugment).
    policy: Literal["cifar", "imagenet"] = "cifar"
    #: Cutout's hole length in pixels in the "cifar" strong policy (0 = no Cutout). The reference
    #: policy (the authors' DataLoaderCIFAR.py: Cutout(n_holes=1, length=16)) keeps 16 px at 224 px.
    cutout: int = Field(16, ge=0)
    synset_overrides: UserPath | None = None
    #: how artifact keys identify the image files: "stat" (relative path, size, mtime: one stat per
    #: file), "content" (SHA-256 of every file: reads all bytes) or "none" (config only: trust the root)
    fingerprint: Literal["stat", "content", "none"] = "stat"
    num_workers: int = Field(0, ge=0)
    #: where training augmentation's batch stage (drawn ops, normalisation, Cutout) runs: "loader"
    #: (its workers, CPU), "device" (uint8 crops and draws go to the training device, finished there
    #: with tensor ops at every size), "auto" = device when training on a GPU, else loader.
    batch_stage: Literal["auto", "loader", "device"] = "auto"


class ClipConfig(Strict):
    model: str = "ViT-B-32"
    weights: UserPath = "openai"
    batch_size: int = Field(256, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    #: seed of a random-weight CLIP (weights: none); not the run's seed, so a sweep over seeds shares one CLIP and its embeddings
    seed: Seed = 0


class NounsConfig(Strict):
    candidates: Literal["all", "neighbourhood"] = "all"
    hypernym_depth: int = Field(2, ge=0)
    exclude_class_names: bool = False


class RelaxConfig(Strict):
    num_clusters: int | None = Field(None, gt=0)
    top_k: int = Field(5, gt=0)
    #: faiss k-means as the authors and TAC run it: 300 iterations, 10 restarts, every image.
    #: Fast setting for ImageNet scale: iterations=20, restarts=1, sample_size=262144 (BENCHMARKS.md).
    iterations: int = Field(300, gt=0)
    restarts: int = Field(10, gt=0)
    sample_size: int | None = Field(None, gt=0)
    #: never fewer clusters than classes (small own datasets; warned); the paper's configs: false
    class_floor: bool = True
    #: faiss's cap on k-means points per centre; null = every point (the authors' code: faiss's 256)
    max_points_per_centroid: int | None = Field(None, gt=0)
    stable_defaults = {"class_floor": True, "max_points_per_centroid": None}

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, values: Any) -> Any:
        if isinstance(values, dict) and "temperature" in values:
            raise ValueError("relax.temperature is now multimodal.temperature (only T_x's retrieval reads it)")
        return values


class UnimodalMember(Strict):
    name: str
    aug: Literal["strong", "weak"]
    seed: Seed = 0


class UnimodalConfig(Strict):
    arch: str = "resnet50"
    weights: UserPath = "imagenet"
    members: list[UnimodalMember] = Field(
        default_factory=lambda: [
            UnimodalMember(name="strong", aug="strong", seed=0),
            UnimodalMember(name="weak", aug="weak", seed=0),
            UnimodalMember(name="strong2", aug="strong", seed=1),
        ]
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)

    @field_validator("members")
    @classmethod
    def _unique_names(cls, members: list[UnimodalMember]) -> list[UnimodalMember]:
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique, got {names}")
        if TX in names:
            raise ValueError(f"{TX!r} is reserved for the multimodal teacher")
        if set(names) & set(EXPERT_TEACHERS):
            raise ValueError(f"{', '.join(EXPERT_TEACHERS)} are reserved for LFME's subset experts")
        return members


class MultimodalConfig(Strict):
    head: str = "mlp"
    hidden_dim: int = Field(512, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    #: BatchNorm in the mlp head's hidden layers (not in the paper; helps near-parallel embeddings)
    batch_norm: bool = False
    #: the paper's best trial, T_x (img, 0 % gt, 100 % wn), used in Tables 1 and 3
    proportions: dict[str, float] = Field(default_factory=lambda: {"wn": 1.0})
    bank: Literal["learnable", "fixed"] = "learnable"
    #: noise samples: "label" (Table 2's, the released code's: relabelled, text and target) or "text" only
    noise: Literal["label", "text"] = "label"
    text_split: Literal["sample", "batch"] = "sample"
    bank_dtype: Literal["fp32", "fp16"] = "fp32"
    #: Figure 2's text-only teacher: the image half of the input is zeroed.
    text_only: bool = False
    preset: Literal["paper", "authors_code"] = "paper"
    lambda_hier: float = Field(MULTIMODAL_PRESETS["paper"]["lambda_hier"], ge=0)
    lambda_cos: float = Field(MULTIMODAL_PRESETS["paper"]["lambda_cos"], ge=0)
    bank_weight_decay: float = Field(1e-4, ge=0)
    #: softmax temperature of the ``wn`` mode's soft retrieval from the relaxed bank
    temperature: float = Field(RETRIEVAL_TEMPERATURE, gt=0)
    #: "online" (the authors'): CLIP embeds every augmented training batch; "cached": train on the
    #: embed stage's clean-image embeddings (fast, no augmentation); "cached_views": replay the
    #: tx-views stage's embeddings of every epoch's augmented views (= online, embedded once)
    input: Literal["cached", "online", "cached_views"] = "online"
    #: augmentation of T_x's training images when input is online (the authors' --train_add_strong)
    augment: Literal["strong", "weak"] = "strong"
    #: start of the resnet50-1x1 head: "imagenet" (torchvision's ResNet50 but conv1 and, unless C = 1000, fc,
    #: as the authors), "none" (random) or a ResNet50 state-dict file; unreachable weights: random, reported
    weights: UserPath = "imagenet"
    optim: OptimConfig = Field(default_factory=OptimConfig)

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler: Any) -> Any:  # keys of T_x without these settings stay
        noise = {} if self.proportions.get("noise", 0) else {"noise": self.noise}
        omitted = {"text_split": "sample", "bank_dtype": "fp32", **noise}
        return omit_defaults(handler(self), omitted)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, values: Any) -> Any:
        if isinstance(values, dict) and "preset" in values:
            preset = MULTIMODAL_PRESETS.get(values["preset"], {})
            values = {**preset, **values}
        return values

    @field_validator("proportions")
    @classmethod
    def _check_proportions(cls, proportions: dict[str, float]) -> dict[str, float]:
        unknown = [m for m in proportions if m not in TEXT_MODES]
        if unknown:
            raise ValueError(f"unknown text mode {unknown[0]!r}; valid modes: {', '.join(TEXT_MODES)}")
        negative = {m: p for m, p in proportions.items() if p < 0}
        if negative:
            raise ValueError(f"proportions must be non-negative, got {negative}")
        total = sum(proportions.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"proportions must sum to 1, got {total:g} ({proportions})")
        return proportions


class DistillConfig(Strict):
    stable_defaults = {"compile_student": False, "released_code": False}  # the key rule (schema.Strict)
    student: str = "resnet18"
    #: names of unimodal members and/or "tx" (the multimodal teacher, ``relaxkd.names.TX``).
    teachers: list[str] = Field(default_factory=lambda: ["strong", "weak", TX])
    #: the KD method (relaxkd.methods: kd, zscore, dkd, none, lfme, ffkd, dmae, or a registered plug-in)
    loss: str = "kd"
    #: the method's own parameters (validated by the method; unknown keys are refused)
    params: dict[str, Any] = Field(default_factory=dict)
    #: per-method parameters by method name, applied when that method runs (e.g. in a table1 sweep):
    #: {dmae: {pretrain_epochs: 4}, dkd: {beta: 4}}; distill.params overrides them
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: the ViT student of ViT-only methods' sweep trials (DMAE's Table 1 row); ViT-B/16 as in DMAE
    vit_student: str = "vit_base_patch16"
    aggregate: Literal["mean_logits", "mean_losses", "adaptive"] = "mean_logits"
    #: named loss weights, applied over the method's recipe (see DISTILL_PRESETS)
    preset: Literal["authors_code"] | None = None
    #: unset (null): the method's own recipe (kd: τ 3, CE 0.6 / KD 0.4; zscore: τ 2, CE 0.1 / KD 9; ...)
    temperature: float | None = Field(None, gt=0)
    ce_weight: float | None = Field(None, ge=0)
    kd_weight: float | None = Field(None, ge=0)
    #: DKD's α and β (the same as distill.params.alpha / beta)
    dkd_alpha: float | None = Field(None, ge=0)
    dkd_beta: float | None = Field(None, ge=0)
    #: T_x during distillation: "online" CLIP on every augmented batch, or "cached" clean embeddings.
    tx_input: Literal["cached", "online"] = "online"
    #: teachers during distillation: "online" (run on every batch) or "cached" (Fast-KD style: the
    #: teacher-targets stage records their logits for every epoch's augmented views once; students
    #: trained with the same teachers, data, seed, batch size and epochs replay them).
    targets: Literal["online", "cached"] = "online"
    #: logits kept per teacher and sample in cached targets; 0 keeps all (exact replay).
    cache_top_k: int = Field(0, ge=0)
    #: run the fused image-teacher ensemble through torch.compile (needs a C++ compiler; a one-off
    #: compile of 7-25 s for 3 ResNet50 on 2 CPU cores, then ~1.2× faster than eager on CPU).
    compile_teachers: bool = False
    #: run the student through torch.compile (nn.Module.compile: checkpoints keep their keys; a
    #: one-off compile at the first step, and once more for a smaller last batch).
    compile_student: bool = False
    released_code: bool = False
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(epochs=500, milestones=[300, 400]))

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("preset") is not None:
            preset = DISTILL_PRESETS.get(values["preset"], {})
            values = {**preset, **{k: v for k, v in values.items() if v is not None}}
        return values

    def method_params(self):
        """The method's typed ``Params``, resolved once: ``distill.params`` over ``distill.methods[<loss>]``
        over the shared fields (``methods.SHARED_FIELDS``) over the method's recipe."""
        from relaxkd.methods import SHARED_FIELDS, method_params

        shared = {param: getattr(self, field) for param, field in SHARED_FIELDS.items()}
        return method_params(self.loss, {**self.methods.get(self.loss, {}), **self.params}, shared)

    @model_validator(mode="after")
    def _unique_teachers(self) -> DistillConfig:
        # whether the method needs teachers is the method's to say (config.check_names asks it)
        if len(set(self.teachers)) != len(self.teachers):
            raise ValueError(f"distill.teachers lists a teacher twice: {self.teachers}")
        return self


class AttributeConfig(Strict):
    #: number of validation samples; None = the whole validation set.
    num_samples: int | None = Field(None, gt=0)
    steps: int = Field(50, gt=0)
    batch_size: int = Field(128, gt=0)


class ExperimentConfig(Strict):
    profile: Literal["paper", "authors_code"] = "paper"  # presets.PROFILES
    name: str = "experiment"
    seed: Seed = 0
    #: seeds of sweep trials: each trial runs once per seed and the report gives mean ± std (empty: `seed` alone)
    seeds: list[Seed] = Field(default_factory=list)
    run_root: UserPath = "runs"
    #: where artifacts shared across datasets live (the WordNet noun-embedding table).
    cache_root: UserPath = "runs/_shared"
    #: sweep families (table1, table2, table3, figure2) that `relaxkd run` also runs
    sweeps: list[str] = Field(default_factory=list)
    #: train the students of sweep trials: true, false (teachers and attribution only) or a list of
    #: `family/trial` patterns (e.g. `[table1/*, table2/gt100-*]`) whose students train
    sweep_students: bool | list[str] = True
    #: `run` also trains the no-KD student per seed (the `compare` sweep); null: on unless the dataset is one of the paper's
    compare_no_kd: bool | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)
    nouns: NounsConfig = Field(default_factory=NounsConfig)
    relax: RelaxConfig = Field(default_factory=RelaxConfig)
    unimodal: UnimodalConfig = Field(default_factory=UnimodalConfig)
    multimodal: MultimodalConfig = Field(default_factory=MultimodalConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    attribute: AttributeConfig = Field(default_factory=AttributeConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    #: what `--launcher slurm` asks the cluster for, per stage kind (no effect on results)
    launcher: LauncherConfig = Field(default_factory=LauncherConfig)

    # neither changes a result: out of the dumps while at their defaults, so config hashes stay
    stable_defaults = {"launcher": LauncherConfig().model_dump(mode="json"), "compare_no_kd": None}

    _profile = model_validator(mode="before")(classmethod(lambda cls, values: apply_profile(values)))

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        """The run directory is ``run_root/name``: one plain folder name, never a path out of run_root."""
        if (not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0")
                or len(name) > 200 or not name.isprintable()):
            raise ValueError(
                "must be a plain folder name inside run_root (no '/', not '.' or '..', no leading '.'); "
                "set run_root to choose where runs go"
            )
        return name

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds lists a seed twice: {seeds}")
        return seeds

    @field_validator("sweeps")
    @classmethod
    def _known_sweeps(cls, sweeps: list[str]) -> list[str]:
        for family in sweeps:
            if family not in SWEEP_FAMILIES:
                raise ValueError(f"unknown sweep family {family!r}; valid families: {', '.join(SWEEP_FAMILIES)}")
        return sweeps

    @model_validator(mode="after")
    def _teachers_exist(self) -> ExperimentConfig:
        known = [m.name for m in self.unimodal.members] + [TX, *EXPERT_TEACHERS]
        for name in self.distill.teachers:
            if name not in known:
                raise ValueError(f"distill.teachers names unknown teacher {name!r}; valid teachers: {', '.join(known)} "
                                 f"(unimodal.members defines the image teachers)")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.run_root) / self.name

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def build_config(data: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, ExperimentConfig)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config (or the defaults), apply ``key=value`` overrides and validate."""
    data = load_yaml(path) if path is not None else {}
    if "name" not in data and path is not None and Path(path).is_file():  # a pipe's name (/dev/fd/63) names no run
        data["name"] = Path(path).stem
    data = apply_overrides(data, list(overrides or []))
    name = default_run_name(data, list(overrides or []))
    if name is not None:
        data["name"] = name
    return build_config(data)


def check_names(cfg: ExperimentConfig) -> None:
    """Validate names that live in registries (dataset, models) before any work starts."""
    from relaxkd.data import DATASETS
    from relaxkd.models import BACKBONES, FUSION_HEADS

    DATASETS.get(cfg.data.dataset)
    check_dataset_params(cfg.data.dataset, cfg.data.params)
    BACKBONES.get(cfg.unimodal.arch)
    BACKBONES.get(cfg.distill.student)
    FUSION_HEADS.get(cfg.multimodal.head)
    cfg.distill.method_params()  # unknown method, unknown or bad parameters
    from relaxkd.methods import METHODS, check_method_inputs, method_params

    for name, params in cfg.distill.methods.items():  # every method's own settings, used or not
        method_params(name, params)
    BACKBONES.get(cfg.distill.vit_student)

    # what needs no data: cached targets for a feature method, a ViT method with a CNN student
    method = METHODS.get(cfg.distill.loss)
    check_method_inputs(
        method, teachers=list(cfg.distill.teachers) if method.needs_teachers else [], cached=cfg.distill.targets == "cached",
        class_counts=None, student_family=BACKBONES.get(cfg.distill.student).family, student=cfg.distill.student,
    )


def check_dataset_params(dataset: str, params: dict[str, Any]) -> None:
    """``data.params`` against the dataset's keyword arguments: known names, values of their types."""
    import math
    import typing

    from pydantic import TypeAdapter

    from relaxkd.config_io import shorten
    from relaxkd.data import DATASETS
    from relaxkd.data.catalog import unknown_params

    problem = unknown_params(dataset, params)
    if problem:
        raise UserError(f"config: data.params: {problem}")
    hints = typing.get_type_hints(DATASETS.get(dataset).__init__)
    for name, value in params.items():
        hint = hints.get(name)
        try:
            if hint is not None:
                TypeAdapter(hint).validate_python(value)
        except ValidationError as err:
            msg = err.errors()[0]["msg"]
            raise UserError(f"config: data.params.{name}: {msg} for dataset {dataset!r} (got {shorten(repr(value))})") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"config: data.params.{name}: Input should be a finite number (got {value!r})")
