"""What a user sees on the console: one line per epoch off a terminal, a time estimate only from
measured stage times, no third-party noise, a line per install step."""
from __future__ import annotations

import re
import tomllib
import warnings

import torch

from relaxkd.config import load_config
from relaxkd.stages.context import Context
from relaxkd.stages.plan import ProgressStep, StageProgress

from conftest import REPO, tiny_overrides


def test_one_line_per_epoch_and_no_log_interval_warning_off_a_terminal(tmp_path, capsys):
    from relaxkd.stages.unimodal import unimodal_teacher

    cfg = load_config(
        REPO / "configs" / "demo.yaml", tiny_overrides(tmp_path / "runs") + ["trainer.progress=true", "trainer.logger=csv"]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unimodal_teacher(Context(cfg), "strong")
    err = capsys.readouterr().err
    epochs = [
        line
        for line in err.splitlines()
        if re.search(r"teacher-unimodal \w{8} epoch \d/2: train loss [\d.]+, val top-1 [\d.]+ %", line)
    ]
    assert len(epochs) == 2, err
    assert "it/s" not in err and "\r" not in err  # no progress-bar redraws in a log
    assert not [w for w in caught if "logging interval" in str(w.message)]


def test_time_estimate_only_from_measured_stage_times(capsys):
    timings: dict[str, list[float]] = {}

    def built(stage: str, seconds: float):
        return lambda: timings.setdefault(stage, []).append(seconds)

    steps = [
        ProgressStep("teacher tx", built("teacher-multimodal", 120.0), ("teacher-multimodal",)),
        ProgressStep("distill", built("distill", 30.0), ("distill",)),
        ProgressStep("table1 a", built("distill", 50.0), ("distill",)),
        ProgressStep("table1 b", built("distill", 10.0), ("distill",)),
        ProgressStep("table2 t", built("distill", 10.0), ("teacher-multimodal", "distill")),
        ProgressStep("report", lambda: None),
    ]
    StageProgress(steps, timings).run_all()
    lines = [line for line in capsys.readouterr().err.splitlines() if "stage " in line]
    assert lines[0] == "[relaxkd] stage 1/6: teacher tx"  # nothing measured yet: no estimate rather than a wrong one
    assert lines[1] == "[relaxkd] stage 2/6: distill"  # no student measured yet
    # students measured at 30 s: 3 distill steps and one T_x (120 s) to go
    assert lines[2] == "[relaxkd] stage 3/6: table1 a, about 3.5 min left"
    assert lines[3].endswith("table1 b, about 3.3 min left")  # mean student 40 s: 2 x 40 + 120
    assert lines[5] == "[relaxkd] stage 6/6: report"  # nothing left to build


def test_rerun_that_reuses_everything_prints_no_estimate(capsys):
    steps = [ProgressStep(f"s{i}", lambda: None, ("distill",)) for i in range(3)]
    StageProgress(steps, {}).run_all()
    assert "left" not in capsys.readouterr().err


def test_export_deprecation_notices_are_silenced_at_their_source(tmp_path):
    from relaxkd.stages.predict import quiet_torchscript

    model = torch.nn.Linear(2, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_torchscript():
            torch.jit.trace(model, torch.zeros(1, 2)).save(str(tmp_path / "m.pt"))
            torch.jit.load(str(tmp_path / "m.pt"))
    assert not [w for w in caught if "deprecated" in str(w.message)]


def test_install_prints_a_line_per_step_and_metadata_is_current():
    makefile = (REPO / "Makefile").read_text().splitlines()
    for i, line in enumerate(makefile):
        if "pip install" in line:
            before = [m for m in makefile[max(0, i - 3):i] if "@echo" in m]
            assert before, f"Makefile line {i + 1} installs without saying so first: {line.strip()}"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)  # SPDX string: no setuptools license-table deprecation


def test_progress_off_a_terminal_is_a_few_plain_lines(capsys):
    from relaxkd.console import progress_bar

    with progress_bar(10_000, "CLIP word embeddings", "word") as bar:
        for _ in range(1000):
            bar.update(10)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err
    assert err.startswith("[relaxkd] CLIP word embeddings: 10,000 words in ")
