"""Stage runners: a validated config in, one content-addressed artifact directory out per stage.

Every stage first looks its artifact up by a hash of everything that determines it and reuses it
when present and intact; otherwise it computes it and commits it atomically (see artifacts.py).
"""
from __future__ import annotations

import json
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

from relaxkd.config import ExperimentConfig, check_names
from relaxkd.errors import UserError
from relaxkd.stages.artifacts import Artifact, ArtifactStore, file_sha256, write_json

#: datasets shipped with a dependency, used for the offline demo (reports must say so)
DEMO_DATASETS = ("digits",)


def log(message: str) -> None:
    print(f"[relaxkd] {message}", file=sys.stderr, flush=True)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class OnlineClip:
    """CLIP image embeddings of a batch normalised with another model's statistics."""

    def __init__(self, encoder, input_stats):
        from relaxkd.data.transforms import CLIP_STATS

        self.encoder, self.input_stats, self.clip_stats = encoder, input_stats, CLIP_STATS
        self._device: torch.device | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from relaxkd.data.transforms import renormalize

        if self._device != images.device:
            self.encoder.to(images.device)
            self._device = images.device
        if self.input_stats != self.clip_stats:
            images = renormalize(images, self.input_stats, self.clip_stats)
        size = self.encoder.image_size
        if images.shape[-1] != size or images.shape[-2] != size:
            images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)
        return self.encoder.encode_images(images)


