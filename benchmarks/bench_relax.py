"""Benchmark of Algorithm 1 (relaxkd.relax.relax_nouns): wall time and peak memory.

Cases (each in its own subprocess, so peak RSS is per case and includes faiss's native memory):

- ``relax_cifar``: 50,000 × 512 clustered unit-norm image embeddings, 119,034 × 512 noun
  embeddings (the WordNet 3.0 distinct noun count), M = 167 (round(N / 300)).
- ``reference_cifar``: the straightforward way on the same data: scikit-learn KMeans on the
  normalised embeddings, one dense M × V similarity matrix, softmax, argmax, per-cluster top-k.
- ``relax_imagenet``: 1,281,167 × 512 image embeddings, same nouns, M = 4,271; k-means trained on a
  seeded sample of ``--imagenet-points-per-cluster`` · M images (default 64 · M = 273,344).

Synthetic data: images are a mixture around random "class" directions (cosine ≈ 0.8 to their
class direction, like CLIP embeddings of one class); nouns are random unit vectors. Only Algorithm 1
is timed, not data generation; peak RSS includes the input embeddings (reported separately).

Usage:
    PYTHONPATH=src python benchmarks/bench_relax.py --quick   # CIFAR scale, reference on 10k images
    PYTHONPATH=src python benchmarks/bench_relax.py --full    # + reference at CIFAR scale + ImageNet scale

Output: ``NAME VALUE`` lines (seconds, GiB, ratios).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

NUM_NOUNS = 119_034  # distinct WordNet 3.0 noun lemmas
DIM = 512
CIFAR_IMAGES = 50_000
IMAGENET_IMAGES = 1_281_167
QUICK_REFERENCE_IMAGES = 10_000
TOP_K = 5
ITERATIONS = 20
GIB = 1024**3

# Runs from a checkout without installing: put src/ on the path (children inherit it via PYTHONPATH).
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if os.path.isdir(_SRC) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_SRC, os.environ.get("PYTHONPATH")]))


# --- synthetic data ---------------------------------------------------------------------------


def synthetic_images(num_images: int, num_classes: int, seed: int):
    """Unit-norm mixture around ``num_classes`` random directions, built in place chunk by chunk."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    class_directions = torch.nn.functional.normalize(torch.randn(num_classes, DIM, generator=generator), dim=1)
    images = torch.empty(num_images, DIM)
    step = 1 << 16
    for start in range(0, num_images, step):
        block = images[start : start + step]
        labels = torch.randint(num_classes, (block.shape[0],), generator=generator)
        torch.randn(block.shape, generator=generator, out=block)
        block.mul_(0.75 / DIM**0.5).add_(class_directions[labels])
        block.div_(block.norm(dim=1, keepdim=True))
    return images


