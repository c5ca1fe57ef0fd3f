"""`make demo` tells the paper's story: Table 1 over seeds, Table 2's ends, a report path printed last."""
from __future__ import annotations

import re
from pathlib import Path

from relaxkd.config import load_config
from relaxkd.stages.plan import trains_students
from relaxkd.trials import select_trials

from cli_helpers import relaxkd
from conftest import REPO, tiny_overrides

DEMO = REPO / "configs" / "demo.yaml"
TABLE1 = ("ours", "ensemble-kd", "zscore-kd", "dkd", "vanilla-kd", "no-kd")


def test_demo_config_runs_table1_over_seeds_and_table2_ends():
    cfg = load_config(DEMO)
    assert {"table1", "table2"} <= set(cfg.sweeps)
    assert len(cfg.seeds) >= 3
    assert cfg.multimodal.proportions == {"wn": 1.0}  # ours: 0 % gt / 100 % wn
    for name in TABLE1:
        assert trains_students(cfg, "table1", name), name
    trained = {t.name for t in select_trials("table2", None) if trains_students(cfg, "table2", t.name)}
    assert trained == {"gt100-wn0/tx-s", "gt100-wn0/tm-tx-s", "gt0-wn100/tx-s", "gt0-wn100/tm-tx-s"}
    # every pattern names trials that exist: a renamed trial cannot silently drop out of the demo
    for pattern in cfg.sweep_students:
        family = pattern.split("/", 1)[0]
        assert any(trains_students(cfg.model_copy(update={"sweep_students": [pattern]}), family, t.name)
                   for t in select_trials(family, None)), pattern


def test_sweep_students_patterns():
    cfg = load_config(DEMO, ["sweep_students=[table2/gt100-*]"])
    assert trains_students(cfg, "table2", "gt100-wn0/tx-s") and not trains_students(cfg, "table1", "ours")
    assert trains_students(load_config(DEMO, ["sweep_students=true"]), "table1", "ours")
    assert not trains_students(load_config(DEMO, ["sweep_students=false"]), "table1", "ours")


def test_run_prints_the_report_path_last_and_its_table1_has_seeds_and_figures(capsys, monkeypatch, tmp_path):
    args = tiny_overrides(tmp_path / "runs") + ["sweeps=[table1]", "seeds=[0, 1, 2]", "sweep_students=[table1/no-kd]"]
    result = relaxkd(capsys, monkeypatch, "run", str(DEMO), *args)
    assert result.code == 0, result.err
    last = result.out.strip().splitlines()[-1]
    assert last.startswith("report: ") and last.endswith("report.md")
    report = Path(last.removeprefix("report: "))
    text = report.read_text()
    table1 = text.split("## Table 1")[1].split("\n## ")[0]
    assert "3 seed(s)" in table1
    row = next(line for line in table1.splitlines() if line.startswith("| no-kd |"))
    assert "no teacher (CE only)" in row and re.search(r"\d+\.\d ± \d+\.\d", row)
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert pngs and all((report.parent / name).is_file() for name in pngs)
    # one line per stage and trial, counted once across the run (not per sweep)
    counters = re.findall(r"\[relaxkd\] stage (\d+)/(\d+):", result.err)
    assert len({total for _, total in counters}) == 1 and [int(i) for i, _ in counters] == list(range(1, len(counters) + 1))
