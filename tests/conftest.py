"""Shared fixtures: a tiny but real experiment config on the bundled digits data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def tiny_overrides(run_root: Path) -> list[str]:
    """Overrides that shrink configs/demo.yaml to seconds: few epochs, small images, neighbourhood nouns."""
    return [
        f"run_root={run_root}",
        f"cache_root={run_root / '_shared'}",
        "sweeps=[]",
        "data.image_size=8",
        "nouns.candidates=neighbourhood",
        "nouns.hypernym_depth=1",
        "relax.top_k=3",
        "unimodal.optim={epochs: 2, batch_size: 128, lr: 0.05, warmup_epochs: 1, milestones: [1]}",
        "multimodal.optim={epochs: 3, batch_size: 256, lr: 0.05, warmup_epochs: 1, milestones: [2]}",
        "distill.optim={epochs: 2, batch_size: 128, lr: 0.05, warmup_epochs: 1, milestones: [1]}",
        "attribute.num_samples=64",
        "attribute.steps=8",
        "trainer.progress=false",
        "trainer.logger=none",
    ]


@pytest.fixture
def tiny_overrides_for(tmp_path):
    return tiny_overrides(tmp_path / "runs")


@pytest.fixture
def tiny_cfg(tmp_path):
    from relaxkd.config import load_config

    return load_config(REPO / "configs" / "demo.yaml", tiny_overrides(tmp_path / "runs"))


@pytest.fixture(autouse=True)
def _few_threads():
    # the suite shares 2 cores; fixed thread counts also keep CPU results reproducible
    torch.set_num_threads(1)
    yield
