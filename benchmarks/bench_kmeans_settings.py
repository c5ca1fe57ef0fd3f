"""What the fast k-means setting costs: objective and kept nouns against the reference setting.

The reference setting (the authors' and TAC's faiss call: 300 iterations, 10 restarts, every
training image) and the fast setting offered for ImageNet scale (``relax.iterations=20
relax.restarts=1 relax.sample_size=64·M``, see docs/reproduction.md) run Algorithm 1 on the same
CIFAR-scale data. Printed, one ``NAME VALUE`` line each:

- ``<setting>_objective``: the spherical k-means objective on *all* N images, i.e. the sum over
  images of the cosine to the nearest centre (higher is better), and its per-image mean;
- ``<setting>_seconds``: wall time of Algorithm 1 (k-means + selection);
- ``kept_overlap_jaccard_reference_vs_<other>`` / ``kept_overlap_of_reference_<other>``:
  |A ∩ B| / |A ∪ B| and |A ∩ B| / |A| of two kept-noun sets (A: reference, B: fast, or the
  reference setting with seed + 1, which shows how far the kept nouns move by chance alone).

Synthetic data (no CLIP or WordNet needed): N = 50,000 unit-norm 512-d image embeddings drawn
around 100 random "class" directions (cosine ≈ 0.8 to their class, like CLIP embeddings of one
CIFAR-100 class; the same generator as bench_relax.py), and 119,034 noun embeddings (WordNet 3.0's
distinct noun count): 5 % placed near the class directions (cosine ≈ 0.5), the rest random unit
vectors, so that the selection has nouns that fit clusters, as real nouns do. M = 167 (round(N/300)).

Usage:
    PYTHONPATH=src python benchmarks/bench_kmeans_settings.py [--threads 2] [--images 50000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if os.path.isdir(_SRC) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_relax import DIM, NUM_NOUNS, synthetic_images  # noqa: E402

#: (iterations, restarts, points per centre in the k-means sample; None = every image)
SETTINGS = {
    "reference": (300, 10, None, 0),
    "fast": (20, 1, 64, 0),
    # the reference setting again with another seed: how much the kept nouns move by chance alone
    "reference_seed1": (300, 10, None, 1),
}


def synthetic_nouns(num_classes: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    nouns = torch.randn(NUM_NOUNS, DIM, generator=generator).div_(DIM**0.5)
    near = NUM_NOUNS // 20
    classes = torch.nn.functional.normalize(torch.randn(num_classes, DIM, generator=torch.Generator().manual_seed(0)), dim=1)
    # same class directions as synthetic_images(seed=0) draws first
    labels = torch.randint(num_classes, (near,), generator=generator)
    nouns[:near] = nouns[:near] * 1.7 + classes[labels]
    return nouns.div_(nouns.norm(dim=1, keepdim=True))


def objective(images, centers, chunk: int = 8192) -> float:
    total = 0.0
    for start in range(0, images.shape[0], chunk):
        total += float((images[start : start + chunk] @ centers.T).max(dim=1).values.sum())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from relaxkd.relax import relax_nouns
    from relaxkd.relax.kmeans import default_num_clusters

    if args.threads:
        torch.set_num_threads(args.threads)
    num_classes = 100
    images = synthetic_images(args.images, num_classes=num_classes, seed=0)
    nouns = synthetic_nouns(num_classes, seed=1)
    clusters = default_num_clusters(args.images)
    print(f"images {args.images}")
    print(f"nouns {NUM_NOUNS}")
    print(f"clusters {clusters}")
    kept = {}
    for name, (iterations, restarts, per_centre, seed) in SETTINGS.items():
        sample = None if per_centre is None else min(args.images, per_centre * clusters)
        started = time.perf_counter()
        result = relax_nouns(
            images, nouns, num_clusters=clusters, top_k=5, iterations=iterations, restarts=restarts,
            seed=args.seed + seed, sample_size=sample, threads=args.threads,
        )
        seconds = time.perf_counter() - started
        obj = objective(images, result.centers)
        kept[name] = set(result.indices.tolist())
        print(f"{name}_setting iterations={iterations} restarts={restarts} sample={sample or args.images}")
        print(f"{name}_seconds {seconds:.1f}")
        print(f"{name}_objective {obj:.1f}")
        print(f"{name}_mean_cosine {obj / args.images:.5f}")
        print(f"{name}_kept {len(kept[name])}")
        sys.stdout.flush()
    for other in ("fast", "reference_seed1"):
        a, b = kept["reference"], kept[other]
        print(f"kept_overlap_jaccard_reference_vs_{other} {len(a & b) / max(1, len(a | b)):.3f}")
        print(f"kept_overlap_of_reference_{other} {len(a & b) / max(1, len(a)):.3f}")


if __name__ == "__main__":
    main()
