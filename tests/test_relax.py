"""Algorithm 1 (relaxkd.relax): noun selection against a dense reference, k-means, retrieval."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from relaxkd.errors import UserError
from relaxkd.relax import (
    RelaxResult,
    default_num_clusters,
    format_listing,
    relax_nouns,
    retrieve,
    select_nouns,
    select_nouns_with_clusters,
    spherical_kmeans,
    spherical_kmeans_with_info,
)


def unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator), dim=1)


def clustered(rows: int, dim: int, groups: int, seed: int, spread: float = 0.3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(groups, dim, generator=generator), dim=1)
    labels = torch.randint(groups, (rows,), generator=generator)
    return F.normalize(centres[labels] + spread * torch.randn(rows, dim, generator=generator) / dim**0.5, dim=1)


def dense_reference(centers: torch.Tensor, nouns: torch.Tensor, top_k: int):
    """Algorithm 1 step 3 the obvious way: the whole M × V matrix, then a Python loop."""
    probabilities = torch.softmax(centers.double() @ nouns.double().T, dim=0)
    best_score, best_cluster = probabilities.max(dim=0)
    indices, clusters, scores = [], [], []
    for cluster in range(centers.shape[0]):
        members = [j for j in range(nouns.shape[0]) if int(best_cluster[j]) == cluster]
        members.sort(key=lambda j: (-float(best_score[j]), j))
        for j in members[:top_k]:
            indices.append(j)
            clusters.append(cluster)
            scores.append(float(best_score[j]))
    return torch.tensor(indices, dtype=torch.long), torch.tensor(clusters, dtype=torch.long), torch.tensor(scores)


# --- default_num_clusters ---------------------------------------------------------------------


@pytest.mark.parametrize("num_train, expected", [(50_000, 167), (1_281_167, 4271), (10_847, 36), (100, 1), (0, 1)])
def test_default_num_clusters_is_tac_rule(num_train, expected):
    assert default_num_clusters(num_train) == expected


# --- select_nouns -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [1, 2, 7, 64, 10_000, None])
def test_select_nouns_matches_dense_reference(seed, chunk_size):
    # Few clusters with a high temperature-free scale so several clusters get many nouns.
    centers, nouns = unit(6, 16, seed), unit(150, 16, seed + 100)
    top_k = 4  # chunk sizes 1, 2 are smaller than top_k; 7 and 64 smaller than V
    indices, clusters, scores = select_nouns_with_clusters(centers, nouns, top_k=top_k, chunk_size=chunk_size)
    ref_indices, ref_clusters, ref_scores = dense_reference(centers, nouns, top_k)
    assert torch.equal(indices, ref_indices)
    assert torch.equal(clusters, ref_clusters)
    torch.testing.assert_close(scores.double(), ref_scores.double(), rtol=1e-5, atol=1e-6)
    assert torch.equal(select_nouns(centers, nouns, top_k=top_k, chunk_size=chunk_size), ref_indices)


def test_select_nouns_keeps_argmax_cluster_and_at_most_top_k():
    centers, nouns = unit(20, 32, 3), unit(500, 32, 4)
    indices, clusters, scores = select_nouns_with_clusters(centers, nouns, top_k=3, chunk_size=37)
    argmax_cluster = (centers @ nouns.T).argmax(dim=0)
    assert torch.equal(argmax_cluster[indices], clusters)
    assert int(torch.bincount(clusters).max()) <= 3
    assert len(set(indices.tolist())) == len(indices)
    # Ordered by cluster, then by descending score inside a cluster.
    assert torch.all(clusters[1:] >= clusters[:-1])
    same_cluster = clusters[1:] == clusters[:-1]
    assert torch.all(scores[1:][same_cluster] <= scores[:-1][same_cluster])


def test_select_nouns_breaks_ties_by_lower_noun_index_across_chunks():
    # Integer-valued vectors make the similarities exact, so duplicated nouns tie exactly.
    centers = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    nouns = torch.tensor([[2.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 0.0]])
    for chunk_size in (1, 2, 4, 6):
        indices, clusters, _ = select_nouns_with_clusters(centers, nouns, top_k=2, chunk_size=chunk_size)
        assert indices.tolist() == [0, 2, 3]
        assert clusters.tolist() == [0, 0, 1]


def test_select_nouns_skips_clusters_that_win_no_noun():
    centers = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    nouns = F.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.2], [-1.0, 0.1]]), dim=1)
    indices, clusters, _ = select_nouns_with_clusters(centers, nouns, top_k=5)
    assert clusters.tolist() == [0, 0, 2]
    assert indices.tolist() == [0, 1, 2]


def test_select_nouns_accepts_numpy():
    centers, nouns = unit(5, 8, 5), unit(40, 8, 6)
    assert torch.equal(select_nouns(centers.numpy(), nouns.numpy(), top_k=2), select_nouns(centers, nouns, top_k=2))


# --- spherical k-means ------------------------------------------------------------------------


def test_spherical_kmeans_centres_unit_norm_and_deterministic():
    x = clustered(2000, 24, groups=8, seed=7)
    first, info = spherical_kmeans_with_info(x, 8, iterations=10, seed=3)
    second = spherical_kmeans(x, 8, iterations=10, seed=3)
    assert first.shape == (8, 24) and first.dtype == torch.float32
    torch.testing.assert_close(first.norm(dim=1), torch.ones(8))
    assert torch.equal(first, second)
    assert info["sample_size"] == 2000 and info["num_points"] == 2000


def test_spherical_kmeans_recovers_separated_groups():
    generator = torch.Generator().manual_seed(0)
    true_centres = torch.eye(16)[:4]  # orthogonal, so groups are far apart
    labels = torch.arange(800) % 4
    x = F.normalize(true_centres[labels] + 0.05 * torch.randn(800, 16, generator=generator), dim=1)
    centers = spherical_kmeans(x, 4, iterations=20, restarts=3, seed=0)
    # Every true centre has a found centre within cosine 0.99.
    assert torch.all((true_centres @ centers.T).max(dim=1).values > 0.99)


def test_spherical_kmeans_sample_size_is_seeded_and_recorded():
    x = clustered(3000, 16, groups=5, seed=8)
    a, info = spherical_kmeans_with_info(x, 5, iterations=5, seed=1, sample_size=500)
    b = spherical_kmeans(x, 5, iterations=5, seed=1, sample_size=500)
    assert info["sample_size"] == 500 and info["num_points"] == 3000
    assert torch.equal(a, b)
    _, all_points = spherical_kmeans_with_info(x, 5, iterations=5, seed=1, sample_size=10_000)
    assert all_points["sample_size"] == 3000


def test_spherical_kmeans_sklearn_fallback():
    x = clustered(600, 8, groups=3, seed=9)
    centers, info = spherical_kmeans_with_info(x, 3, iterations=10, seed=0, backend="sklearn")
    assert info["backend"] == "sklearn"
    torch.testing.assert_close(centers.norm(dim=1), torch.ones(3))


def test_spherical_kmeans_falls_back_to_sklearn_without_faiss(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # makes `import faiss` fail
    _, info = spherical_kmeans_with_info(clustered(300, 8, groups=2, seed=16), 2, iterations=5)
    assert info["backend"] == "sklearn"
    with pytest.raises(UserError):
        spherical_kmeans(clustered(300, 8, groups=2, seed=16), 2, backend="faiss")


# --- relax_nouns ------------------------------------------------------------------------------


def test_relax_nouns_bank_unit_norm_and_same_seed_same_bank():
    images, nouns = clustered(1500, 32, groups=6, seed=10), unit(400, 32, 11)
    first = relax_nouns(images, nouns, num_clusters=6, top_k=5, iterations=10, seed=4)
    second = relax_nouns(images, nouns, num_clusters=6, top_k=5, iterations=10, seed=4)
    assert isinstance(first, RelaxResult)
    assert first.bank.dtype == torch.float32
    torch.testing.assert_close(first.bank.norm(dim=1), torch.ones(len(first.indices)))
    torch.testing.assert_close(first.bank, nouns[first.indices])
    assert torch.equal(first.bank, second.bank)
    assert torch.equal(first.indices, second.indices)
    assert len(first.indices) <= 5 * 6
    ref_indices, ref_clusters, _ = dense_reference(first.centers, nouns, 5)
    assert torch.equal(first.indices, ref_indices) and torch.equal(first.cluster_ids, ref_clusters)
    assert first.info["num_clusters"] == 6 and first.info["num_nouns"] == 400
    assert first.info["num_kept"] == len(first.indices)


def test_relax_nouns_default_num_clusters_and_normalises_inputs():
    images, nouns = clustered(900, 16, groups=3, seed=12), unit(100, 16, 13)
    result = relax_nouns(3.0 * images, 2.0 * nouns, iterations=5)
    assert result.centers.shape == (3, 16)  # round(900 / 300)
    torch.testing.assert_close(result.bank.norm(dim=1), torch.ones(len(result.indices)))


def test_format_listing_names_nouns_per_cluster():
    images, nouns = clustered(600, 16, groups=2, seed=14), unit(30, 16, 15)
    result = relax_nouns(images, nouns, num_clusters=2, top_k=2, iterations=5)
    names = [f"noun_{i}" for i in range(30)]
    listing = format_listing(result, names)
    lines = listing.strip().splitlines()
    assert lines[0].startswith("# ")
    for index in result.indices.tolist():
        assert names[index] in listing
    assert len(lines) == 1 + len(set(result.cluster_ids.tolist()))
    with pytest.raises(UserError):
        format_listing(result, names[:-1])


# --- retrieve ---------------------------------------------------------------------------------


def test_retrieve_unit_norm_and_matches_manual_computation():
    images, bank = unit(10, 12, 20), unit(7, 12, 21)
    out = retrieve(images, bank, temperature=0.05)
    manual = torch.softmax(images @ bank.T / 0.05, dim=1) @ bank
    manual = manual / manual.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out, manual)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(10))
    torch.testing.assert_close(retrieve(images, bank, temperature=0.05, chunk_size=3), out)


def test_retrieve_default_temperature_is_nearly_hard():
    bank = unit(9, 64, 23)
    # Images near bank entries 4, 0, 7: the nearest entry wins clearly (random ones may tie).
    images = F.normalize(bank[[4, 0, 7]] + 0.2 * unit(3, 64, 22), dim=1)
    out = retrieve(images, bank)  # tau = 0.005: close to the nearest bank entry
    assert torch.all((out * bank[[4, 0, 7]]).sum(dim=1) > 0.99)


def test_retrieve_gradient_flows_to_bank():
    images = unit(6, 8, 24)
    bank = unit(5, 8, 25).requires_grad_(True)
    retrieve(images, bank, temperature=0.5).sum().backward()
    assert bank.grad is not None and bank.grad.abs().sum() > 0


def test_retrieve_under_autocast_stays_float32():
    images, bank = unit(4, 8, 26), unit(3, 8, 27)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = retrieve(images, bank)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, retrieve(images, bank))


# --- errors -----------------------------------------------------------------------------------


def assert_one_line_user_error(excinfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_too_many_clusters_is_a_user_error():
    images, nouns = unit(10, 8, 30), unit(20, 8, 31)
    with pytest.raises(UserError) as excinfo:
        relax_nouns(images, nouns, num_clusters=11)
    assert_one_line_user_error(excinfo, "relax.num_clusters=11", "10", "round(N/300)")
    with pytest.raises(UserError):
        spherical_kmeans(images, 11)


def test_empty_noun_list_is_a_user_error():
    with pytest.raises(UserError) as excinfo:
        relax_nouns(unit(10, 8, 32), torch.empty(0, 8), num_clusters=2)
    assert_one_line_user_error(excinfo, "noun")
    with pytest.raises(UserError):
        select_nouns(unit(2, 8, 33), torch.empty(0, 8))


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_non_positive_temperature_is_a_user_error(temperature):
    with pytest.raises(UserError) as excinfo:
        retrieve(unit(3, 8, 34), unit(2, 8, 35), temperature=temperature)
    assert_one_line_user_error(excinfo, "temperature")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"top_k": 0}, "top_k"),
        ({"num_clusters": 0}, "num_clusters"),
        ({"num_clusters": 4, "sample_size": 3}, "sample_size"),
        ({"backend": "gpu-magic"}, "faiss"),
    ],
)
def test_bad_settings_are_user_errors(kwargs, fragment):
    with pytest.raises(UserError) as excinfo:
        relax_nouns(unit(50, 8, 36), unit(20, 8, 37), **kwargs)
    assert_one_line_user_error(excinfo, fragment)


def test_dimension_mismatch_is_a_user_error():
    with pytest.raises(UserError) as excinfo:
        relax_nouns(unit(50, 8, 38), unit(20, 16, 39), num_clusters=2)
    assert_one_line_user_error(excinfo, "dimension")


# --- scale (slow) -----------------------------------------------------------------------------


@pytest.mark.slow
def test_select_nouns_chunked_at_cifar_scale_matches_one_chunk():
    centers, nouns = unit(167, 512, 40), unit(20_000, 512, 41)
    whole = select_nouns_with_clusters(centers, nouns, chunk_size=20_000)
    chunked = select_nouns_with_clusters(centers, nouns, chunk_size=999)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
    np.testing.assert_allclose(whole[2].numpy(), chunked[2].numpy(), rtol=1e-5)


def test_cluster_count_never_below_the_number_of_classes():
    images = F.normalize(torch.randn(360, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    nouns = F.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    # 360 images -> round(360/300) = 1 cluster: raised to the 6 classes, and recorded for the warning
    raised = relax_nouns(images, nouns, top_k=2, min_clusters=6)
    assert raised.info["num_clusters"] == 6 and raised.info["clusters_raised_from"] == 1
    assert raised.centers.shape[0] == 6
    # enough clusters already (CIFAR-100: 167 for 100 classes): a no-op
    kept = relax_nouns(images, nouns, num_clusters=8, top_k=2, min_clusters=6)
    assert kept.info["num_clusters"] == 8 and kept.info["clusters_raised_from"] is None


def test_cluster_floor_off_keeps_the_rule_and_faiss_cap_limits_the_points():
    """Issue 25 item 1: without the floor round(N / 300) stands (CIFAR-100-LT: 36 < 100 classes);
    item 6: a max_points_per_centroid cap trains on at most M × cap points (the authors' faiss default 256)."""
    images = F.normalize(torch.randn(900, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    nouns = F.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    rule = relax_nouns(images, nouns, top_k=2, min_clusters=None)
    assert rule.info["num_clusters"] == 3 and rule.info["clusters_raised_from"] is None
    capped = relax_nouns(images, nouns, num_clusters=3, top_k=2, max_points_per_centroid=100)
    assert capped.info["sample_size"] == 300
    every = relax_nouns(images, nouns, num_clusters=3, top_k=2)
    assert every.info["sample_size"] == 900 and not torch.equal(capped.centers, every.centers)
