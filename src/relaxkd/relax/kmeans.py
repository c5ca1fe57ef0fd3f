"""Spherical k-means of CLIP image embeddings (Algorithm 1, step 2).

faiss does the work (``faiss.Kmeans(..., spherical=True)``: inner-product assignment, centres
re-normalised after every iteration). scikit-learn's KMeans on the normalised data is the fallback
when faiss cannot be imported.

Determinism: the same inputs, seed and settings give bit-identical centres. faiss's k-means is
independent of its OpenMP thread count (checked for 1 and 2 threads), so ``threads`` only changes
speed; results may still differ between machines with different BLAS builds.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from relaxkd.errors import UserError
from relaxkd.relax._tensors import as_matrix, require_rows

BACKENDS = ("auto", "faiss", "sklearn")

# TAC's rule: one cluster per 300 training images.
IMAGES_PER_CLUSTER = 300


def default_num_clusters(num_train: int) -> int:
    """Default M = max(1, round(N / 300)): 167 for 50,000 images, 4,271 for ImageNet's 1,281,167."""
    return max(1, round(num_train / IMAGES_PER_CLUSTER))


def spherical_kmeans(
    x,
    num_clusters: int,
    iterations: int = 20,
    restarts: int = 1,
    seed: int = 0,
    sample_size: int | None = None,
    threads: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Unit-norm k-means centres ``[num_clusters, d]`` (float32, on ``x``'s device) of the rows of ``x``."""
    centers, _ = spherical_kmeans_with_info(
        x,
        num_clusters,
        iterations=iterations,
        restarts=restarts,
        seed=seed,
        sample_size=sample_size,
        threads=threads,
        backend=backend,
    )
    return centers


def spherical_kmeans_with_info(
    x,
    num_clusters: int,
    iterations: int = 20,
    restarts: int = 1,
    seed: int = 0,
    sample_size: int | None = None,
    threads: int | None = None,
    backend: str = "auto",
    max_points_per_centroid: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Like :func:`spherical_kmeans`, also returning what was run.

    ``x``: L2-normalised embeddings ``[N, d]`` (tensor or array). ``sample_size``: train the
    centres on this many points drawn at random (seeded by ``seed``) instead of all N; Algorithm 1
    needs only the centres, so a sample of a few dozen points per centre is enough at ImageNet
    scale. ``threads``: faiss's OpenMP thread count for this call (restored afterwards).
    ``max_points_per_centroid``: faiss's own cap (it trains on a random ``num_clusters × cap`` of
    the points when there are more; its default 256 is what the authors' code ran); None = every point.

    The info dict holds ``backend``, ``num_points``, ``num_clusters``, ``sample_size`` (points
    actually used), ``iterations``, ``restarts``, ``seed``, ``threads``, ``objective`` (sum of
    point-centre cosines, faiss only) and ``seconds``.
    """
    x = as_matrix(x, "image embeddings")
    require_rows(x, "image embeddings", "k-means needs at least one training image")
    num_points, dim = x.shape
    _check_settings(num_points, num_clusters, iterations, restarts, sample_size, threads, backend)

    started = time.perf_counter()
    chosen_backend = _resolve_backend(backend)
    points, used = _training_points(x, num_clusters, sample_size, max_points_per_centroid, seed, chosen_backend)
    info: dict[str, Any] = {
        "backend": chosen_backend,
        "num_points": num_points,
        "num_clusters": num_clusters,
        "sample_size": used,
        "iterations": iterations,
        "restarts": restarts,
        "seed": seed,
    }
    if chosen_backend == "faiss":
        centers, objective, used_threads = _faiss_kmeans(points, num_clusters, iterations, restarts, seed, threads,
                                                         max_points_per_centroid)
        info["threads"] = used_threads
        info["objective"] = objective
    else:
        centers = _sklearn_kmeans(points, num_clusters, iterations, restarts, seed)
        info["threads"] = None
        info["objective"] = None

    result = F.normalize(torch.from_numpy(np.asarray(centers, dtype=np.float32)), dim=1)
    info["seconds"] = time.perf_counter() - started
    return result.to(x.device), info


def _training_points(x: torch.Tensor, num_clusters, sample_size, max_points_per_centroid, seed, backend):
    """The float32 points k-means trains on, and how many faiss will use (after its own cap)."""
    points = x.detach().to("cpu", torch.float32).contiguous().numpy()
    used = points.shape[0]
    if sample_size is not None and sample_size < used:
        points = _sample_rows(points, sample_size, seed)
        used = sample_size
    cap = None if max_points_per_centroid is None else num_clusters * max_points_per_centroid
    if cap is not None and cap < used:
        if backend != "faiss":
            # scikit-learn has no such cap: draw the same number of points faiss would train on
            points = _sample_rows(points, cap, seed)
        used = cap
    return points, used


def _sample_rows(points: np.ndarray, size: int, seed) -> np.ndarray:
    """``size`` rows drawn at random without replacement (seeded), in their original order."""
    chosen = np.random.default_rng(seed).choice(points.shape[0], size=size, replace=False)
    # Sorted indices read memory in order: a faster gather from a large matrix.
    return np.ascontiguousarray(points[np.sort(chosen)])


def _check_settings(num_points, num_clusters, iterations, restarts, sample_size, threads, backend) -> None:
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or num_clusters < 1:
        raise UserError(f"relax.num_clusters must be a positive integer, got {num_clusters!r}")
    if num_clusters > num_points:
        raise UserError(
            f"relax.num_clusters={num_clusters} is larger than the number of training images {num_points};"
            f" lower it or leave it unset for round(N/{IMAGES_PER_CLUSTER})"
        )
    if iterations < 1:
        raise UserError(f"relax.iterations must be at least 1, got {iterations}")
    if restarts < 1:
        raise UserError(f"relax.restarts must be at least 1, got {restarts}")
    if sample_size is not None and sample_size < num_clusters:
        raise UserError(
            f"relax.sample_size={sample_size} is smaller than relax.num_clusters={num_clusters};"
            " raise it or leave it unset to train on every image"
        )
    if threads is not None and threads < 1:
        raise UserError(f"relax.threads must be at least 1, got {threads}")
    if backend not in BACKENDS:
        raise UserError(f"unknown k-means backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _resolve_backend(backend: str) -> str:
    if backend == "sklearn":
        return "sklearn"
    try:
        import faiss  # noqa: PLC0415, F401 - faiss only on this path: start-up
    except ImportError:
        if backend == "faiss":
            raise UserError(
                "k-means backend 'faiss' was requested but faiss is not installed; pip install faiss-cpu"
            ) from None
        return "sklearn"
    return "faiss"


def _faiss_kmeans(points: np.ndarray, num_clusters, iterations, restarts, seed, threads, max_points_per_centroid=None):
    import faiss  # noqa: PLC0415 - faiss only on this path: start-up

    num_points, dim = points.shape
    previous_threads = faiss.omp_get_max_threads()
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    try:
        kmeans = faiss.Kmeans(
            dim,
            num_clusters,
            niter=iterations,
            nredo=restarts,
            spherical=True,
            seed=seed,
            # Subsampling is ours (sample_size), explicit and recorded: unless a cap is asked for,
            # stop faiss from silently subsampling to 256 points per centre, and from warning
            # about few points per centre.
            max_points_per_centroid=max_points_per_centroid or math.ceil(num_points / num_clusters) + 1,
            min_points_per_centroid=1,
            verbose=False,
        )
        objective = float(kmeans.train(points))
        used_threads = faiss.omp_get_max_threads()
    finally:
        faiss.omp_set_num_threads(previous_threads)
    return kmeans.centroids, objective, used_threads


def _sklearn_kmeans(points: np.ndarray, num_clusters, iterations, restarts, seed):
    from sklearn.cluster import KMeans  # noqa: PLC0415 - scikit-learn only on this path: start-up

    # Euclidean k-means on unit vectors, then re-normalised centres: the usual approximation
    # of spherical k-means when no spherical implementation is available.
    unit = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    kmeans = KMeans(n_clusters=num_clusters, n_init=restarts, max_iter=iterations, random_state=seed)
    kmeans.fit(unit)
    return kmeans.cluster_centers_
