"""What every stage runs in: the config, the two artifact stores and the artifacts verified so far.

A stage is a function ``stage(ctx) -> Artifact`` in its own file (see plan.py for the order). It
names everything that determines its result in a spec dict and hands the spec and its build
function to :meth:`Context.resolve`, which reuses the artifact with that key or builds and commits
it. The context also loads, once per process, what several stages read: the datasets, the class
list and the CLIP encoder.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml

from relaxkd.artifacts import Artifact, ArtifactStore, stable_hash
from relaxkd.config import ExperimentConfig
from relaxkd.console import say
from relaxkd.preflight import check_names  # imports a registry only for a name it does not list

#: artifacts already looked up or built in this process, by (store root, stage key)
Verified = dict[tuple[str, str], Artifact]


def log(message: str) -> None:
    say(message)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Context:
    """One experiment's config, its run store, the shared cache store and the verified artifacts.

    ``verified`` is shared by the contexts of a sweep's trials (:meth:`derive`), so an artifact
    checked once is not hashed again.
    """

    def __init__(self, cfg: ExperimentConfig, verified: Verified | None = None, timings: dict[str, list[float]] | None = None):
        check_names(cfg)
        self.cfg = cfg
        self.store = ArtifactStore(cfg.run_dir)
        self.shared = ArtifactStore(cfg.cache_root, setting="cache_root")
        self.verified: Verified = {} if verified is None else verified
        #: seconds each artifact built in this process took, by stage (the progress display's estimate)
        self.timings: dict[str, list[float]] = {} if timings is None else timings
        #: artifacts of graph nodes (stages/graph.py) resolved in this context: built or found (True), planned (False)
        self.nodes: dict[bool, dict] = {}

    def derive(self, cfg: ExperimentConfig) -> Context:
        """A context for another config (a sweep trial) that shares this one's verified artifacts and timings."""
        return Context(cfg, self.verified, self.timings)

    # -- the artifact of a stage -----------------------------------------------------------------
    def resolve(self, store: ArtifactStore, stage: str, spec: dict, build: Callable[[Path], None]) -> Artifact:
        """The artifact of ``stage`` with this spec: reused when present and intact, else built."""
        memo_key = (str(store.root), store.key(stage, spec))
        if memo_key in self.verified:  # verified once per process; later stages ask again
            return self.verified[memo_key]
        found = store.lookup(stage, spec)
        if found is None:
            # one builder per artifact, also across jobs and hosts sharing the store: the others wait, then reuse
            with self._build_lock(store, stage, memo_key[1]):
                found = store.lookup(stage, spec)
                if found is None:
                    return self._build(store, stage, spec, build)
        log(f"{stage}: reusing {found.path}")
        self.verified[memo_key] = found
        return found

    def _build_lock(self, store: ArtifactStore, stage: str, key: str):
        """The artifact's build lock; DDP workers (which re-run the command) build beside their rank 0."""
        from relaxkd.engine.launch import is_main_process

        if not is_main_process():
            return nullcontext()
        return store.build_lock(stage, key, on_wait=lambda line: log(f"{stage}: {line}"))

    def _build(self, store: ArtifactStore, stage: str, spec: dict, build: Callable[[Path], None]) -> Artifact:
        memo_key = (str(store.root), store.key(stage, spec))
        log(f"{stage}: computing -> {store.path(stage, memo_key[1])}")
        started = time.time()
        extra = {"seed": self.cfg.seed, "config_hash": self.config_hash, "inputs": self._inputs(spec)}
        with store.create(stage, spec, extra=extra) as tmp:
            (tmp / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            build(tmp)
        artifact = store.lookup(stage, spec, verify=False)
        assert artifact is not None
        self.verified[memo_key] = artifact
        seconds = time.time() - started
        self.timings.setdefault(stage, []).append(seconds)
        log(f"{stage}: done in {seconds:.1f}s")
        return artifact

    def work_dir(self, stage: str, spec: dict) -> Path:
        """Resumable scratch space (checkpoints) of a training stage of the run store."""
        return self.store.work_dir(stage, self.store.key(stage, spec))

    def _inputs(self, spec: dict) -> list[str]:
        """The artifacts (``<stage>-<key>``) a stage is built from: every one resolved here whose key its spec names."""
        named = set(_strings(spec))
        return sorted({f"{a.stage}-{a.key}" for a in self.verified.values() if a.key in named})

    @cached_property
    def config_hash(self) -> str:
        return stable_hash(self.cfg.to_dict())[:16]

    # -- what several stages read ----------------------------------------------------------------
    @cached_property
    def raw_train(self):
        return self._dataset("train")

    @cached_property
    def raw_val(self):
        return self._dataset("val")

    def _dataset(self, split: str):
        from relaxkd.data import build_dataset
        from relaxkd.data.files import recording_reads

        d = self.cfg.data
        with recording_reads() as metadata:
            dataset = build_dataset(d.dataset, d.root, split, transform=None, download=d.download, **d.params)
        dataset.metadata_files = metadata
        return dataset

    @cached_property
    def data_fingerprint(self) -> str | None:
        """The identity of the data on disk (data/files.py): every image of both splits by relative
        path, size and mtime (``data.fingerprint=content``: by SHA-256), every metadata file and the
        synset-override file by content. None for data without files of its own (digits)."""
        from relaxkd.data.files import fingerprint

        d = self.cfg.data
        train, val = self.raw_train, self.raw_val
        images = [*train.data_files(), *val.data_files()]
        metadata = [*train.metadata_files, *(p for p in val.metadata_files if p not in train.metadata_files)]
        if d.synset_overrides and Path(d.synset_overrides).expanduser().is_file():
            metadata.append(Path(d.synset_overrides).expanduser())
        if not images and not metadata:
            return None
        started = time.time()
        found = fingerprint(images, d.root, metadata, mode=d.fingerprint)
        if time.time() - started > 5:
            log(f"data fingerprint of {len(images)} files ({d.fingerprint}): {time.time() - started:.1f}s")
        return found

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
        """The classes' senses from their names (stages/embed_images.py ``class_synsets`` may re-pick them by images)."""
        return self.raw_train.synsets(self.cfg.data.synset_overrides)

    def augmented(self, raw, kind: str, stats, image_size: int | None = None, seed: int | None = None):
        """``raw`` with the seeded augmentation ``kind`` (see data/transforms.py) at the data's image size;
        views drawn with ``seed`` (default: the config's)."""
        from relaxkd.data.transforms import build_transform
        from relaxkd.engine.sampling import SeededAugmentation
        from relaxkd.stages.specs import batch_stage

        size = image_size or self.cfg.data.image_size
        stage = {"batch_stage": batch_stage(self.cfg)} if kind in ("weak", "strong") else {}
        transform = build_transform(kind, size, stats, policy=self.cfg.data.policy, cutout=self.cfg.data.cutout, **stage)
        return SeededAugmentation(raw, transform, self.cfg.seed if seed is None else seed)

    @cached_property
    def clip(self):
        from relaxkd.clip import load_clip

        c = self.cfg.clip
        return load_clip(c.model, c.weights, device=str(device()), precision=c.precision, seed=c.seed)


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
