"""The launchers' parts that need no cluster: resources per stage kind, the job scripts, the local
launcher over a graph with a failing job, and `relaxkd status` on finished, running and failed graphs.
(tests/test_cluster.py runs real graphs on a real single-node SLURM cluster: slow.)"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from relaxkd.config import load_config
from relaxkd.errors import UserError
from relaxkd.launch import launch
from relaxkd.launch.jobs import JobSpec, LaunchFolder, render_script
from relaxkd.launch.status import graph_status
from relaxkd.launcher_config import STAGE_DEFAULTS, SlurmSettings

from cli_helpers import relaxkd

SMALL = SlurmSettings(resources={"default": {"gpus": 0, "cpus": 1, "mem": "100M", "time": "5"}})


def test_resources_per_stage_kind_default_then_config():
    settings = SlurmSettings(partition="gpu", account="lab", resources={"default": {"mem": "8G"}, "relax": {"cpus": 32}})
    assert settings.resources_for("distill").model_dump() == {"gpus": 1, "cpus": 8, "mem": "8G", "time": "1-00:00:00"}
    assert settings.resources_for("relax").model_dump() == {"gpus": 0, "cpus": 32, "mem": "8G", "time": "4:00:00"}
    assert STAGE_DEFAULTS["embed-nouns"].gpus == 0 and STAGE_DEFAULTS["teacher-multimodal"].gpus == 1


def test_bad_launcher_settings_are_one_line_each(tmp_path):
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    for override, text in (("launcher.slurm.resources={distil: {gpus: 1}}", "unknown stage kind 'distil'"),
                           ("launcher.slurm.resources={relax: {time: soon}}", "'soon' is not a SLURM time"),
                           ("launcher.slurm.resources={relax: {mem: lots}}", "'lots' is not a SLURM memory size")):
        with pytest.raises(UserError, match=text):
            load_config(demo, [override])
    assert "launcher" not in load_config(demo).to_dict()  # defaults stay out of the dumps (config hashes)


def test_job_script_asks_for_the_kind_and_requeues_before_the_limit(tmp_path):
    settings = SlurmSettings(partition="gpu", qos="long", signal_seconds=120, sbatch_args=["--constraint=a100"])
    job = JobSpec("distill-abc", "distill", ["python", "-m", "relaxkd", "build-node", "c.yaml", "--stage", "distill"])
    text = render_script(job, settings, tmp_path / "x.log", tmp_path)
    for line in (
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --mem=32G",
        "#SBATCH --partition=gpu",
        "#SBATCH --qos=long",
        "#SBATCH --constraint=a100",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120",
        "trap requeue USR1",
        'scontrol requeue "$SLURM_JOB_ID"',
        "python -m relaxkd build-node c.yaml --stage distill &",
    ):
        assert line in text.splitlines() or line in text
    assert "--account" not in text and "srun" not in text
    multi = JobSpec("distill-abc", "distill", ["python"], tasks=4, nodes=2)
    text = render_script(multi, settings, tmp_path / "x.log", tmp_path)
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=4" in text and "#SBATCH --gpus-per-node=4" in text
    assert "\nsrun python &" in text


def _graph(tmp_path: Path, fail: bool) -> list[JobSpec]:
    marker = tmp_path / "ran.txt"
    return [
        JobSpec("a", "relax", ["bash", "-c", f"echo a >> {marker}"]),
        JobSpec("b", "distill", ["bash", "-c", f"echo b >> {marker}"], deps=["a"]),
        JobSpec("c", "relax", ["bash", "-c", f"echo c >> {marker}; exit {3 if fail else 0}"]),
        JobSpec("report", "report", ["bash", "-c", f"echo report >> {marker}"], deps=["b", "c"]),
    ]


def test_local_launcher_runs_the_graph_and_cancels_dependents_of_a_failure(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    said = []
    assert launch(_graph(tmp_path, fail=True), run, SMALL, "local", said.append) == ["a", "b", "c", "report"]
    assert (tmp_path / "ran.txt").read_text().split() == ["a", "b", "c"]  # the report never ran
    states = {s.name: s.state for s in graph_status(run)}
    assert states == {"a": "done", "b": "done", "c": "failed", "report": "cancelled"}
    assert any("report: cancelled, its input c failed" in line for line in said)
    log = LaunchFolder(run).log_path("c")
    assert "[relaxkd] job local (restart 0)" in log.read_text()
    result = relaxkd(capsys, monkeypatch, "status", run)
    assert result.code == 1
    assert f"error: c: failed; log {log}" in result.err
    assert "failed" in result.out and "2 done, 1 failed, 1 cancelled" in result.out


def test_status_of_a_finished_and_of_a_running_graph(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    launch(_graph(tmp_path, fail=False), run, SMALL, "local", lambda line: None)
    result = relaxkd(capsys, monkeypatch, "status", run, "--wait")
    assert result.code == 0 and "4 done" in result.out
    folder = LaunchFolder(run)
    folder.update("report", state="running", job_id=f"local-{os.getpid()}")  # as while the local launcher runs it
    result = relaxkd(capsys, monkeypatch, "status", run)
    assert result.code == 0 and "3 done, 1 running" in result.out
    folder.update("report", state="running", job_id="local-999999999")  # its launcher died
    result = relaxkd(capsys, monkeypatch, "status", run)
    assert result.code == 1 and "the local launcher stopped" in result.err


def test_status_without_a_launch_is_one_line(tmp_path, capsys, monkeypatch):
    result = relaxkd(capsys, monkeypatch, "status", tmp_path)
    assert result.code == 2 and result.err.strip().startswith("error: ") and "has no launched jobs" in result.err


def test_slurm_launcher_without_sbatch_or_refused_by_it_is_one_line(tmp_path, monkeypatch):
    jobs = _graph(tmp_path, fail=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"--launcher slurm needs SLURM's `sbatch` on the PATH; .* use --launcher local"):
        launch(jobs, tmp_path / "run", SMALL, "slurm", lambda line: None)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"  # what sbatch says for a partition the cluster lacks
    fake.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    with pytest.raises(UserError, match=r"sbatch refused .*a\.sh: sbatch: error: invalid partition specified: gpu"):
        launch(jobs, tmp_path / "run", SMALL, "slurm", lambda line: None)


def test_graph_nodes_become_jobs_with_their_inputs_and_a_multi_task_student(tmp_path):
    from types import SimpleNamespace

    from relaxkd.launch.graph import jobs_for

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    cfg = load_config(demo, [f"run_root={tmp_path}", "trainer.devices=4", "trainer.num_nodes=2"])
    def node(stage, ident, inputs=(), overrides=(), arg=None):
        return SimpleNamespace(
            node=SimpleNamespace(stage=stage, arg=arg), id=ident, path=str(tmp_path / "demo" / ident),
            inputs={f"in{i}": name for i, name in enumerate(inputs)}, overrides=tuple(overrides))
    nodes = [node("embed-images", "embed-images-1"), node("teacher-unimodal", "teacher-unimodal-2", arg="strong"),
             node("distill", "distill-3", ["teacher-unimodal-2", "embed-images-1"], ["distill.loss=kd", "seed=1"])]
    jobs = jobs_for(SimpleNamespace(cfg=cfg), nodes, "report", ["relaxkd", "run"])
    assert [(j.name, j.kind, j.deps) for j in jobs] == [
        ("embed-images-1", "embed-images", []), ("teacher-unimodal-2", "teacher-unimodal", []),
        ("distill-3", "distill", ["embed-images-1", "teacher-unimodal-2"]),
        ("report", "report", ["embed-images-1", "teacher-unimodal-2", "distill-3"])]
    assert (jobs[0].tasks, jobs[0].nodes) == (1, 1) and (jobs[2].tasks, jobs[2].nodes) == (4, 2)  # only training is srun'd
    assert jobs[1].argv[-2:] == ["--arg", "strong"] and "--expect" in jobs[2].argv
    trial_config = load_config(Path(jobs[2].argv[jobs[2].argv.index("build-node") + 1]))  # the node's whole config
    assert (trial_config.seed, trial_config.distill.loss, trial_config.run_dir) == (1, "kd", cfg.run_dir)


def test_a_job_whose_config_no_longer_gives_its_planned_artifact_refuses_in_one_line(tmp_path, capsys, monkeypatch):
    import yaml

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(load_config(demo, [f"run_root={tmp_path}", f"cache_root={tmp_path}/_shared"]).to_dict()))
    result = relaxkd(
        capsys, monkeypatch, "build-node", config, "--stage", "embed-images", "--expect", "embed-images-0123456789abcdef"
    )
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.strip().splitlines()[-1].startswith(
        "error: this job was planned to build embed-images-0123456789abcdef but its config gives embed-images-")
    assert not list(tmp_path.glob("demo/embed-images-*"))  # refused before any work
