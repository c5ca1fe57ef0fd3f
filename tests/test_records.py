"""The typed record files (issue 21): written through records.py by the stages, read back through it
by the report and predict, so a renamed key is named instead of becoming an empty cell."""
from __future__ import annotations

import pytest
from pydantic import ValidationError
from test_report import FakeRun

from relaxkd.records import Metrics, ModelInfo, written

PROV = {"dataset": "digits", "demo_data": True, "clip": "relaxkd-tiny/none", "random_weight_clip": True, "seed": 0}


def test_writers_refuse_a_misspelt_key_and_keep_the_keys_given():
    with pytest.raises(ValidationError, match="losss"):
        written(Metrics, top1=50.0, history=[], provenance={**PROV, "losss": "kd"})
    with pytest.raises(ValidationError, match="kind"):
        written(ModelInfo, kind="teacher", dataset="digits", num_classes=2, classes=["a", "b"])
    record = written(Metrics, top1=float("nan"), history=[], provenance={**PROV, "tx_input": None}, weight_strong=0.5)
    assert record["provenance"]["tx_input"] is None and "loss" not in record["provenance"]  # only what was given
    assert record["weight_strong"] == 0.5 and record["top1"] != record["top1"]  # a method's own values; NaN kept


def test_report_names_a_record_it_cannot_read_instead_of_showing_empty_cells(tmp_path, capsys):
    from relaxkd.report import write_report

    run = FakeRun(tmp_path / "demo")
    run.member("strong", "strong", 70.0)
    path = run.student({"strong": "k"}, "kd", 60.0, 0)
    metrics = (tmp_path / "demo" / path.rsplit("/", 1)[1] / "metrics.json")
    text = metrics.read_text().replace('"loss"', '"loss_name"')
    metrics.write_text(text)  # the manifest's digest no longer matches: rewrite it as a store would
    run._write("distill", {"x": 1}, {"student.json": {"kind": "student", "arch": "tiny_cnn", **run._classes()},
                                     "metrics.json": __import__("json").loads(text)})
    report = write_report(tmp_path / "demo").read_text()
    err = capsys.readouterr().err
    assert "metrics.json left out: provenance.loss_name: Extra inputs are not permitted" in err
    assert "T_m member T1s" in report


def test_export_refuses_a_student_record_it_cannot_read_naming_the_key(tmp_path):
    from relaxkd.artifacts import ArtifactStore
    from relaxkd.errors import UserError
    from relaxkd.stages.export import _typed

    run = FakeRun(tmp_path / "demo")
    run._write("distill", {"x": 1}, {"student.json": {"kind": "student", "arch": "tiny_cnn", "num_classes": 10}})
    (art,) = ArtifactStore(tmp_path / "demo").artifacts("distill", verify=True)
    with pytest.raises(UserError, match=r"student.json: dataset: Field required; the artifact was written by another version"):
        _typed(art)


def test_unknown_stage_name_lists_the_stages(capsys, monkeypatch, tmp_path):
    from cli_helpers import assert_user_error, relaxkd
    from conftest import REPO, tiny_overrides

    result = relaxkd(capsys, monkeypatch, "stage", "nope", REPO / "configs" / "demo.yaml", *tiny_overrides(tmp_path / "runs"))
    assert_user_error(result, "error: unknown stage 'nope'; valid stages: embed-images, embed-nouns, relax, teacher-unimodal, "
                              "teacher-expert, tx-views, teacher-multimodal, attribute, teacher-targets, dmae-pretrain, distill")
