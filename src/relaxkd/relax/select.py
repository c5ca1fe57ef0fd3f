"""WordNet noun selection (Algorithm 1, step 3), computed in chunks over the nouns.

S = centres · nouns^T is M × V: 4,271 × 119,034 = 508M floats at ImageNet scale, so it is never
built. Each chunk of nouns yields, per noun, its argmax cluster and its softmax score there
(softmax over the cluster axis); only those two length-V vectors are kept. The per-cluster top-k
is then one sort of V entries. Memory: O(V + M · chunk_size).
"""
from __future__ import annotations

import torch

from relaxkd.errors import UserError
from relaxkd.relax._tensors import as_matrix, require_rows, require_same_dim

# Auto chunk size keeps one M × chunk block of similarities at about this many elements (64 MiB
# in float32); the block is the only large temporary.
CHUNK_ELEMENTS = 1 << 24


def auto_chunk_size(num_clusters: int, num_nouns: int) -> int:
    """Nouns per chunk so that one ``num_clusters × chunk`` block stays near 16M elements."""
    return max(1, min(num_nouns, CHUNK_ELEMENTS // max(1, num_clusters)))


def noun_assignments(centers, noun_embeddings, chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per noun: the cluster with the highest similarity and the softmax score it gets there.

    Returns ``(cluster_ids [V] long, scores [V] float)`` where ``scores[j] = softmax(S[:, j])``
    at ``cluster_ids[j]``. Ties between clusters go to the lower cluster index.
    """
    centers = as_matrix(centers, "cluster centres")
    nouns = as_matrix(noun_embeddings, "noun embeddings")
    require_rows(centers, "cluster centres")
    require_rows(nouns, "noun embeddings", "the candidate noun list has no nouns")
    require_same_dim(centers, "cluster centres", nouns, "noun embeddings")
    num_clusters, num_nouns = centers.shape[0], nouns.shape[0]
    if chunk_size is None:
        chunk_size = auto_chunk_size(num_clusters, num_nouns)
    if chunk_size < 1:
        raise UserError(f"chunk_size must be at least 1, got {chunk_size}")

    dtype = torch.promote_types(torch.promote_types(centers.dtype, nouns.dtype), torch.float32)
    centers = centers.detach().to(dtype)
    cluster_ids = torch.empty(num_nouns, dtype=torch.long, device=centers.device)
    scores = torch.empty(num_nouns, dtype=dtype, device=centers.device)
    with torch.no_grad():
        for start in range(0, num_nouns, chunk_size):
            stop = min(start + chunk_size, num_nouns)
            block = centers @ nouns[start:stop].detach().to(device=centers.device, dtype=dtype).T
            best, best_cluster = block.max(dim=0)
            # softmax at the argmax = exp(max - logsumexp) = 1 / sum_c exp(S_c - max); in place,
            # so the block is the only M × chunk allocation.
            denominators = block.sub_(best).exp_().sum(dim=0)
            cluster_ids[start:stop] = best_cluster
            scores[start:stop] = denominators.reciprocal_()
    return cluster_ids, scores


def select_nouns_with_clusters(
    centers, noun_embeddings, top_k: int = 5, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per cluster, the ``top_k`` nouns assigned to it with the highest softmax score.

    Returns ``(indices, cluster_ids, scores)``, each of length ≤ top_k · M: noun indices into
    ``noun_embeddings``, ordered by cluster, then by descending score, ties by lower noun index;
    the cluster each is listed under (its argmax cluster); and its softmax score there.
    Clusters that are no noun's argmax contribute nothing.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"relax.top_k must be a positive integer, got {top_k!r}")
    cluster_of_noun, score_of_noun = noun_assignments(centers, noun_embeddings, chunk_size)
    num_nouns = cluster_of_noun.numel()

    # Order (cluster ascending, score descending, index ascending) from two stable sorts:
    # the later sort's key dominates, stability keeps the earlier order within equal keys.
    by_score = torch.sort(score_of_noun, descending=True, stable=True).indices
    by_cluster = torch.sort(cluster_of_noun[by_score], stable=True).indices
    order = by_score[by_cluster]
    sorted_clusters = cluster_of_noun[order]

    # Rank of each noun inside its cluster's run = position − first position of that run.
    counts = torch.bincount(sorted_clusters)
    run_starts = torch.cumsum(counts, dim=0) - counts
    rank = torch.arange(num_nouns, device=order.device) - run_starts[sorted_clusters]
    keep = rank < top_k
    indices = order[keep]
    return indices, sorted_clusters[keep], score_of_noun[indices]


def select_nouns(centers, noun_embeddings, top_k: int = 5, chunk_size: int | None = None) -> torch.Tensor:
    """Indices of the kept nouns (see :func:`select_nouns_with_clusters`)."""
    return select_nouns_with_clusters(centers, noun_embeddings, top_k=top_k, chunk_size=chunk_size)[0]