class Pipeline:
    def __init__(self, cfg: ExperimentConfig):
        check_names(cfg)
        self.cfg = cfg
        self.store = ArtifactStore(cfg.run_dir)
        self.shared = ArtifactStore(cfg.cache_root, setting="cache_root")
        self._resolved: dict[tuple[str, str], Artifact] = {}

    # -- helpers -------------------------------------------------------------------------------
    def _stage(self, store: ArtifactStore, stage: str, spec: dict, build: Callable[[Path], dict | None]) -> Artifact:
        memo_key = (str(store.root), store.key(stage, spec))
        if memo_key in self._resolved:  # verified once per process; later stages ask again
            return self._resolved[memo_key]
        found = store.lookup(stage, spec)
        if found is not None:
            log(f"{stage}: reusing {found.path}")
            self._resolved[memo_key] = found
            return found
        log(f"{stage}: computing -> {store.path(stage, store.key(stage, spec))}")
        started = time.time()
        extra = {"seed": self.cfg.seed, "config_hash": self.config_hash, "inputs": self._inputs(spec)}
        with store.create(stage, spec, extra=extra) as tmp:
            (tmp / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            build(tmp)
        artifact = store.lookup(stage, spec, verify=False)
        assert artifact is not None
        self._resolved[memo_key] = artifact
        log(f"{stage}: done in {time.time() - started:.1f}s")
        return artifact

    def _inputs(self, spec: dict) -> list[str]:
        """The artifacts (``<stage>-<key>``) a stage is built from: every one resolved here whose key its spec names."""
        named = set(_strings(spec))
        return sorted({f"{a.stage}-{a.key}" for a in self._resolved.values() if a.key in named})

    @cached_property
    def config_hash(self) -> str:
        from relaxkd.config import stable_hash

        return stable_hash(self.cfg.to_dict())[:16]

    def data_spec(self) -> dict[str, Any]:
        d = self.cfg.data
        root = str(Path(d.root).resolve()) if d.root else None
        return {"dataset": d.dataset, "root": root, "params": d.params, "synset_overrides": d.synset_overrides}

    def augmentation_spec(self) -> dict[str, Any]:
        """What determines the random views of training images besides the seed."""
        from relaxkd.data.transforms import AUGMENTATION_VERSION

        return {"policy": self.cfg.data.policy, "augmentation": AUGMENTATION_VERSION}

    def clip_spec(self) -> dict[str, Any]:
        c = self.cfg.clip
        spec: dict[str, Any] = {"model": c.model, "weights": c.weights}
        if Path(c.weights).is_file():
            spec["weights_sha256"] = file_sha256(Path(c.weights))
        if c.weights == "none":
            spec["seed"] = self.cfg.seed  # random init is seeded
            from importlib.metadata import version

            from relaxkd.clip.encoder import _TINY_CONFIG, TINY_MODEL

            # a random-weight model is defined by its architecture and the library that builds it
            spec["open_clip"] = version("open_clip_torch")
            if c.model == TINY_MODEL:
                spec["config_sha256"] = file_sha256(_TINY_CONFIG)
        return spec

    def provenance(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "dataset": c.data.dataset,
            "demo_data": c.data.dataset in DEMO_DATASETS,
            "clip": f"{c.clip.model}/{c.clip.weights}",
            "random_weight_clip": c.clip.weights == "none",
            "seed": c.seed,
        }

    # -- data ----------------------------------------------------------------------------------
    @cached_property
    def raw_train(self):
        return self._dataset("train")

    @cached_property
    def raw_val(self):
        return self._dataset("val")

    def _dataset(self, split: str):
        from relaxkd.data import build_dataset

        d = self.cfg.data
        return build_dataset(d.dataset, d.root, split, transform=None, download=d.download, **d.params)

    @property
    def classes(self) -> list[str]:
        return list(self.raw_train.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_counts(self) -> list[int]:
        counts = getattr(self.raw_train, "class_counts", None)
        if counts is None:
            counts = torch.bincount(torch.as_tensor(self.raw_train.targets), minlength=self.num_classes).tolist()
        return list(counts)

    @cached_property
    def synsets(self) -> list[str]:
        return self.raw_train.synsets(self.cfg.data.synset_overrides)

    def augmented(self, raw, kind: str, stats, image_size: int | None = None):
        from relaxkd.data.transforms import build_transform
        from relaxkd.engine.sampling import SeededAugmentation

        size = image_size or self.cfg.data.image_size
        transform = build_transform(kind, size, stats, policy=self.cfg.data.policy)
        return SeededAugmentation(raw, transform, self.cfg.seed)

    @cached_property
    def clip(self):
        from relaxkd.clip import load_clip

        c = self.cfg.clip
        return load_clip(c.model, c.weights, device=str(device()), precision=c.precision, seed=self.cfg.seed)

    # -- stage: embed images -------------------------------------------------------------------
    def embed_images(self) -> Artifact:
        spec = {"data": self.data_spec(), "clip": self.clip_spec()}

        def build(out: Path) -> None:
            from relaxkd.engine.sampling import SeededAugmentation

            synsets = self.synsets  # a class missing from WordNet fails before minutes of encoding
            enc = self.clip
            tensors: dict[str, torch.Tensor] = {}
            for split, raw in (("train", self.raw_train), ("val", self.raw_val)):
                data = SeededAugmentation(raw, enc.preprocess_transform(), self.cfg.seed)
                emb, labels, _ = enc.encode_dataset(
                    data, batch_size=self.cfg.clip.batch_size, num_workers=self.cfg.data.num_workers
                )
                tensors[split] = emb.half().contiguous()
                tensors[f"{split}_labels"] = labels.long().contiguous()
            tensors["class_text"] = enc.embed_words(self.classes).float().contiguous()
            save_file(tensors, str(out / "embeddings.safetensors"))
            write_json(out / "classes.json", {"classes": self.classes, "synsets": synsets})

        return self._stage(self.store, "embed-images", spec, build)

    # -- stage: embed nouns --------------------------------------------------------------------
    def candidate_nouns(self) -> list[str]:
        from relaxkd.wordnet import candidate_nouns

        n = self.cfg.nouns
        return candidate_nouns(
            n.candidates,
            class_synsets=self.synsets,
            class_names=self.classes,
            exclude_class_names=n.exclude_class_names,
            hypernym_depth=n.hypernym_depth,
        )

    def nouns_spec(self) -> dict[str, Any]:
        """What determines the candidate list, without building it (a WordNet pass takes seconds)."""
        from relaxkd.wordnet import WORDNET_VERSION

        n = self.cfg.nouns
        spec: dict[str, Any] = {"candidates": n.candidates, "wordnet": WORDNET_VERSION, "exclude_class_names": n.exclude_class_names}
        if n.exclude_class_names or n.candidates == "neighbourhood":
            spec["classes"] = self.classes
        if n.candidates == "neighbourhood":
            spec.update(synsets=self.synsets, hypernym_depth=n.hypernym_depth)
        return spec

    def embed_nouns(self) -> Artifact:
        from relaxkd.clip import TEMPLATES

        spec = {"clip": self.clip_spec(), "templates": list(TEMPLATES), "nouns": self.nouns_spec()}

        def build(out: Path) -> None:
            nouns = self.candidate_nouns()
            emb = self.clip.embed_words(nouns).half().contiguous()
            save_file({"embeddings": emb}, str(out / "embeddings.safetensors"))
            write_json(out / "nouns.json", nouns)

        return self._stage(self.shared, "embed-nouns", spec, build)

    # -- stage: relax (Algorithm 1) ------------------------------------------------------------
    def relax(self) -> Artifact:
        images, nouns = self.embed_images(), self.embed_nouns()
        r = self.cfg.relax
        spec = {
            "images": images.key,
            "nouns": nouns.key,
            "relax": r.model_dump(exclude={"temperature"}),
            "seed": self.cfg.seed,
        }

        def build(out: Path) -> None:
            from relaxkd.relax import format_listing, relax_nouns

            train = load_file(str(images.file("embeddings.safetensors")))["train"].float()
            noun_emb = load_file(str(nouns.file("embeddings.safetensors")))["embeddings"].float()
            names = nouns.read_json("nouns.json")
            result = relax_nouns(
                train,
                noun_emb,
                num_clusters=r.num_clusters,
                top_k=r.top_k,
                iterations=r.iterations,
                restarts=r.restarts,
                seed=self.cfg.seed,
                sample_size=r.sample_size,
            )
            save_file(
                {
                    "bank": result.bank.float().contiguous(),
                    "indices": result.indices.long().contiguous(),
                    "cluster_ids": result.cluster_ids.long().contiguous(),
                    "scores": result.scores.float().contiguous(),
                    "centers": result.centers.float().contiguous(),
                },
                str(out / "bank.safetensors"),
            )
            write_json(out / "bank_nouns.json", [names[i] for i in result.indices.tolist()])
            (out / "nouns.txt").write_text(format_listing(result, names))
            write_json(out / "info.json", result.info)

        return self._stage(self.store, "relax", spec, build)

    # -- stage: unimodal teachers --------------------------------------------------------------
    def member(self, name: str):
        for m in self.cfg.unimodal.members:
            if m.name == name:
                return m
        valid = ", ".join(m.name for m in self.cfg.unimodal.members)
        raise UserError(f"unknown unimodal teacher {name!r}; valid members: {valid}")

    def train_spec(self) -> dict[str, Any]:
        t = self.cfg.trainer
        return {"precision": t.precision, "accumulate_grad_batches": t.accumulate_grad_batches}

    def unimodal(self, name: str) -> Artifact:
        member = self.member(name)
        u = self.cfg.unimodal
        spec = {
            "data": self.data_spec(),
            "image_size": self.cfg.data.image_size,
            **self.augmentation_spec(),
            "arch": u.arch,
            "weights": u.weights,
            **self._weights_file_hash(u.weights),
            "member": member.model_dump(),
            "optim": u.optim.model_dump(),
            "train": self.train_spec(),
        }

        def build(out: Path) -> None:
            from relaxkd.data.transforms import IMAGENET_STATS
            from relaxkd.engine.trainer import SeededDataModule, build_trainer, fit, seed_everything
            from relaxkd.teachers import UnimodalTeacher

            seed_everything(member.seed)
            module = UnimodalTeacher(u.arch, self.num_classes, u.optim.model_dump(), u.weights, self.class_counts)
            data = SeededDataModule(
                self.augmented(self.raw_train, member.aug, IMAGENET_STATS),
                self.augmented(self.raw_val, "test", IMAGENET_STATS),
                u.optim.batch_size,
                self.cfg.data.num_workers,
                member.seed,
            )
            work = self.store.work_dir("teacher-unimodal", self.store.key("teacher-unimodal", spec))
            trainer = build_trainer(self.cfg.trainer, work, u.optim.epochs)
            fit(trainer, module, data, work)
            save_file(_contiguous(module.model.state_dict()), str(out / "model.safetensors"))
            write_json(out / "teacher.json", self._teacher_info("unimodal", name=name, arch=u.arch, aug=member.aug))
            write_json(out / "metrics.json", self._metrics(module, epochs=u.optim.epochs))

        return self._stage(self.store, "teacher-unimodal", spec, build)

    @staticmethod
    def _weights_file_hash(weights: str) -> dict[str, str]:
        """A weights file's content, not just its path, determines the artifact (as for clip_spec)."""
        path = Path(weights).expanduser()
        return {"weights_sha256": file_sha256(path)} if weights not in ("none", "imagenet") and path.is_file() else {}

    def _teacher_info(self, kind: str, **extra) -> dict[str, Any]:
        return {
            "kind": kind,
            "dataset": self.cfg.data.dataset,
            "num_classes": self.num_classes,
            "classes": self.classes,
            **extra,
        }

    def _metrics(self, module, **extra) -> dict[str, Any]:
        history = module.history
        final = dict(history[-1]) if history else {}
        final.pop("epoch", None)
        return {**final, "history": history, "provenance": {**self.provenance(), **extra}}

    # -- stage: multimodal teacher -------------------------------------------------------------
    def multimodal_spec(self, images: Artifact, bank: Artifact | None) -> dict[str, Any]:
        m = self.cfg.multimodal
        spec = {
            "images": images.key,
            "bank": bank.key if bank is not None else None,
            "multimodal": m.model_dump(exclude={"preset"}),
            "temperature": self.cfg.relax.temperature,
            "seed": self.cfg.seed,
            "train": self.train_spec(),
        }
        if m.input == "online":
            spec["online"] = {"data": self.data_spec(), "clip": self.clip_spec(), **self.augmentation_spec()}
        return spec

    def multimodal(self) -> Artifact:
        m = self.cfg.multimodal
        needs_bank = m.proportions.get("wn", 0.0) > 0
        images = self.embed_images()
        bank = self.relax() if needs_bank else None
        spec = self.multimodal_spec(images, bank)

        def build(out: Path) -> None:
            from relaxkd.engine.sampling import SeededAugmentation
            from relaxkd.engine.trainer import SeededDataModule, build_trainer, fit, seed_everything
            from relaxkd.teachers.text_modes import mode_proportions

            seed_everything(self.cfg.seed)
            emb = load_file(str(images.file("embeddings.safetensors")))
            bank_tensor = load_file(str(bank.file("bank.safetensors")))["bank"] if bank is not None else None
            module = self.build_multimodal(emb, bank_tensor)
            if m.input == "online":
                from relaxkd.data.transforms import CLIP_STATS

                enc = self.clip
                module.image_encoder = OnlineClip(enc, CLIP_STATS)
                train = self.augmented(self.raw_train, "weak", CLIP_STATS, enc.image_size)
                val = self.augmented(self.raw_val, "clip", CLIP_STATS, enc.image_size)
            else:
                train = SeededAugmentation(_EmbeddingSet(emb["train"], emb["train_labels"]), None, self.cfg.seed)
                val = SeededAugmentation(_EmbeddingSet(emb["val"], emb["val_labels"]), None, self.cfg.seed)
            data = SeededDataModule(train, val, m.optim.batch_size, self.cfg.data.num_workers, self.cfg.seed)
            work = self.store.work_dir("teacher-multimodal", self.store.key("teacher-multimodal", spec))
            trainer = build_trainer(self.cfg.trainer, work, m.optim.epochs)
            fit(trainer, module, data, work)
            module.image_encoder = None
            save_file(_contiguous(module.state_dict()), str(out / "model.safetensors"))
            info = self._teacher_info("multimodal", hparams=dict(module.hparams))
            write_json(out / "teacher.json", info)
            write_json(
                out / "metrics.json",
                self._metrics(
                    module,
                    epochs=m.optim.epochs,
                    input=m.input,
                    proportions=m.proportions,
                    measured_train_proportions=mode_proportions(module.train_modes),
                    measured_val_proportions=mode_proportions(module.val_modes),
                    bank=m.bank,
                    text_only=m.text_only,
                ),
            )

        return self._stage(self.store, "teacher-multimodal", spec, build)

    def build_multimodal(self, emb: dict[str, torch.Tensor], bank: torch.Tensor | None):
        from relaxkd.teachers import MultimodalTeacher, assign_noise_classes, assign_text_modes

        m = self.cfg.multimodal
        num_train, num_val = len(emb["train"]), len(emb["val"])
        module = MultimodalTeacher(
            head=m.head,
            embed_dim=emb["train"].shape[1],
            num_classes=self.num_classes,
            optim_cfg=m.optim.model_dump(),
            bank_size=len(bank) if bank is not None else 0,
            bank_learnable=m.bank == "learnable",
            text_only=m.text_only,
            temperature=self.cfg.relax.temperature,
            lambda_hier=m.lambda_hier,
            lambda_cos=m.lambda_cos,
            bank_weight_decay=m.bank_weight_decay,
            head_kwargs={"hidden_dim": m.hidden_dim, "dropout": m.dropout, "batch_norm": m.batch_norm} if m.head == "mlp" else {},
            num_train=num_train,
            num_val=num_val,
            class_counts=self.class_counts,
        )
        module.init_bank(bank)
        module.class_text.copy_(emb["class_text"].float())
        seed = self.cfg.seed
        module.train_modes.copy_(assign_text_modes(num_train, m.proportions, seed))
        module.val_modes.copy_(assign_text_modes(num_val, m.proportions, seed + 1))
        module.train_noise.copy_(assign_noise_classes(num_train, self.num_classes, seed))
        module.val_noise.copy_(assign_noise_classes(num_val, self.num_classes, seed + 1))
        return module

    # -- stage: distillation -------------------------------------------------------------------
    def distill_teachers(self) -> tuple[dict[str, Artifact], Artifact | None]:
        """The distillation's teacher artifacts (built when missing) and, with T_x, the image embeddings."""
        d = self.cfg.distill
        teachers = list(d.teachers) if d.loss != "none" else []
        artifacts = {name: (self.multimodal() if name == "tx" else self.unimodal(name)) for name in teachers}
        return artifacts, (self.embed_images() if "tx" in artifacts else None)

    def teachers_spec(self, artifacts: dict[str, Artifact]) -> dict[str, Any]:
        """The teacher artifacts a distillation uses, and what feeds T_x: the CLIP it runs online or
        the image embeddings it reads (named by key, so the manifest's ``inputs`` lists them)."""
        spec: dict[str, Any] = {"teachers": {n: a.key for n, a in artifacts.items()}}
        if "tx" in artifacts and self.cfg.distill.tx_input == "online":
            spec["clip"] = self.clip_spec()
        elif "tx" in artifacts:
            spec["tx_embeddings"] = self.embed_images().key
        return spec

    def student_views_spec(self) -> dict[str, Any]:
        """What determines the augmented views a student sees, epoch by epoch."""
        return {
            "data": self.data_spec(),
            "image_size": self.cfg.data.image_size,
            **self.augmentation_spec(),
            "seed": self.cfg.seed,
        }

    def student_data(self):
        from relaxkd.data.transforms import IMAGENET_STATS
        from relaxkd.engine.trainer import SeededDataModule

        d = self.cfg.distill
        return SeededDataModule(
            self.augmented(self.raw_train, "strong", IMAGENET_STATS),
            self.augmented(self.raw_val, "test", IMAGENET_STATS),
            d.optim.batch_size,
            self.cfg.data.num_workers,
            self.cfg.seed,
        )

    def teacher_targets(self) -> Artifact:
        """Cached teacher targets: every teacher's logits on every epoch's student views, once."""
        d = self.cfg.distill
        artifacts, images = self.distill_teachers()
        spec = {
            **self.student_views_spec(),
            **self.teachers_spec(artifacts),
            "tx_input": d.tx_input if "tx" in artifacts else None,
            "epochs": d.optim.epochs,
            "batch_size": d.optim.batch_size,  # same batches as the student: bit-identical logits
            "top_k": d.cache_top_k,
            # the fill value of a top-k cache preserves the softened mass at this temperature
            "temperature": d.temperature if d.cache_top_k else None,
        }

        def build(out: Path) -> None:
            from relaxkd.data.transforms import IMAGENET_STATS
            from relaxkd.distill import build_targets

            teacher_set = self.load_teachers(artifacts, images)
            dev = device()
            for module in teacher_set.modules().values():
                module.to(dev)
            data = self.student_data()

            def logits(images, targets, indices, split):
                return teacher_set.logits(images, targets, indices, split, IMAGENET_STATS)

            build_targets(
                logits,
                data.train_set,
                data.val_set,
                out=out,
                work=self.store.work_dir("teacher-targets", self.store.key("teacher-targets", spec)),
                epochs=d.optim.epochs,
                seed=self.cfg.seed,
                batch_size=d.optim.batch_size,
                num_workers=self.cfg.data.num_workers,
                top_k=d.cache_top_k,
                temperature=d.temperature,
                device=dev,
                log=log,
            )
            write_json(out / "targets.json", {"teachers": teacher_set.names, "epochs": d.optim.epochs, "top_k": d.cache_top_k})

        return self._stage(self.store, "teacher-targets", spec, build)

    def distill(self) -> Artifact:
        d = self.cfg.distill
        artifacts, images = self.distill_teachers()
        cached = self.teacher_targets() if d.targets == "cached" and artifacts else None
        spec = {
            **self.student_views_spec(),
            **self.teachers_spec(artifacts),
            "targets": cached.key if cached is not None else None,
            "distill": d.model_dump(exclude={"preset"}),
            "train": self.train_spec(),
        }

        def build(out: Path) -> None:
            from relaxkd.data.transforms import IMAGENET_STATS
            from relaxkd.distill import CachedTargets, StudentDistiller, TeacherSet
            from relaxkd.engine.trainer import build_trainer, fit, seed_everything

            if cached is not None:
                names = cached.read_json("targets.json")["teachers"]
                replay = CachedTargets(
                    cached.path, num_teachers=len(names), num_classes=self.num_classes, epochs=d.optim.epochs, seed=self.cfg.seed
                )
                teacher_set = TeacherSet(names=names, cached=replay)
            else:
                teacher_set = self.load_teachers(artifacts, images)
            # seeded after the teachers are built (their construction draws random numbers): the
            # student starts from the same weights whichever teachers it has, online or cached
            seed_everything(self.cfg.seed)
            module = StudentDistiller(
                arch=d.student,
                num_classes=self.num_classes,
                optim_cfg=d.optim.model_dump(),
                loss=d.loss,
                params=d.params,
                aggregate=d.aggregate,
                temperature=d.temperature,
                ce_weight=d.ce_weight,
                kd_weight=d.kd_weight,
                dkd_alpha=d.dkd_alpha,
                dkd_beta=d.dkd_beta,
                input_stats=IMAGENET_STATS,
                class_counts=self.class_counts,
                teachers=teacher_set,
            )
            work = self.store.work_dir("distill", self.store.key("distill", spec))
            trainer = build_trainer(self.cfg.trainer, work, d.optim.epochs)
            fit(trainer, module, self.student_data(), work)
            save_file(_contiguous(module.student.state_dict()), str(out / "student.safetensors"))
            write_json(
                out / "student.json",
                {**self._teacher_info("student", arch=d.student), "input_stats": "imagenet", "image_size": self.cfg.data.image_size},
            )
            write_json(
                out / "metrics.json",
                self._metrics(
                    module,
                    epochs=d.optim.epochs,
                    teachers=list(artifacts),
                    loss=d.loss,
                    aggregate=d.aggregate,
                    tx_input=d.tx_input if "tx" in artifacts else None,
                    targets=d.targets if artifacts else None,
                ),
            )

        return self._stage(self.store, "distill", spec, build)

    def check_teacher(self, artifact: Artifact, name: str) -> dict[str, Any]:
        info = artifact.read_json("teacher.json")
        if info["num_classes"] != self.num_classes or info["dataset"] != self.cfg.data.dataset:
            raise UserError(
                f"teacher {name!r} ({artifact.path}) was trained on {info['dataset']} with {info['num_classes']} classes, "
                f"but this run is {self.cfg.data.dataset} with {self.num_classes} classes; retrain it for this dataset"
            )
        return info

    def load_teachers(self, artifacts: dict[str, Artifact], images: Artifact | None):
        from relaxkd.data.transforms import IMAGENET_STATS
        from relaxkd.distill import TeacherSet
        from relaxkd.models import TeacherEnsemble, build_backbone

        image_models, names = [], []
        for name, art in artifacts.items():
            info = self.check_teacher(art, name)
            if info["kind"] == "unimodal":
                model = build_backbone(info["arch"], self.num_classes, "none")
                model.load_state_dict(load_file(str(art.file("model.safetensors"))))
                image_models.append(model)
                names.append(name)
        teacher_set = TeacherSet(
            names=names,
            members=dict(zip(names, image_models)),
            image_teachers=TeacherEnsemble(image_models, compiled=self.cfg.distill.compile_teachers) if image_models else None,
            image_stats=IMAGENET_STATS,
        )
        if "tx" in artifacts:
            teacher_set.names.append("tx")
            teacher_set.multimodal = self.load_multimodal(artifacts["tx"], images)
            if self.cfg.distill.tx_input == "online":
                teacher_set.clip_encoder = OnlineClip(self.clip, IMAGENET_STATS)
            else:
                emb = load_file(str(images.file("embeddings.safetensors")))
                teacher_set.cached_embeddings = {"train": emb["train"], "val": emb["val"]}
        return teacher_set

    def load_multimodal(self, artifact: Artifact, images: Artifact | None = None):
        from relaxkd.teachers import MultimodalTeacher

        info = self.check_teacher(artifact, "tx")
        module = MultimodalTeacher(**info["hparams"])
        module.load_state_dict(load_file(str(artifact.file("model.safetensors"))))
        return module.eval()


class _EmbeddingSet(torch.utils.data.Dataset):
    """Cached CLIP embeddings as ``(embedding, label, index)`` items."""

    def __init__(self, embeddings: torch.Tensor, labels: torch.Tensor):
        self.embeddings, self.labels = embeddings, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.embeddings[index].float(), int(self.labels[index]), index


def _strings(value: Any):
    """Every string inside a nested spec (dicts, lists)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
