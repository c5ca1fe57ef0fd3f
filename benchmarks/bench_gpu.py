"""Feeding one accelerator: how close distillation gets to the student's own training step.

The floor is the student's own step: plain ResNet18 cross-entropy training (SGD, momentum) at the
same batch, precision (bf16 autocast on a GPU, as Lightning's ``bf16-mixed``; fp32 on a CPU) and
memory layout (channels_last on an accelerator, as ``ClassifierModule.setup`` converts it; NCHW on
a CPU). Per size (``paper`` = configs/cifar100.yaml's 224 px, ``cifar`` = 32 px; batch 128,
``--quick`` 16; 100 classes) it prints ``NAME VALUE`` lines:

- ``student_floor_images_per_s_{size}``: the floor.
- ``cached_step_vs_floor_{size}``: a ``StudentDistiller`` step with cached teacher targets (replayed
  from the device by one gather) over the floor, in images/s. Target >= 0.9.
- ``online_step_vs_floor_{size}``: the same with every teacher online (3 x ResNet50 + T_x on online
  CLIP: ViT-B-32 at paper size, relaxkd-tiny at 32 px; bench_train.setup's real modules).
- ``cached_epoch_vs_step_{size}``: images/s of a whole epoch through the real Lightning loop
  (``build_trainer``, ``SeededDataModule`` over a synthetic CIFAR-100-format dataset, strong
  augmentation with its batch stage on the device, the machine's CPU cores as workers; the second
  epoch, workers already up) over the cached step alone. Target >= 0.85.
  ``loader_images_per_s_{size}``: what the loader alone delivers (context).
- ``{case}_peak_gib_{size}``: the most memory the case allocated on the device above what was
  allocated before it was built (its model, optimiser state, activations, resident targets or
  teachers); ``nan`` on a CPU.
- ``batch_stage_ms_{size}``: the device batch stage (strong CIFAR policy) per batch;
  ``batch_stage_ops_differing_{size}``: how many of the 14 ops give a different uint8 result on the
  device than on the CPU (``#`` lines name each, with the largest difference and the share of
  pixels): on a CPU this compares the CPU with itself (0).

    python benchmarks/bench_gpu.py                        # on a GPU machine (one run, ~3-5 min)
    python benchmarks/bench_gpu.py --device cpu --quick   # smoke run on a CPU (small batch, few rounds)
    python benchmarks/bench_gpu.py --only stages          # the older per-stage fp32/bf16 table
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_train import PAPER, SIZES, Bench, emit, full_step, note, setup, synthetic_cifar100, timed

NUM_TEACHERS = 4  # strong, weak, strong2, tx: bench_train.setup's teacher set


def peak_gib(bench: Bench) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if bench.device.type == "cuda" else 0.0


def _size(name: str):
    return PAPER if name == PAPER.name else SIZES[name]


def _channels_last(bench: Bench) -> bool:
    return bench.device.type != "cpu"  # as ClassifierModule.setup under Lightning


@contextlib.contextmanager
def footprint(bench: Bench, out: dict, key: str):
    """``out[key]``: GiB allocated on the device at the peak of the block above what was allocated before it."""
    if bench.device.type != "cuda":
        yield
        out[key] = math.nan
        return
    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    yield
    torch.cuda.synchronize()
    out[key] = (torch.cuda.max_memory_allocated() - before) / 2**30


def cached_targets_dir(root: Path, num_train: int, num_classes: int, epochs: int, seed: int = 0) -> Path:
    """Recorded targets in the teacher-targets stage's format (random logits: only speed matters)."""
    from safetensors.torch import save_file

    from relaxkd.distill.targets import TRAIN_FILE, VAL_FILE, compress
    from relaxkd.engine.sampling import sample_seed

    root.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        logits = torch.randn(NUM_TEACHERS, num_train, num_classes, generator=generator)
        save_file({**compress(logits, 0, 4.0), "aug_seeds": sample_seed(seed, epoch, torch.arange(num_train))},
                  str(root / TRAIN_FILE.format(epoch=epoch)))
    save_file(compress(torch.randn(NUM_TEACHERS, 1, num_classes), 0, 4.0), str(root / VAL_FILE))
    return root


def cached_student(bench: Bench, size, root: Path, epochs: int, compile_student: bool = False):
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.distill import CachedTargets, StudentDistiller, StudentSettings, TeacherSet
    from relaxkd.engine.settings import OptimConfig

    replay = CachedTargets(root, num_teachers=NUM_TEACHERS, num_classes=size.num_classes, epochs=epochs, seed=0)
    torch.manual_seed(0)
    optim = OptimConfig(epochs=epochs, batch_size=bench.batch(size), lr=0.05, warmup_epochs=0, milestones=[epochs])
    return StudentDistiller(
        StudentSettings(size.student, optim, compile_student=compile_student), num_classes=size.num_classes,
        input_stats=IMAGENET_STATS, teachers=TeacherSet(names=[*size.members, "tx"], cached=replay),
    )