def synthetic_nouns(seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    nouns = torch.randn(NUM_NOUNS, DIM, generator=generator)
    return nouns.div_(nouns.norm(dim=1, keepdim=True))


def mean_best_cosine(images, centers, max_points: int = 50_000) -> float:
    """k-means quality: mean cosine of (up to ``max_points``) images to their nearest centre."""
    points = images[:: max(1, images.shape[0] // max_points)][:max_points]
    return float((points @ centers.T).max(dim=1).values.mean())


# --- cases (run in a child process) -----------------------------------------------------------


def run_case(case: str, num_images: int, num_clusters: int, sample_size: int | None, threads: int | None) -> dict:
    import resource

    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    images = synthetic_images(num_images, num_classes=max(10, num_clusters // 2), seed=0)
    nouns = synthetic_nouns(seed=1)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    if case == "relax":
        from relaxkd.relax import relax_nouns

        result = relax_nouns(
            images, nouns, num_clusters=num_clusters, top_k=TOP_K, iterations=ITERATIONS,
            seed=0, sample_size=sample_size, threads=threads,
        )
        seconds = time.perf_counter() - started
        centers, kept = result.centers, int(result.indices.numel())
        extra = {
            "kmeans_seconds": result.info["kmeans_seconds"],
            "select_seconds": result.info["select_seconds"],
            "sample_size": result.info["sample_size"],
            "threads": result.info["kmeans"]["threads"],
        }
    else:
        centers, kept, extra = reference_relax(images, nouns, num_clusters)
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "input_bytes": images.numel() * 4 + nouns.numel() * 4,
        "rss_after_data_bytes": baseline_rss,
        "kept": kept,
        "mean_cosine": mean_best_cosine(images, centers),
        **extra,
    }


def reference_relax(images, nouns, num_clusters: int):
    """Straightforward Algorithm 1: scikit-learn k-means + one dense similarity matrix."""
    import torch
    from sklearn.cluster import KMeans

    started = time.perf_counter()
    data = images.numpy()
    data = data / (data**2).sum(axis=1, keepdims=True) ** 0.5
    kmeans = KMeans(n_clusters=num_clusters, n_init=1, max_iter=ITERATIONS, random_state=0).fit(data)
    centers = torch.nn.functional.normalize(torch.from_numpy(kmeans.cluster_centers_).float(), dim=1)
    kmeans_seconds = time.perf_counter() - started
    started = time.perf_counter()
    probabilities = torch.softmax(centers @ nouns.T, dim=0)  # M × V, all at once
    best_score, best_cluster = probabilities.max(dim=0)
    kept = []
    for cluster in range(num_clusters):
        members = torch.nonzero(best_cluster == cluster).flatten()
        if members.numel():
            top = torch.topk(best_score[members], min(TOP_K, members.numel())).indices
            kept.append(members[top])
    kept = torch.cat(kept)
    return centers, int(kept.numel()), {"kmeans_seconds": kmeans_seconds, "select_seconds": time.perf_counter() - started}


# --- parent -----------------------------------------------------------------------------------


def measure(case: str, num_images: int, num_clusters: int, sample_size: int | None, threads: int | None) -> dict:
    """Runs one case in a child process; adds its peak RSS (from wait4) to the child's report."""
    command = [
        sys.executable, os.path.abspath(__file__), "--case", case, "--images", str(num_images),
        "--clusters", str(num_clusters),
    ]
    if sample_size is not None:
        command += ["--sample-size", str(sample_size)]
    if threads is not None:
        command += ["--threads", str(threads)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"case {case} on {num_images} images failed with exit code {child.returncode}")
    report = json.loads(output.strip().splitlines()[-1])
    report["peak_bytes"] = usage.ru_maxrss * 1024  # Linux reports KiB
    return report


def emit(name: str, value) -> None:
    if isinstance(value, float):
        value = f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}"
    print(f"{name} {value}", flush=True)


def emit_case(prefix: str, report: dict) -> None:
    emit(f"{prefix}_seconds", report["seconds"])
    emit(f"{prefix}_kmeans_seconds", report["kmeans_seconds"])
    emit(f"{prefix}_select_seconds", report["select_seconds"])
    emit(f"{prefix}_peak_gib", report["peak_bytes"] / GIB)
    emit(f"{prefix}_input_gib", report["input_bytes"] / GIB)
    emit(f"{prefix}_algorithm_peak_gib", (report["peak_bytes"] - report["rss_after_data_bytes"]) / GIB)
    emit(f"{prefix}_kept_nouns", report["kept"])
    emit(f"{prefix}_mean_cosine_to_centre", report["mean_cosine"])
    if "sample_size" in report:
        emit(f"{prefix}_kmeans_sample_size", report["sample_size"])
        emit(f"{prefix}_kmeans_threads", report["threads"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CIFAR scale only; reference on 10k images (default)")
    mode.add_argument("--full", action="store_true", help="reference at CIFAR scale, and the ImageNet case")
    parser.add_argument("--threads", type=int, default=None, help="torch and faiss threads (default: library default)")
    parser.add_argument("--imagenet-points-per-cluster", type=int, default=64,
                        help="k-means sample at ImageNet scale = this × M (0: all images)")
    parser.add_argument("--case", choices=["relax", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clusters", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sample-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.case:  # child process
        print(json.dumps(run_case(args.case, args.images, args.clusters, args.sample_size, args.threads)))
        return

    from relaxkd.relax import default_num_clusters

    emit("machine_cpus", os.cpu_count())
    cifar_clusters = default_num_clusters(CIFAR_IMAGES)
    relax_cifar = measure("relax", CIFAR_IMAGES, cifar_clusters, None, args.threads)
    emit_case("relax_cifar", relax_cifar)

    reference_images = CIFAR_IMAGES if args.full else QUICK_REFERENCE_IMAGES
    reference_clusters = default_num_clusters(reference_images)
    reference = measure("reference", reference_images, reference_clusters, None, args.threads)
    scale = "cifar" if args.full else "10k"
    if args.full:
        relax_same = relax_cifar
    else:
        relax_same = measure("relax", reference_images, reference_clusters, None, args.threads)
        emit_case(f"relax_{scale}", relax_same)
    emit_case(f"reference_{scale}", reference)
    emit(f"relax_{scale}_speedup_vs_reference", reference["seconds"] / relax_same["seconds"])
    emit(f"relax_{scale}_peak_ratio_vs_reference", relax_same["peak_bytes"] / reference["peak_bytes"])

    if args.full:
        imagenet_clusters = default_num_clusters(IMAGENET_IMAGES)
        sample = args.imagenet_points_per_cluster * imagenet_clusters or None
        imagenet = measure("relax", IMAGENET_IMAGES, imagenet_clusters, sample, args.threads)
        emit_case("relax_imagenet", imagenet)


if __name__ == "__main__":
    main()
