"""Benchmark of distillation training speed: step overhead, loader headroom, ensemble, T_x input.

Figures (each a ratio of two sides measured in the same run, the sides interleaved round by
round with the order reversed every other round, medians over rounds), per size:

- ``kd_step_overhead_{size}``: one full distillation step as ``StudentDistiller.training_step``
  runs it (every teacher forward, KD loss, student forward/backward, SGD step) divided by the sum
  of its parts timed alone (student step with plain CE; image-teacher ensemble forward; online
  CLIP + T_x forward). Target ≤ 1.15. ``kd_step_overhead_lightning_demo``: Lightning's own step
  (``Trainer.fit``, timed from batch start to batch end) over the same sum; not interleaved.
- ``loader_headroom_{size}``: images/s of the real data pipeline (dataset, ``SeededAugmentation``
  with the strong transform, ``SeededDataModule``'s DataLoader with the configured workers) over
  images/s the full step consumes. Target ≥ 1.5.
- ``augment_batched_speedup_{32,224}``: strong augmentation with its ops per image on PIL over the
  same with the ops batched as uint8 tensors (one thread, as a loader worker): the measurement
  behind ``relaxkd.data.augment.BATCH_OPS_MAX_SIZE``.
- ``ensemble_speedup_{size}``: naive loop over the member teachers over ``TeacherEnsemble``
  (members fused into one network). Target ≥ 1.3 on CPU.
- ``tx_cached_vs_online_{size}``: T_x logits from online CLIP (image encoder per batch + head)
  over cached embeddings (lookup by index + head).

Sizes: ``demo`` (configs/demo.yaml: tiny_cnn student and teachers strong+weak, digits, 16 px,
batch 64, no workers) and ``cifar`` (configs/cifar100.yaml: resnet18 student, resnet50 teachers
strong+weak+strong2, 100 classes, 32 px, batch 128 with --full, 8 workers). T_x always uses the
random-weight CLIP ``relaxkd-tiny`` (the real ViT-B-32 would weigh far more online). Weights are
random: only speed is measured.

Usage:
    .venv/bin/python benchmarks/bench_train.py --quick            # all figures, ~2-3 min on 2 cores
    .venv/bin/python benchmarks/bench_train.py --full             # CIFAR batch 128, more rounds
    .venv/bin/python benchmarks/bench_train.py --device cuda --precision bf16 --only kd_step_overhead

Output: ``NAME VALUE`` lines (ratios), context lines start with ``#``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# Runs from a checkout without installing: put src/ on the path.
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if os.path.isdir(_SRC) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_SRC, os.environ.get("PYTHONPATH")]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


@dataclass(frozen=True)
class Size:
    name: str
    student: str
    teacher: str
    members: tuple[str, ...]
    num_classes: int
    image_size: int
    batch: int  # --full; --quick uses quick_batch
    quick_batch: int
    num_workers: int
    num_train: int  # T_x per-sample text modes are looked up by index in [0, num_train)
    tx_hidden: int
    tx_batch_norm: bool
    bank_size: int  # relaxed nouns: top_k (5) × clusters
    clip: str = "relaxkd-tiny"  # T_x's online CLIP (random weights)


SIZES = {
    "demo": Size("demo", "tiny_cnn", "tiny_cnn", ("strong", "weak"), 10, 16, 64, 64, 0, 1437, 256, True, 25),
    "cifar": Size(
        "cifar", "resnet18", "resnet50", ("strong", "weak", "strong2"), 100, 32, 128, 16, 8, 50_000, 512, False, 750
    ),
}
#: configs/cifar100.yaml as it trains: 224 px inputs, T_x fed online by ViT-B-32 (cached_targets_speedup only)
PAPER = Size(
    "paper", "resnet18", "resnet50", ("strong", "weak", "strong2"), 100, 224, 128, 16, 8, 50_000, 512, False, 750, "ViT-B-32"
)


@dataclass(frozen=True)
class Bench:
    device: torch.device
    precision: str
    quick: bool
    threads: int
    sizes: tuple[str, ...] = tuple(SIZES)

    def batch(self, size: Size) -> int:
        return size.quick_batch if self.quick else size.batch

    def heavy(self, size: Size) -> bool:
        return size.name in ("cifar", PAPER.name) and self.device.type == "cpu"  # seconds per step

    def rounds(self, size: Size) -> int:
        # enough rounds for a median on a noisy machine; fewer where one round takes seconds
        return (4 if self.heavy(size) else 60) if self.quick else (7 if self.heavy(size) else 60)

    def warmup(self, size: Size) -> int:
        return 1 if self.heavy(size) else 2

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def emit(name: str, value) -> None:
    if isinstance(value, float):
        value = f"{value:.3f}"
    print(f"{name} {value}", flush=True)


def note(text: str) -> None:
    print(f"# {text}", flush=True)


def timed(bench: Bench, cases: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each case.

    Cases run interleaved, one call each per round, the order reversed every other round, so slow
    drifts in machine load (other jobs on shared cores) hit every case alike; the median drops
    rounds disturbed by bursts. ``warmup`` untimed rounds first (allocator, oneDNN/cuDNN kernel
    choice, lazy initialisation).
    """
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            bench.sync()
            started = time.perf_counter()
            cases[name]()
            bench.sync()  # CUDA runs asynchronously: wait for the work, not just its launch
            if round_ >= warmup:
                samples[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    spread = ", ".join(
        f"{name} {medians[name] * 1e3:.1f} ms [{min(v) * 1e3:.1f}-{max(v) * 1e3:.1f}]" for name, v in samples.items()
    )
    note(f"  {rounds} rounds: {spread}")
    return medians


# --- the real modules -------------------------------------------------------------------------


@dataclass
class Setup:
    size: Size
    module: torch.nn.Module  # StudentDistiller
    optimizer: torch.optim.Optimizer
    members: list  # the image teachers as separate modules (for the naive loop)
    images: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    cached_embeddings: torch.Tensor


@cache
def setup(bench: Bench, size_name: str) -> Setup:
    """A StudentDistiller with a real TeacherSet, assembled as stages/teacher_loading.py does it."""
    import copy

    from relaxkd.clip import load_clip
    from relaxkd.clip.online import OnlineClip
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.distill import StudentDistiller, StudentSettings, TeacherSet
    from relaxkd.engine.settings import OptimConfig
    from relaxkd.models import TeacherEnsemble, build_backbone
    from relaxkd.teachers import MultimodalTeacher, TxSettings, assign_noise_classes, assign_text_modes

    size = PAPER if size_name == PAPER.name else SIZES[size_name]
    torch.manual_seed(0)
    members = [build_backbone(size.teacher, size.num_classes, "none").eval() for _ in size.members]
    clip = load_clip(size.clip, "none", device="cpu", precision="auto", seed=0)
    dim = clip.embed_dim
    tx = MultimodalTeacher(
        TxSettings(head_kwargs={"hidden_dim": size.tx_hidden, "dropout": 0.1, "batch_norm": size.tx_batch_norm}),
        embed_dim=dim, num_classes=size.num_classes, bank_size=size.bank_size, num_train=size.num_train, num_val=0,
    )
    tx.init_bank(F.normalize(torch.randn(size.bank_size, dim), dim=1))
    tx.class_text.copy_(F.normalize(torch.randn(size.num_classes, dim), dim=1))
    tx.train_modes.copy_(assign_text_modes(size.num_train, {"gt": 0.2, "wn": 0.8}, 0))  # paper proportions
    tx.train_noise.copy_(assign_noise_classes(size.num_train, size.num_classes, 0))
    teachers = TeacherSet(
        names=[*size.members, "tx"],
        image_teachers=TeacherEnsemble([copy.deepcopy(m) for m in members]),
        image_stats=IMAGENET_STATS,
        multimodal=tx.eval(),
        clip_encoder=OnlineClip(clip, IMAGENET_STATS),
    )
    optim_cfg = {"epochs": 1, "batch_size": bench.batch(size), "lr": 0.05, "warmup_epochs": 0, "milestones": [1]}
    module = StudentDistiller(
        StudentSettings(size.student, OptimConfig.model_validate(optim_cfg)), num_classes=size.num_classes,
        input_stats=IMAGENET_STATS, teachers=teachers,
    ).to(bench.device)
    module.train()
    batch = bench.batch(size)
    generator = torch.Generator().manual_seed(0)
    cached = F.normalize(torch.randn(size.num_train, dim, generator=generator), dim=1).half()  # as the embed stage stores them
    return Setup(
        size=size,
        module=module,
        optimizer=module.configure_optimizers()["optimizer"],
        members=[m.to(bench.device) for m in members],
        images=torch.randn(batch, 3, size.image_size, size.image_size, generator=generator).to(bench.device),
        targets=torch.randint(size.num_classes, (batch,), generator=generator).to(bench.device),
        indices=torch.randint(size.num_train, (batch,), generator=generator).to(bench.device),
        cached_embeddings=cached,
    )


def full_step(bench: Bench, s: Setup) -> None:
    """StudentDistiller.training_step plus what Lightning's automatic optimisation wraps round it."""
    s.optimizer.zero_grad(set_to_none=True)
    with bench.autocast():  # training_step without its logging: the KD method on the step's inputs
        loss = s.module.method(s.module.step_inputs((s.images, s.targets, s.indices)))["loss"]
    loss.backward()
    s.optimizer.step()


def student_step(bench: Bench, s: Setup) -> None:
    s.optimizer.zero_grad(set_to_none=True)
    with bench.autocast():
        loss = F.cross_entropy(s.module(s.images), s.targets)
    loss.backward()
    s.optimizer.step()


def ensemble_forward(bench: Bench, s: Setup) -> None:
    with torch.inference_mode(), bench.autocast():
        s.module.teacher_set.image_teachers(s.images)


def tx_online(bench: Bench, s: Setup) -> None:
    ts = s.module.teacher_set
    with torch.inference_mode(), bench.autocast():
        ts.multimodal.logits(ts.clip_encoder(s.images).float(), s.targets, s.indices, "train")


def tx_cached(bench: Bench, s: Setup) -> None:
    # as TeacherSet.logits does with cached embeddings: CPU table, lookup, copy to the device
    ts = s.module.teacher_set
    with torch.inference_mode(), bench.autocast():
        emb = s.cached_embeddings[s.indices.cpu()].to(s.images.device).float()
        ts.multimodal.logits(emb, s.targets, s.indices, "train")


def parts_alone(bench: Bench, s: Setup) -> None:
    # one case for the three parts: a median of their sum, like the full step's, not a sum of
    # medians (which noise skewed to the right biases low)
    student_step(bench, s)
    ensemble_forward(bench, s)
    tx_online(bench, s)


@cache
def step_seconds(bench: Bench, size_name: str) -> dict[str, float]:
    """Median seconds of the full step and of its parts run one after another, interleaved."""
    s = setup(bench, size_name)
    note(f"{size_name}: step timings, batch {bench.batch(s.size)} (parts: student step + ensemble + CLIP/T_x)")
    cases = {"full": lambda: full_step(bench, s), "parts": lambda: parts_alone(bench, s)}
    return timed(bench, cases, bench.rounds(s.size), bench.warmup(s.size))


# --- figures ----------------------------------------------------------------------------------

#: figure name -> function(bench) printing its lines; adding a figure is adding one function
FIGURES: dict[str, Callable[[Bench], None]] = {}


def figure(fn: Callable[[Bench], None]) -> Callable[[Bench], None]:
    FIGURES[fn.__name__] = fn
    return fn


@figure
def kd_step_overhead(bench: Bench) -> None:
    for size_name in bench.sizes:
        t = step_seconds(bench, size_name)
        emit(f"kd_step_overhead_{size_name}", t["full"] / t["parts"])
    if "demo" in bench.sizes:
        lightning_step_overhead(bench, "demo")


def lightning_step_overhead(bench: Bench, size_name: str) -> None:
    """Lightning's fit per step (batch start to batch end, data fetch excluded) over the parts' sum.

    A block of steps after the interleaved timings, not interleaved with them (a fit has a start-up
    cost far above one demo step).
    """
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from relaxkd.engine.trainer import quiet_lightning

    s = setup(bench, size_name)
    warmup, steps = 3, (15 if bench.quick else 100)

    class StepClock(Callback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            bench.sync()
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            bench.sync()
            self.seconds.append(time.perf_counter() - self.started)

    batch = (s.images, s.targets, s.indices)
    loader = torch.utils.data.DataLoader([batch] * (warmup + steps), batch_size=None)  # ready-made batches
    clock = StepClock()
    quiet_lightning()
    with tempfile.TemporaryDirectory() as work, open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        trainer = L.Trainer(
            max_steps=warmup + steps, accelerator=bench.device.type, devices=1,
            precision="bf16-mixed" if bench.precision == "bf16" else "32-true", logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=work, callbacks=[clock],
        )
        trainer.fit(s.module, train_dataloaders=loader)
    s.module.to(bench.device)  # Lightning's teardown moved it to the CPU
    lightning = statistics.median(clock.seconds[warmup:])
    t = step_seconds(bench, size_name)
    note(f"{size_name}: Lightning step {lightning * 1e3:.1f} ms (median of {steps}) vs manual full step {t['full'] * 1e3:.1f} ms")
    emit(f"kd_step_overhead_lightning_{size_name}", lightning / t["parts"])


def synthetic_cifar100(root: Path, num_train: int) -> None:
    """CIFAR-100 in torchvision's on-disk format (random 32×32 uint8 pixels, 100 classes)."""
    import numpy as np

    rng = np.random.default_rng(0)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, count in (("train", num_train), ("test", 1000)):
        data = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), "fine_labels": rng.integers(0, 100, count).tolist()}
        with open(folder / split, "wb") as handle:
            pickle.dump(data, handle)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"class{i:02d}" for i in range(100)]}, handle)