def steps(bench: Bench, size_name: str, rounds: int, root: Path, compile_student: bool) -> dict[str, float]:
    """Floor, cached and online steps: images/s (interleaved timing) and each one's device footprint."""
    from relaxkd.models import build_backbone

    size, batch = _size(size_name), bench.batch(_size(size_name))
    layout = torch.channels_last if _channels_last(bench) else torch.contiguous_format
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, size.image_size, size.image_size, generator=generator).to(bench.device)
    images = images.contiguous(memory_format=layout)  # as the device batch stage hands them over
    targets = torch.randint(size.num_classes, (batch,), generator=generator).to(bench.device)
    indices = torch.randperm(size.num_train, generator=generator)[:batch].to(bench.device)
    peaks: dict[str, float] = {}
    cases = {}

    with footprint(bench, peaks, "student_floor"):
        torch.manual_seed(0)
        floor = build_backbone(size.student, size.num_classes, "none").to(bench.device).to(memory_format=layout)
        floor_opt = torch.optim.SGD(floor.parameters(), lr=0.05, momentum=0.9)

        def floor_step():
            floor_opt.zero_grad(set_to_none=True)
            with bench.autocast():
                loss = F.cross_entropy(floor(images), targets)
            loss.backward()
            floor_opt.step()

        for _ in range(2):
            floor_step()
    cases["student_floor"] = floor_step

    def module_step(module, optimizer):
        def step():
            optimizer.zero_grad(set_to_none=True)
            with bench.autocast():  # training_step without its logging
                loss = module.method(module.step_inputs((images, targets, indices)))["loss"]
            loss.backward()
            optimizer.step()
        return step

    variants = {"cached": False, **({"cached_compiled": True} if compile_student else {})}
    for name, compiled in variants.items():
        try:
            with footprint(bench, peaks, name):
                module = cached_student(bench, size, root, 1, compile_student=compiled).to(bench.device).to(memory_format=layout)
                module.train()
                started = time.perf_counter()
                cases[name] = module_step(module, module.configure_optimizers()["optimizer"])
                for _ in range(2):
                    cases[name]()
                if compiled:
                    bench.sync()
                    note(f"{size_name}: compiling the student took {time.perf_counter() - started:.1f} s (once per run)")
        except Exception as err:  # noqa: BLE001 - a compile failure must not cost the other figures
            if not compiled:
                raise
            note(f"{size_name}: compiled student failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); skipped")
            cases.pop(name, None)
            peaks.pop(name, None)

    with footprint(bench, peaks, "online"):
        s = setup(bench, size_name)  # real teachers: 3 x ResNet50 fused + T_x on online CLIP
        s.module.to(memory_format=layout)
        s = type(s)(**{**s.__dict__, "images": images, "targets": targets, "indices": indices})
        cases["online"] = lambda: full_step(bench, s)
        for _ in range(2):
            cases["online"]()
    # bench_train.setup also keeps the members as separate models (its naive-loop baseline): not part of a run
    if bench.device.type == "cuda":
        peaks["online"] -= sum(t.numel() * t.element_size() for m in s.members for t in [*m.parameters(), *m.buffers()]) / 2**30

    note(f"{size_name}: {size.image_size} px, batch {batch}, {bench.precision}, "
         f"{'channels_last' if _channels_last(bench) else 'NCHW'}; {rounds} rounds")
    seconds = timed(bench, cases, rounds, warmup=2)
    per_s = {name: batch / t for name, t in seconds.items()}
    emit(f"student_floor_images_per_s_{size_name}", per_s["student_floor"])
    emit(f"cached_step_vs_floor_{size_name}", per_s["cached"] / per_s["student_floor"])
    if "cached_compiled" in per_s:
        emit(f"cached_compiled_step_vs_floor_{size_name}", per_s["cached_compiled"] / per_s["student_floor"])
    emit(f"online_step_vs_floor_{size_name}", per_s["online"] / per_s["student_floor"])
    for name, gib in peaks.items():
        emit(f"{name}_peak_gib_{size_name}", gib)
    del s
    setup.cache_clear()
    return per_s


