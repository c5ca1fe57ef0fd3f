"""Algorithm 1: WordNet-relaxed noun selection and soft retrieval from the relaxed bank.

Pure functions over torch tensors (numpy arrays are accepted too); embeddings are L2-normalised.

- :func:`default_num_clusters`, :func:`spherical_kmeans` (faiss, scikit-learn fallback)
- :func:`select_nouns` / :func:`select_nouns_with_clusters`: chunked over the nouns
- :func:`relax_nouns` -> :class:`RelaxResult`, :func:`format_listing`
- :func:`retrieve`: the ``wn`` text mode, differentiable w.r.t. the bank
"""
from relaxkd.relax.algorithm import RelaxResult, format_listing, relax_nouns
from relaxkd.relax.kmeans import default_num_clusters, spherical_kmeans, spherical_kmeans_with_info
from relaxkd.relax.retrieve import DEFAULT_TEMPERATURE, retrieve
from relaxkd.relax.select import auto_chunk_size, noun_assignments, select_nouns, select_nouns_with_clusters

__all__ = [
    "DEFAULT_TEMPERATURE",
    "RelaxResult",
    "auto_chunk_size",
    "default_num_clusters",
    "format_listing",
    "noun_assignments",
    "relax_nouns",
    "retrieve",
    "select_nouns",
    "select_nouns_with_clusters",
    "spherical_kmeans",
    "spherical_kmeans_with_info",
]
