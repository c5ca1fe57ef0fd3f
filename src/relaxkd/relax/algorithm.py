"""Algorithm 1 end to end: image embeddings + candidate noun embeddings -> relaxed bank."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from relaxkd.errors import UserError
from relaxkd.relax._tensors import as_matrix, require_rows, require_same_dim, unit_rows
from relaxkd.relax.kmeans import default_num_clusters, spherical_kmeans_with_info
from relaxkd.relax.select import auto_chunk_size, select_nouns_with_clusters


@dataclass
class RelaxResult:
    """What Algorithm 1 keeps.

    ``indices`` [K] long: kept nouns (rows of the noun table), ordered by cluster then score.
    ``cluster_ids`` [K] long: the cluster each kept noun was chosen for (its argmax cluster).
    ``scores`` [K] float: its softmax-over-clusters score there.
    ``centers`` [M, d] float32: unit-norm k-means centres.
    ``bank`` [K, d] float32: the kept nouns' embeddings, re-normalised (the relaxed bank's start
    and its frozen ``n_pretrained`` copy).
    ``info``: sizes, settings and timings (JSON-serialisable).
    """

    indices: torch.Tensor
    cluster_ids: torch.Tensor
    scores: torch.Tensor
    centers: torch.Tensor
    bank: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


def relax_nouns(
    image_embeddings,
    noun_embeddings,
    num_clusters: int | None = None,
    top_k: int = 5,
    iterations: int = 20,
    restarts: int = 1,
    seed: int = 0,
    sample_size: int | None = None,
    chunk_size: int | None = None,
    threads: int | None = None,
    backend: str = "auto",
    min_clusters: int | None = None,
    max_points_per_centroid: int | None = None,
) -> RelaxResult:
    """Runs Algorithm 1 (docs/method.md §4).

    Spherical k-means of the image embeddings into ``num_clusters`` centres (default
    round(N / 300)), then per cluster the ``top_k`` nouns whose softmax-over-clusters score is
    highest among the nouns assigned to it. See :func:`spherical_kmeans_with_info` for
    ``iterations``, ``restarts``, ``seed``, ``sample_size``, ``threads``, ``backend`` and
    :func:`select_nouns_with_clusters` for ``chunk_size``. Same inputs and seed -> same bank.

    ``min_clusters`` (the number of classes, from the stage, unless ``relax.class_floor`` is off)
    is a floor on the cluster count for small own datasets: with fewer clusters than classes the
    bank degenerates to the most generic nouns (one cluster of 360 images keeps ``entity,
    physical_entity, abstraction, ...``). ``info["clusters_raised_from"]`` records the count it
    replaced, so the caller can warn. The paper's configs switch it off: their rule round(N / 300)
    gives fewer clusters than classes on the long-tailed sets (CIFAR-100-LT 36 for 100 classes,
    ImageNet-LT 386 for 1,000), and the floor would change the protocol there.
    """
    started = time.perf_counter()
    images = as_matrix(image_embeddings, "image embeddings")
    nouns = as_matrix(noun_embeddings, "noun embeddings")
    require_rows(nouns, "noun embeddings", "the candidate noun list has no nouns; check the wordnet settings")
    require_rows(images, "image embeddings", "the training set has no images")
    require_same_dim(images, "image embeddings", nouns, "noun embeddings")
    kmeans = dict(iterations=iterations, restarts=restarts, seed=seed, sample_size=sample_size, threads=threads, backend=backend,
                  max_points_per_centroid=max_points_per_centroid)
    centers, info = _cluster(unit_rows(images), num_clusters, min_clusters, kmeans)
    select_started = time.perf_counter()
    nouns = unit_rows(nouns)
    centers = centers.to(nouns.device)
    indices, cluster_ids, scores = select_nouns_with_clusters(centers, nouns, top_k=top_k, chunk_size=chunk_size)
    bank = F.normalize(nouns[indices].detach().to(torch.float32), dim=1)
    finished = time.perf_counter()
    info.update({
        "num_images": images.shape[0],
        "num_nouns": nouns.shape[0],
        "dim": images.shape[1],
        "top_k": top_k,
        "num_kept": int(indices.numel()),
        "clusters_with_nouns": int(torch.unique(cluster_ids).numel()),
        "chunk_size": chunk_size or auto_chunk_size(info["num_clusters"], nouns.shape[0]),
        "select_seconds": finished - select_started,
        "total_seconds": finished - started,
    })
    return RelaxResult(indices=indices.cpu(), cluster_ids=cluster_ids.cpu(), scores=scores.to(torch.float32).cpu(),
                       centers=centers.to(torch.float32), bank=bank, info=info)


def _cluster(images: torch.Tensor, num_clusters: int | None, min_clusters: int | None, kmeans: dict[str, Any]):
    """Step 1: the unit-norm centres, and what the run info says about them (count, floor, k-means)."""
    requested = num_clusters if num_clusters is not None else default_num_clusters(images.shape[0])
    count = requested
    if min_clusters is not None and requested < min_clusters:
        count = min(min_clusters, images.shape[0])
    centers, kmeans_info = spherical_kmeans_with_info(images, count, **kmeans)
    return centers, {
        "num_clusters": count,
        "clusters_raised_from": requested if count != requested else None,
        "kmeans": kmeans_info,
        "sample_size": kmeans_info["sample_size"],
        "kmeans_seconds": kmeans_info["seconds"],
    }


def format_listing(result: RelaxResult, noun_names: Sequence[str]) -> str:
    """Human-readable list of the nouns kept per cluster (the ``nouns.txt`` of a relax artifact).

    One header line, then one line per cluster that kept nouns:
    ``cluster   12: tabby (0.9731), tiger cat (0.8120), ...``.
    """
    num_nouns = result.info.get("num_nouns")
    if num_nouns is not None and len(noun_names) != num_nouns:
        raise UserError(
            f"got {len(noun_names)} noun names for a noun table of {num_nouns} rows;"
            " pass the names in the same order as the noun embeddings"
        )
    if result.indices.numel() and int(result.indices.max()) >= len(noun_names):
        raise UserError(f"noun index {int(result.indices.max())} is out of range for {len(noun_names)} noun names")

    num_clusters = result.info.get("num_clusters", result.centers.shape[0])
    width = len(str(max(0, num_clusters - 1)))
    lines = [
        f"# {result.indices.numel()} nouns kept from {len(noun_names)} candidates,"
        f" {result.info.get('top_k', '?')} per cluster at most, {num_clusters} clusters"
        f" ({result.info.get('clusters_with_nouns', '?')} with nouns); name (softmax score over clusters)"
    ]
    per_cluster: dict[int, list[str]] = {}
    for index, cluster, score in zip(result.indices.tolist(), result.cluster_ids.tolist(), result.scores.tolist()):
        per_cluster.setdefault(cluster, []).append(f"{noun_names[index]} ({score:.4f})")
    for cluster, entries in per_cluster.items():
        lines.append(f"cluster {cluster:>{width}}: {', '.join(entries)}")
    return "\n".join(lines) + "\n"