def epoch(bench: Bench, size_name: str, step_images_per_s: float, root: Path, workers: int, num_train: int) -> None:
    """One epoch through the real Lightning loop and loader (the second of two: workers up), cached targets."""
    from lightning.pytorch.callbacks import Callback

    from relaxkd.config import TrainerConfig
    from relaxkd.data import IMAGENET_STATS, build_dataset, build_transform
    from relaxkd.engine.sampling import SeededAugmentation
    from relaxkd.engine.trainer import SeededDataModule, build_trainer

    size, batch = _size(size_name), bench.batch(_size(size_name))
    data_root = root / "cifar"
    if not data_root.exists():
        synthetic_cifar100(data_root, num_train)
    raw = build_dataset("cifar100", str(data_root), "train")
    transform = build_transform("strong", size.image_size, IMAGENET_STATS, policy="cifar", batch_stage="device")
    train = SeededAugmentation(raw, transform, seed=0)

    # the loader alone, same workers, second epoch
    loader = SeededDataModule(train, None, batch, workers, seed=0).train_dataloader()
    for epoch_index in range(2):
        loader.sampler.set_epoch(epoch_index)
        started = time.perf_counter()
        for images, *_ in loader:
            images.to(bench.device)
        bench.sync()
        loaded = len(train) / (time.perf_counter() - started)
    del loader
    emit(f"loader_images_per_s_{size_name}", loaded)

    class EpochClock(Callback):
        seconds: dict[int, float] = {}

        def on_train_epoch_start(self, trainer, pl_module):
            bench.sync()
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx + 1 == trainer.num_training_batches:
                bench.sync()
                self.seconds[trainer.current_epoch] = time.perf_counter() - self.started

    targets = cached_targets_dir(root / f"targets-{size_name}-{num_train}", num_train, size.num_classes, epochs=2)
    module = cached_student(bench, size, targets, 2)
    cfg = TrainerConfig(
        accelerator="gpu" if bench.device.type == "cuda" else "cpu", devices=1, progress=False, logger="none",
        precision="bf16-mixed" if bench.precision == "bf16" else "32-true",
    )
    clock = EpochClock()
    trainer = build_trainer(cfg, root / f"fit-{size_name}", 2, callbacks=[clock])
    trainer.limit_val_batches = 0
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        trainer.fit(module, datamodule=SeededDataModule(train, None, batch, workers, seed=0))
    per_s = len(train) / clock.seconds[1]
    note(f"{size_name}: epoch of {len(train)} images, batch {batch}, {workers} workers, batch stage on the device: "
         f"{clock.seconds[1]:.2f} s = {per_s:.0f} images/s (first epoch {clock.seconds[0]:.2f} s); "
         f"the cached step alone {step_images_per_s:.0f} images/s; the loader alone {loaded:.0f} images/s")
    emit(f"cached_epoch_vs_step_{size_name}", per_s / step_images_per_s)


def batch_stage(bench: Bench, size_name: str, rounds: int) -> None:
    """The device batch stage: its time per batch, and each op on the device against the CPU."""
    import numpy as np

    from relaxkd.data import IMAGENET_STATS, build_transform
    from relaxkd.data.augment import OPS, DeviceBatch, RandAugmentDraw, apply_ops

    size, batch = _size(size_name), bench.batch(_size(size_name))
    px = size.image_size
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (batch, px, px, 3), dtype=np.uint8))
    # every op, half the images with the negated magnitude (RandAugment's magnitude 9 of 31 bins)
    table = {op_id: (magnitude, signed) for op_id, magnitude, signed in RandAugmentDraw(px)._ops}  # Invert: none
    differing = 0
    for op_id, name in enumerate(OPS):
        if name == "Identity":
            continue
        ops = torch.full((batch, 1), op_id, dtype=torch.int64)
        magnitude, signed = table.get(op_id, (0.0, False))
        magnitudes = torch.tensor([[-magnitude if signed and i % 2 else magnitude] for i in range(batch)], dtype=torch.float64)
        on_cpu = apply_ops(pixels.permute(0, 3, 1, 2), ops, magnitudes)
        on_device = apply_ops(pixels.to(bench.device).permute(0, 3, 1, 2), ops, magnitudes).cpu()
        diff = (on_cpu.int() - on_device.int()).abs()
        if diff.any():
            differing += 1
            note(f"{size_name}: {name} differs on {bench.device.type}: max {int(diff.max())} levels, "
                 f"{100 * (diff > 0).float().mean().item():.4f} % of values")
    emit(f"batch_stage_ops_differing_{size_name}", differing)

    transform = build_transform("strong", px, IMAGENET_STATS, policy="cifar", batch_stage="device")
    prepared = []
    images = [rng.integers(0, 256, (px, px, 3), dtype=np.uint8) for _ in range(batch)]
    from PIL import Image

    for i, image in enumerate(images):
        torch.manual_seed(i)
        prepared.append(transform.prepare(Image.fromarray(image)))
    collated: DeviceBatch = transform.collate(prepared)
    loader_stage = build_transform("strong", px, IMAGENET_STATS, policy="cifar")
    loader_stage.batch_ops = True  # the same tensor ops on the CPU, in the loader
    expected = loader_stage.finish(prepared)
    moved = collated.pin_memory().to(bench.device) if bench.device.type == "cuda" else collated
    finished = transform.finish_batch(moved)
    note(f"{size_name}: whole strong batch stage, device vs CPU: max |diff| "
         f"{(finished.float().cpu() - expected).abs().max().item():.3g} (normalised units)")
    t = timed(bench, {"batch_stage": lambda: transform.finish_batch(moved)}, rounds, warmup=2)
    emit(f"batch_stage_ms_{size_name}", t["batch_stage"] * 1e3)


