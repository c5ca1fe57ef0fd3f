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
        "data.cutout=4",
        "nouns.candidates=neighbourhood",
        "nouns.hypernym_depth=1",
        "relax.top_k=3",
        "unimodal.optim={epochs: 2, batch_size: 128, lr: 0.05, warmup_epochs: 1, milestones: [2]}",
        "multimodal.optim={epochs: 3, batch_size: 256, lr: 0.05, warmup_epochs: 1, milestones: [3]}",
        "distill.optim={epochs: 2, batch_size: 128, lr: 0.05, warmup_epochs: 1, milestones: [2]}",
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


class CommittedRun:
    """A tiny run whose artifacts are committed; bad commands against it must leave them intact."""

    def __init__(self, root: Path, data_root: Path):
        self.root = root
        self.data_root = data_root
        #: overrides that point a command at this run (3 classes of solid-colour images)
        self.args = [
            *tiny_overrides(root),
            "data.dataset=imagefolder",
            f"data.root={data_root}",
            "distill.teachers=[strong]",
            "name=demo",
        ]

    def snapshot(self):
        from cli_helpers import RunSnapshot

        return RunSnapshot.of(self.root)


@pytest.fixture(scope="session")
def committed_run(tmp_path_factory) -> CommittedRun:
    """Built once per session (seconds): image embeddings and the strong unimodal teacher."""
    from relaxkd.config import load_config
    from relaxkd.stages.context import Context
    from relaxkd.stages.embed_images import embed_images
    from relaxkd.stages.unimodal import unimodal_teacher

    from data_fixtures import write_image_folder

    base = tmp_path_factory.mktemp("committed")
    data = write_image_folder(base / "data", {"train": {"cat": 6, "dog": 6, "fish": 6}, "val": {"cat": 2, "dog": 2, "fish": 2}})
    run = CommittedRun(base / "runs", data)
    torch.set_num_threads(1)  # session fixtures run before the autouse thread fixture
    ctx = Context(load_config(REPO / "configs" / "demo.yaml", run.args))
    embed_images(ctx)
    unimodal_teacher(ctx, "strong")
    assert len(run.snapshot().files) > 6
    return run


@pytest.fixture
def run(committed_run) -> CommittedRun:
    """The session's committed run (for tests of bad input against existing artifacts)."""
    return committed_run


@pytest.fixture
def intact(committed_run):
    """The committed run's artifacts before the test's bad command; `assert_user_error` checks them after."""
    return committed_run.snapshot()