@figure
def loader_headroom(bench: Bench) -> None:
    from relaxkd.data import IMAGENET_STATS, build_dataset, build_transform
    from relaxkd.engine import sampling
    from relaxkd.engine.trainer import SeededDataModule

    with tempfile.TemporaryDirectory() as tmp:
        for size_name in bench.sizes:
            size = SIZES[size_name]
            batch = bench.batch(size)
            if size_name == "demo":
                raw = build_dataset("digits", None, "train")  # as the demo's Context.raw_train
                what = "scikit-learn digits (1,437 train images, 32 px RGB)"
            else:
                synthetic_cifar100(Path(tmp), 10_000)
                raw = build_dataset("cifar100", tmp, "train")
                what = (
                    "synthetic CIFAR-100 stand-in in torchvision's format (10,000 random 32x32 uint8 images), real "
                    "CIFAR100Dataset"
                )
            transform = build_transform("strong", size.image_size, IMAGENET_STATS, policy="cifar")
            train = sampling.SeededAugmentation(raw, transform, seed=0)  # as Context.augmented
            loader = SeededDataModule(train, None, batch, size.num_workers, seed=0).train_dataloader()
            # enough batches per block that the workers' start-of-epoch prefetch does not dominate
            per_block = max(4, 3 * size.num_workers)
            blocks = {"epoch": 0}

            def fetch_block() -> None:
                blocks["epoch"] += 1
                loader.sampler.set_epoch(blocks["epoch"])
                iterator = iter(loader)
                for _ in range(per_block):
                    images, *_ = next(iterator)
                    images.to(bench.device, non_blocking=True)

            s = setup(bench, size_name)
            note(f"{size_name}: loader {what}; strong aug {size.image_size} px, batch {batch}, {size.num_workers} workers, "
                 f"{per_block} batches per block")
            t = timed(bench, {"loader_block": fetch_block, "full": lambda: full_step(bench, s)},
                      max(3, bench.rounds(size) // 2), warmup=1)
            del loader  # stop its persistent workers before the next measurement
            loaded = per_block * batch / t["loader_block"]
            consumed = batch / t["full"]
            note(f"{size_name}: loader {loaded:.0f} images/s, distillation step consumes {consumed:.0f} images/s")
            emit(f"loader_headroom_{size_name}", loaded / consumed)
            seeding_cost(raw, transform)


def seeding_cost(raw, transform) -> None:
    """Context: per image, SeededAugmentation's reseeding, the decode and the per-image stage; per
    batch image, the batch stage (ops, normalisation, Cutout)."""
    from relaxkd.engine import sampling

    count = 256
    started = time.perf_counter()
    for i in range(count):
        sampling._restore_all(sampling._seed_all(i))
    seeding = (time.perf_counter() - started) / count
    started = time.perf_counter()
    images = [raw[i % len(raw)][0] for i in range(count)]
    decode = (time.perf_counter() - started) / count
    started = time.perf_counter()
    prepared = [transform.prepare(image) for image in images]
    prepare = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for first in range(0, count, 64):
        transform.finish(prepared[first:first + 64])
    finish = (time.perf_counter() - started) / count
    note(f"  per image: reseed+restore {seeding * 1e6:.0f} us, decode {decode * 1e6:.0f} us, crop/flip/draws "
         f"{prepare * 1e6:.0f} us, batch stage {finish * 1e6:.0f} us (batches of 64, main process)")


@figure
def augmentation_regimes(bench: Bench) -> None:
    """Why ops run per batch up to ``BATCH_OPS_MAX_SIZE`` px and per image on PIL above: the strong
    CIFAR augmentation (SeededAugmentation, batches of 128 from 32 px images) both ways, on one
    thread as in a loader worker. ``augment_batched_speedup_{px}`` = per-image PIL ops / batched
    tensor ops; > 1 favours batching."""
    import numpy as np
    from PIL import Image

    from relaxkd.data import IMAGENET_STATS, build_transform
    from relaxkd.engine.sampling import SeededAugmentation

    class Raw(torch.utils.data.Dataset):
        def __init__(self, count: int):
            self.pixels = np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)

        def __len__(self):
            return len(self.pixels)

        def __getitem__(self, index):
            return Image.fromarray(self.pixels[index]), 0, index

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for size in (32, 224):
            batches = 2 if size > 64 else 6
            per_regime = {}
            for batched in (True, False):
                transform = build_transform("strong", size, IMAGENET_STATS, policy="cifar")
                transform.batch_ops = batched
                data = SeededAugmentation(Raw(128 * batches), transform, seed=0)
                per_regime["batched" if batched else "per_image_pil"] = lambda data=data: [
                    data.__getitems__(list(range(128 * b, 128 * (b + 1)))) for b in range(batches)]
            t = timed(bench, per_regime, 3 if size > 64 else 5, warmup=1)
            images = 128 * batches
            note(f"{size} px: batched {t['batched'] / images * 1e6:.0f} us an image, "
                 f"per image on PIL {t['per_image_pil'] / images * 1e6:.0f} us (one thread, batches of 128)")
            emit(f"augment_batched_speedup_{size}", t["per_image_pil"] / t["batched"])
    finally:
        torch.set_num_threads(threads)


@figure
def ensemble_speedup(bench: Bench) -> None:
    import copy

    from relaxkd.models import TeacherEnsemble

    for size_name in bench.sizes:
        s = setup(bench, size_name)
        ensemble = s.module.teacher_set.image_teachers
        # distill.compile_teachers=true: the fused network through torch.compile; its one-off
        # compile is timed separately, then it is timed like the others
        compiled = TeacherEnsemble(s.members, compiled=True).to(bench.device)
        started = time.perf_counter()
        with torch.inference_mode(), bench.autocast():
            compiled(s.images)
        compile_seconds = time.perf_counter() - started
        cases = {
            "loop": lambda: torch.stack([m(s.images) for m in s.members]),
            "ensemble": lambda: ensemble(s.images),
            "compiled": lambda: compiled(s.images),
        }
        context = not (bench.quick and bench.heavy(s.size))  # CIFAR on a CPU: --full only, for time
        if context:  # the other ways to run the members: TeacherEnsemble's vmap, a channels_last loop
            vmap = TeacherEnsemble(s.members, strategy="vmap").to(bench.device)
            members_cl = [copy.deepcopy(m).to(memory_format=torch.channels_last) for m in s.members]
            images_cl = s.images.contiguous(memory_format=torch.channels_last)
            cases["vmap"] = lambda: vmap(s.images)
            cases["loop_channels_last"] = lambda: torch.stack([m(images_cl) for m in members_cl])

        def run(fn):
            def call():
                with torch.inference_mode(), bench.autocast():
                    fn()
            return call

        note(
            f"{size_name}: {len(s.members)}x {s.size.teacher} forward, batch {bench.batch(s.size)}, ensemble strategy "
            f"{ensemble.strategy}"
        )
        t = timed(bench, {name: run(fn) for name, fn in cases.items()}, bench.rounds(s.size), bench.warmup(s.size))
        if context:
            note(f"{size_name}: loop over vmap {t['loop'] / t['vmap']:.2f}, "
                 f"loop over loop_channels_last {t['loop'] / t['loop_channels_last']:.2f}")
        note(f"{size_name}: compiling the fused network took {compile_seconds:.1f} s (once per training run)")
        emit(f"ensemble_speedup_{size_name}", t["loop"] / t["ensemble"])
        emit(f"ensemble_speedup_compiled_{size_name}", t["loop"] / t["compiled"])


@figure
def tx_cached_vs_online(bench: Bench) -> None:
    for size_name in bench.sizes:
        s = setup(bench, size_name)
        note(f"{size_name}: T_x ({s.size.tx_hidden}-wide mlp head) on relaxkd-tiny CLIP embeddings, batch {bench.batch(s.size)}")
        t = timed(bench, {"online": lambda: tx_online(bench, s), "cached": lambda: tx_cached(bench, s)}, 3 * bench.rounds(s.size))
        emit(f"tx_cached_vs_online_{size_name}", t["online"] / t["cached"])


@figure
def cached_targets_speedup(bench: Bench) -> None:
    """Student epoch time with every teacher online over with their targets cached (Fast-KD style).

    One epoch through the real Lightning loop (``build_trainer``, ``SeededDataModule``, strong
    augmentation, ``StudentDistiller``), timed from the epoch's start to its last batch's end (data
    loading in; fit set-up and the epoch-end checkpoint out). The cache is recorded first by
    ``build_targets`` with the same teachers (not timed: paid once per teacher set, then reused
    by every student recipe). At the paper's size (configs/cifar100.yaml: 224 px, 3 ResNet50 +
    T_x on online ViT-B-32) and the demo's; then demo students' top-1, online vs cached.
    """
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_cifar100(Path(tmp), 10_000)
        for size_name, num_train in ((PAPER.name, 48 if bench.quick else 512), ("demo", 1437)):
            s = setup(bench, size_name)
            t = epoch_seconds(bench, s, Path(tmp), num_train, repeats=1 if bench.quick and bench.heavy(s.size) else 3)
            suffix = "" if size_name == PAPER.name else f"_{size_name}"
            emit(f"cached_targets_speedup{suffix}", t["online"] / t["cached"])
    demo_accuracy(bench)


def epoch_seconds(bench: Bench, s: Setup, cifar_root: Path, num_train: int, repeats: int) -> dict[str, float]:
    from lightning.pytorch.callbacks import Callback

    from relaxkd.config import TrainerConfig
    from relaxkd.data import IMAGENET_STATS, build_dataset, build_transform
    from relaxkd.distill import CachedTargets, StudentDistiller, StudentSettings, TeacherSet, build_targets
    from relaxkd.engine.sampling import SeededAugmentation
    from relaxkd.engine.settings import OptimConfig
    from relaxkd.engine.trainer import SeededDataModule, build_trainer

    size, batch = s.size, bench.batch(s.size)
    # the configured workers on a GPU machine; on a CPU their start-up per epoch would only blur
    # a few-batch epoch (decoding costs ~1 ms an image next to seconds per step)
    workers = size.num_workers if bench.device.type == "cuda" else 0
    if size.name == "demo":
        raw = build_dataset("digits", None, "train")
    else:
        raw = torch.utils.data.Subset(build_dataset("cifar100", str(cifar_root), "train"), range(num_train))
    train = SeededAugmentation(raw, build_transform("strong", size.image_size, IMAGENET_STATS, policy="cifar"), 0)
    online = s.module.teacher_set

    class EpochClock(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            bench.sync()
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            bench.sync()
            self.seconds = time.perf_counter() - self.started

    seconds: dict[str, list[float]] = {"online": [], "cached": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "targets").mkdir()
        with torch.autocast(bench.device.type, dtype=torch.bfloat16, enabled=bench.precision == "bf16"):
            build_targets(
                lambda images, targets, indices, split: online.logits(images, targets, indices, split, IMAGENET_STATS),
                train,
                torch.utils.data.Subset(train, []),
                out=root / "targets",
                work=root / "work",
                epochs=1,
                seed=0,
                batch_size=batch,
                num_workers=workers,
                top_k=0,
                temperature=4.0,
                device=bench.device,
            )
        replay = CachedTargets(root / "targets", num_teachers=len(online.names), num_classes=size.num_classes, epochs=1, seed=0)
        sides = {"online": online, "cached": TeacherSet(names=online.names, cached=replay)}
        cfg = TrainerConfig(
            accelerator="gpu" if bench.device.type == "cuda" else "cpu", devices=1, progress=False, logger="none",
            precision="bf16-mixed" if bench.precision == "bf16" else "32-true",
        )
        for repeat in range(repeats):
            for name in sides if repeat % 2 == 0 else reversed(list(sides)):
                torch.manual_seed(0)
                optim = OptimConfig(epochs=1, batch_size=batch, lr=0.05, warmup_epochs=0, milestones=[1])
                module = StudentDistiller(StudentSettings(size.student, optim), num_classes=size.num_classes,
                                          input_stats=IMAGENET_STATS, teachers=sides[name])
                clock = EpochClock()
                trainer = build_trainer(cfg, root / f"{name}-{repeat}", 1, callbacks=[clock])
                trainer.limit_val_batches = 0
                with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
                    trainer.fit(module, datamodule=SeededDataModule(train, None, batch, workers, seed=0))
                seconds[name].append(clock.seconds)
    for teacher in online.modules().values():
        teacher.to(bench.device)  # Lightning's teardown moved the online teachers to the CPU
    t = {name: statistics.median(values) for name, values in seconds.items()}
    note(
        f"{size.name}: one epoch of {len(train)} images, batch {batch}, {workers} workers: online {t['online']:.2f} s, "
        f"cached {t['cached']:.2f} s (median of {repeats}; teachers {'+'.join(size.members)} x {size.teacher} + T_x on "
        f"{size.clip})"
    )
    return t


def demo_accuracy(bench: Bench) -> None:
    """Top-1 of demo students distilled online, from an exact cache and from a top-3 cache.

    The tests' tiny demo config (digits, random-weight CLIP, 2-epoch teachers and students): demo
    numbers, not the paper's. The exact cache replays the online run bit for bit, so its difference is 0.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from relaxkd.config import load_config
    from relaxkd.stages.context import Context
    from relaxkd.stages.distill import distill

    from conftest import tiny_overrides

    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        def top1(*extra: str) -> float:
            overrides = tiny_overrides(Path(tmp)) + [
                f"trainer.accelerator={'gpu' if bench.device.type == 'cuda' else 'cpu'}",
                *extra,
            ]
            cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml", overrides)
            return float(distill(Context(cfg)).read_json("metrics.json")["top1"])

        online = top1()
        exact = top1("distill.targets=cached")
        top3 = top1("distill.targets=cached", "distill.cache_top_k=3")
    note(
        f"demo students (tiny config, random-weight CLIP): top-1 online {online:.2f}, exact cache {exact:.2f}, top-3 cache "
        f"{top3:.2f}"
    )
    emit("cached_targets_top1_diff", exact - online)
    emit("cached_targets_top3_top1_diff", top3 - online)


# --- main -------------------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small CIFAR batch, few rounds (default)")
    mode.add_argument("--full", action="store_true", help="CIFAR batch 128, more rounds")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast, as Lightning's bf16-mixed")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's, i.e. the cores or OMP_NUM_THREADS)"
    )
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), help="figures to run (default: all)")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES), help="sizes (default: all)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    # the configured worker count (8 for CIFAR) is measured as configured, even on fewer cores
    warnings.filterwarnings("ignore", message=r".*DataLoader will create \d+ worker processes.*")
    bench = Bench(torch.device(args.device), args.precision, quick=not args.full, threads=torch.get_num_threads(),
                  sizes=tuple(args.sizes))
    device = torch.cuda.get_device_name() if bench.device.type == "cuda" else platform.processor() or platform.machine()
    note(
        f"{'quick' if bench.quick else 'full'}; device {args.device} ({device}); precision {args.precision}; "
        f"torch {torch.__version__}, {bench.threads} CPU threads, {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    started = time.perf_counter()
    for name in args.only or FIGURES:
        FIGURES[name](bench)
    note(f"total {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
