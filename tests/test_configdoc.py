"""docs/config.md is generated from the config schema and must not go stale."""
from __future__ import annotations

from relaxkd import configdoc
from relaxkd.config import ExperimentConfig

from conftest import REPO


def test_docs_config_md_is_up_to_date():
    written = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert written == configdoc.generate(), (
        "docs/config.md is stale: run `make docs` (python -m relaxkd.configdoc > docs/config.md)"
    )


def test_every_key_has_a_type_default_and_meaning():
    assert configdoc.missing_meanings() == []
    keys = [row[0] for row in configdoc.rows(ExperimentConfig)]
    for key in (
        "seed",
        "data.root",
        "relax.num_clusters",
        "multimodal.proportions",
        "distill.optim.epochs",
        "unimodal.members[].aug",
    ):
        assert key in keys
    text = configdoc.generate()
    assert "| `relax.num_clusters` | int \\| None | `null` |" in text
    assert "| `distill.loss` | " in text


def test_comments_above_fields_are_meanings():
    from relaxkd.config import DistillConfig

    assert "online" in configdoc.source_comments(DistillConfig)["tx_input"]
