"""GPU throughput and peak memory of each training stage, fp32 vs bf16 (needs a CUDA device).

Prints ``NAME VALUE`` lines: images/s and peak GPU memory (GiB) for unimodal-teacher training,
CLIP image embedding (the embed-images stage) and distillation with online teachers and with cached
targets, at the paper's size (configs/cifar100.yaml: 224 px, batch 128, ResNet50 teachers ×3, T_x
on online ViT-B-32, ResNet18 student). Batches are already on the GPU (the loader is measured by
bench_train.py's loader_headroom); the modules are the real ones (bench_train.setup) with random
weights. Peak memory is the most allocated while that case ran, resident teachers included.

    python benchmarks/bench_gpu.py                  # on a GPU machine
    python benchmarks/bench_gpu.py --device cpu --tiny   # smoke run of this script (demo size)
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_train import PAPER, Bench, emit, full_step, note, setup, timed


def peak_gib(bench: Bench) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if bench.device.type == "cuda" else 0.0


def measure(bench: Bench, name: str, images: int, step, rounds: int) -> None:
    """``name_images_per_s`` and ``name_peak_gib`` of one case."""
    if bench.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(bench, {name: step}, rounds, warmup=3)[name]
    emit(f"{name}_images_per_s_{bench.precision}", images / seconds)
    emit(f"{name}_peak_gib_{bench.precision}", peak_gib(bench))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="demo size (smoke run)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="bench_train's quick batch (smoke run of the paper size on a CPU)")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.distill import CachedTargets, StudentDistiller, TeacherSet
    from relaxkd.distill.targets import TRAIN_FILE, VAL_FILE, compress
    from relaxkd.engine.sampling import sample_seed
    from relaxkd.models import build_backbone
    from safetensors.torch import save_file

    size_name = "demo" if args.tiny else PAPER.name
    rounds = 2 if args.tiny else args.rounds
    for precision in args.precisions:
        bench = Bench(torch.device(args.device), precision, quick=args.quick, threads=torch.get_num_threads())
        s = setup(bench, size_name)
        batch = len(s.images)
        if precision == "fp32":
            name = torch.cuda.get_device_name() if bench.device.type == "cuda" else "cpu"
            note(f"device {name}; torch {torch.__version__}; {s.size.image_size} px, batch {batch}, teachers "
                 f"{len(s.members)}x {s.size.teacher} + T_x on online {s.size.clip}, student {s.size.student}")

        teacher = build_backbone(s.size.teacher, s.size.num_classes).to(bench.device).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(teacher.parameters(), lr=0.01, momentum=0.9)
        images_cl = s.images.contiguous(memory_format=torch.channels_last)

        def teacher_step():
            with bench.autocast():
                loss = F.cross_entropy(teacher(images_cl), s.targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        measure(bench, "teacher_train", batch, teacher_step, rounds)
        del teacher, opt

        encoder = s.module.teacher_set.clip_encoder.encoder.to(bench.device)
        clip_images = torch.randn(4 * batch, 3, encoder.image_size, encoder.image_size, device=bench.device)

        def embed():
            with torch.inference_mode(), bench.autocast():
                encoder.model.encode_image(clip_images)

        measure(bench, "clip_embed", len(clip_images), embed, rounds)
        del clip_images

        measure(bench, "distill_online", batch, lambda: full_step(bench, s), rounds)
        with tempfile.TemporaryDirectory() as tmp:
            root, names = Path(tmp), s.module.teacher_set.names
            n = s.size.num_train
            logits = torch.randn(len(names), n, s.size.num_classes)
            save_file({**compress(logits, 0, 4.0), "aug_seeds": sample_seed(0, 0, torch.arange(n))}, str(root / TRAIN_FILE.format(epoch=0)))
            save_file(compress(logits[:, :1].contiguous(), 0, 4.0), str(root / VAL_FILE))
            replay = CachedTargets(root, num_teachers=len(names), num_classes=s.size.num_classes, epochs=1, seed=0)
            torch.manual_seed(0)
            cached = StudentDistiller(arch=s.size.student, num_classes=s.size.num_classes, optim_cfg={}, input_stats=IMAGENET_STATS,
                                      teachers=TeacherSet(names=names, cached=replay)).to(bench.device)
            s_cached = type(s)(**{**s.__dict__, "module": cached, "optimizer": torch.optim.SGD(cached.parameters(), lr=0.01)})
            measure(bench, "distill_cached", batch, lambda: full_step(bench, s_cached), rounds)


if __name__ == "__main__":
    main()
