"""relaxkd: crossmodal knowledge distillation with WordNet-relaxed text embeddings."""

__version__ = "0.1.0"