@contextlib.contextmanager
def section(name: str):
    """Runs a block; a failure is printed (``# FAILED`` and the traceback) and the run goes on."""
    try:
        yield
    except Exception:  # noqa: BLE001
        import traceback

        note(f"FAILED: {name}")
        print(traceback.format_exc(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="batch 16, few rounds, small epochs (a CPU smoke run)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--sizes", nargs="+", choices=["paper", "cifar"], default=["paper", "cifar"])
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="loader workers (default: the CPU cores)")
    parser.add_argument("--epoch-images", type=int, default=None, help="images per epoch (default 10,000; --quick 64)")
    parser.add_argument("--compile", action="store_true", help="also time the cached step with distill.compile_student")
    parser.add_argument("--only", nargs="+", choices=["steps", "epoch", "batch_stage", "stages"],
                        default=["steps", "epoch", "batch_stage"])
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible (use --device cpu --quick for a smoke run)")
    torch.backends.cudnn.benchmark = True
    precision = "bf16" if device.type == "cuda" else "fp32"
    bench = Bench(device, precision, quick=args.quick, threads=torch.get_num_threads())
    rounds = args.rounds or (3 if args.quick else 20)
    epoch_images = args.epoch_images or (64 if args.quick else 10_000)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    import lightning
    import torchvision

    note(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; device {name}; torch {torch.__version__}, torchvision "
         f"{torchvision.__version__}, lightning {lightning.__version__}; {os.cpu_count()} CPUs, {args.workers} workers; "
         f"{precision}; load average {os.getloadavg()[0]:.1f}" + ("; CPU FIGURES, not a GPU's" if device.type == "cpu" else ""))
    if "stages" in args.only:
        stages(args, device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for size_name in args.sizes:
            size = _size(size_name)
            per_s = None
            # one section failing (a kernel missing on this device) must not cost the others: one run only
            with section(f"{size_name} steps"):
                if "steps" in args.only or "epoch" in args.only:
                    per_s = steps(bench, size_name, rounds, cached_targets_dir(root / f"step-{size_name}", size.num_train,
                                                                              size.num_classes, epochs=1), args.compile)
            with section(f"{size_name} epoch"):
                if "epoch" in args.only and per_s is not None:
                    epoch(bench, size_name, per_s["cached"], root, args.workers, epoch_images)
            with section(f"{size_name} batch stage"):
                if "batch_stage" in args.only:
                    batch_stage(bench, size_name, rounds)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    note(f"total {time.perf_counter() - started:.0f} s")


def stages(args, device: torch.device) -> None:
    """The per-stage table (teacher training, CLIP embedding, distillation online / cached), fp32 and bf16."""
    from relaxkd.models import build_backbone

    for precision in ("fp32", "bf16"):
        bench = Bench(device, precision, quick=args.quick, threads=torch.get_num_threads())
        s = setup(bench, PAPER.name)
        batch, rounds = len(s.images), args.rounds or (3 if args.quick else 20)
        teacher = build_backbone(s.size.teacher, s.size.num_classes).to(device).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(teacher.parameters(), lr=0.01, momentum=0.9)
        images_cl = s.images.contiguous(memory_format=torch.channels_last)

        def teacher_step():
            with bench.autocast():
                loss = F.cross_entropy(teacher(images_cl), s.targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        encoder = s.module.teacher_set.clip_encoder.encoder.to(device)
        clip_images = torch.randn(4 * batch, 3, encoder.image_size, encoder.image_size, device=device)

        def embed():
            with torch.inference_mode(), bench.autocast():
                encoder.model.encode_image(clip_images)

        for case, images, fn in (("teacher_train", batch, teacher_step), ("clip_embed", 4 * batch, embed),
                                 ("distill_online", batch, lambda: full_step(bench, s))):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = timed(bench, {case: fn}, rounds, warmup=3)[case]
            emit(f"{case}_images_per_s_{precision}", images / seconds)
            emit(f"{case}_peak_gib_{precision}", peak_gib(bench))
        del teacher, opt, clip_images
        setup.cache_clear()
    note("stages: distill_cached is cached_step_vs_floor's cached case (the default figures)")


if __name__ == "__main__":
    main()
