"""Whole experiments: `run` end to end, reruns that recompute nothing, sweeps, reports."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from relaxkd import trials
from relaxkd.artifacts import ArtifactStore
from relaxkd.config import load_config
from relaxkd.errors import UserError
from relaxkd.report import write_report
from relaxkd.stages.context import Context
from relaxkd.stages.plan import run_experiment, run_sweep

from cli_helpers import relaxkd
from conftest import REPO, tiny_overrides


def test_run_end_to_end_then_rerun_recomputes_nothing(tiny_cfg, monkeypatch):
    report = run_experiment(Context(tiny_cfg), then=[("report", lambda: write_report(tiny_cfg.run_dir))])
    text = report.read_text()
    assert report == tiny_cfg.run_dir / "report" / "report.md"
    assert "random-weight CLIP" in text and "demo data" in text
    assert (report.parent / "validation_history_students.png").stat().st_size > 0
    assert "★ taught the main run's student" in text  # run.json names the main run's artifacts
    stages = {a.stage for a in ArtifactStore(tiny_cfg.run_dir).artifacts()}
    assert {"embed-images", "relax", "teacher-unimodal", "teacher-multimodal", "attribute", "distill"} <= stages

    def no_build(*args, **kwargs):
        raise AssertionError("a rerun with nothing changed must not build any artifact")

    monkeypatch.setattr(ArtifactStore, "create", no_build)
    assert run_experiment(Context(tiny_cfg), then=[("report", lambda: write_report(tiny_cfg.run_dir))]) == report


def test_sweep_commands_are_independent_lines():
    lines = trials.sweep_commands(REPO / "configs" / "cifar100.yaml", ["seed=1"], "table2", None)
    assert len(lines) == len(trials.table2_trials()) == 18
    assert all(line.startswith("relaxkd sweep ") and "--trials" in line and "seed=1" in line for line in lines)


def test_printed_commands_are_the_trials_that_will_run(capsys, monkeypatch, tmp_path):
    runs = [f"run_root={tmp_path / 'runs'}", f"cache_root={tmp_path / 'runs' / '_shared'}"]
    result = relaxkd(capsys, monkeypatch, "sweep", REPO / "configs" / "demo.yaml", *runs, "sweep_students=true",
                     "--family", "table1", "--print-commands")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    commands = [line for line in lines if line.startswith("relaxkd sweep ")]
    assert [line.split("--trials ")[1] for line in commands] == [t.name for t in trials.table1_trials() if t.name != "lfme"]
    assert lines[-1].startswith("# skipped, it needs long-tailed data; dataset 'digits' is not: relaxkd sweep ")
    assert lines[-1].endswith("--trials lfme") and len(lines) == 9
    # sweep_students=false: the student-only trials are comments naming the setting
    result = relaxkd(capsys, monkeypatch, "sweep", REPO / "configs" / "demo.yaml", *runs, "sweep_students=false",
                     "--family", "table2", "--print-commands")
    lines = result.out.strip().splitlines()
    assert len(lines) == 18 and sum(line.startswith("relaxkd sweep ") and line.endswith("/tx-s") for line in lines) == 9
    skipped = [line for line in lines if line.startswith("#")]
    assert len(skipped) == 9 and all(line.startswith(
        "# skipped, sweep_students=false leaves out its student, and it trains nothing else: relaxkd sweep ") for line in skipped)
    assert not (tmp_path / "runs").exists()  # nothing was computed


def test_table2_trials_cover_the_paper_grid():
    labels = {(t.labels["gt"], t.labels["other"]) for t in trials.table2_trials()}
    assert labels == {(g, "wn") for g in (1.0, 0.8, 0.5, 0.2, 0.0)} | {(g, "noise") for g in (0.8, 0.5, 0.2, 0.0)}
    for trial in trials.table2_trials():
        cfg = load_config(REPO / "configs" / "demo.yaml", trial.overrides)
        assert abs(sum(cfg.multimodal.proportions.values()) - 1) < 1e-9


def test_unknown_sweep_family_and_trial_are_rejected():
    with pytest.raises(UserError, match="unknown sweep family 'table9'; valid families: table1, table2"):
        trials.select_trials("table9", None)
    with pytest.raises(UserError, match="unknown trial 'gt42' in sweep table2; valid trials:"):
        trials.select_trials("table2", "gt42")
    with pytest.raises(UserError, match="unknown sweep family"):
        load_config(None, ["sweeps=[table7]"])


def test_report_over_an_empty_run_directory_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no results in"):
        write_report(tmp_path / "empty")


@pytest.mark.slow
def test_table2_sweep_reproduces_the_papers_teacher_ordering(tmp_path):
    """More gt text -> higher T_x accuracy (100 % gt ~ 100 %); label noise keeps the text naming the target.

    Runs with the tiny fixture's neighbourhood candidates. With a random-weight CLIP the wn series
    below 100 % gt is not monotonic (measured 100 / 90.8 / 85.0 / 89.7 / 90.3 for gt 100/80/50/20/0 %
    once the neighbourhood noun order was made hash-seed independent; with the full noun list
    100 / 88.6 / 80.0 / 78.9 / 89.2): the relaxed bank of a random CLIP is as informative as a
    partly-correct class name. So only the noise series is checked for monotonicity; for wn, exact
    names must beat every mix by a clear margin. `make demo` reports the series as measured.
    """
    demo_teacher = load_config(REPO / "configs" / "demo.yaml").multimodal.optim.model_dump()
    overrides = tiny_overrides(tmp_path / "runs") + [
        f"multimodal.optim={json.dumps(demo_teacher)}",  # the demo's T_x schedule: the tiny one underfits
        "attribute.num_samples=200",
        "attribute.steps=16",
        "sweep_students=false",
    ]
    p = Context(load_config(REPO / "configs" / "demo.yaml", overrides))
    run_sweep(p, "table2")
    record = json.loads((p.cfg.run_dir / "sweep-table2.json").read_text())
    rows = {}
    for trial in record.values():
        labels, arts = trial["labels"], trial["artifacts"]
        if "tx" in arts:
            top1 = json.loads((tmp_path / arts["tx"] / "metrics.json").read_text())["top1"]
            share = json.loads((tmp_path / arts["attribute"] / "attribution.json").read_text())["image_share"]
            rows[(labels["other"], labels["gt"])] = (top1, share)
    assert rows[("wn", 1.0)][0] >= 99.0
    wn = [rows[("wn", g)][0] for g in (1.0, 0.8, 0.5, 0.2, 0.0)]
    assert wn[0] > max(wn[1:]) + 2.0, wn  # exact names clearly beat any share of relaxed text
    noise = [rows[("noise", g)][0] for g in (0.8, 0.5, 0.2, 0.0)]
    # Table 2's noise is the released code's label noise (issue 25 item 8): a noise sample's random
    # class is its text *and* its target, so the text always names the target; validation is clean,
    # with each image's own class name, which the teacher has learnt to read at every noise share
    assert min(noise) >= 95.0, noise
    report = write_report(p.cfg.run_dir).read_text()
    assert "Table 2" in report and "figure3_attribution_shares.png" in report


def test_sweep_over_seeds_records_every_seed_and_reports_mean_std(tiny_cfg):
    from relaxkd.config import apply_overrides, build_config

    cfg = build_config(apply_overrides(tiny_cfg.to_dict(), ["seeds=[0, 1]", "sweep_students=true"]))
    ctx = Context(cfg)
    run_sweep(ctx, "table1", "no-kd,vanilla-kd")
    record = json.loads((cfg.run_dir / "sweep-table1.json").read_text())
    assert set(record["no-kd"]["runs"]) == {"0", "1"} and record["no-kd"]["seeds"] == [0, 1]
    students = {
        json.loads((Path(a["distill"]) / "metrics.json").read_text())["provenance"]["seed"]
        for a in record["no-kd"]["runs"].values()
    }
    assert students == {0, 1}
    # one T_m member for both seeds; one CLIP (and so one set of embeddings) whatever the trial's seed
    stores = ArtifactStore(cfg.run_dir)
    assert len(stores.artifacts("teacher-unimodal")) == 1
    from relaxkd.stages.specs import clip_spec

    assert clip_spec(cfg) == clip_spec(build_config(apply_overrides(cfg.to_dict(), ["seed=1"])))
    text = write_report(cfg.run_dir).read_text()
    assert "2 seed(s)" in text and "Seeds: 2 (0, 1)" in text
    row = next(line for line in text.splitlines() if line.startswith("| vanilla-kd |"))
    assert " ± " in row
