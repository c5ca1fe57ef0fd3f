"""Kill-and-resume for the baselines' stages: a run stopped after a checkpoint and resumed ends with
the same metrics and weights as an uninterrupted run, for every new stage (LFME's experts, DMAE's
pre-training, and the LFME / FFKD / DMAE students).

The stop is an exception raised at the start of an epoch (after the previous epoch's checkpoint),
in process; tests/test_distill.py kills a real CLI process with SIGKILL for the shared machinery.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from relaxkd.config import load_config
from relaxkd.engine import trainer as trainer_module
from relaxkd.stages.context import Context
from relaxkd.stages.distill import distill
from relaxkd.stages.dmae_pretrain import dmae_pretrain
from relaxkd.stages.expert import expert_teacher
from relaxkd.stages.unimodal import unimodal_teacher

from conftest import REPO, tiny_overrides

EPOCHS = [
    "unimodal.optim={epochs: 3, batch_size: 128, lr: 0.05, warmup_epochs: 1, milestones: [2]}",
    "distill.optim={epochs: 3, batch_size: 128, lr: 0.05, warmup_epochs: 1, milestones: [2]}",
]
LFME = ["data.params={imbalance_factor: 100}", "distill.teachers=[expert_many, expert_medium, expert_few]", "distill.loss=lfme"]
DMAE = ["distill.teachers=[strong]", "distill.loss=dmae", "distill.student=vit_micro",
        "distill.params={pretrain_epochs: 3, pretrain_batch_size: 64, pretrain_warmup_epochs: 1, "
        "decoder_dim: 32, decoder_depth: 1, decoder_heads: 2}"]
FFKD = ["distill.teachers=[strong]", "distill.loss=ffkd", "distill.params={teacher_lr: 0.01}"]

#: case -> (overrides, stages built first, the stage under test, its weights file)
CASES = {
    "teacher-expert": (LFME, [], lambda c: expert_teacher(c, "expert_few"), "model.safetensors"),
    "dmae-pretrain": (DMAE, [lambda c: unimodal_teacher(c, "strong")], dmae_pretrain, "student.safetensors"),
    "distill-lfme": (
        LFME,
        [lambda c, n=n: expert_teacher(c, n) for n in ("expert_many", "expert_medium", "expert_few")],
        distill,
        "student.safetensors",
    ),
    "distill-ffkd": (FFKD, [lambda c: unimodal_teacher(c, "strong")], distill, "student.safetensors"),
    "distill-dmae": (DMAE, [lambda c: unimodal_teacher(c, "strong"), dmae_pretrain], distill, "student.safetensors"),
}


class _Stop(Exception):
    pass


class StopAtEpoch(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Stop(f"stopped at the start of epoch {self.epoch}")


def context(root: Path, overrides: list[str]) -> Context:
    torch.set_num_threads(1)
    return Context(load_config(REPO / "configs" / "demo.yaml", [*tiny_overrides(root), *EPOCHS, *overrides]))


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=() if c == "distill-ffkd" else pytest.mark.slow) for c in CASES]
)
def test_a_stopped_stage_resumes_to_the_same_metrics_and_weights(case, tmp_path, monkeypatch):
    overrides, before, stage, weights = CASES[case]
    straight_ctx = context(tmp_path / "straight", overrides)
    for build in before:
        build(straight_ctx)
    want = stage(straight_ctx)

    killed_ctx = context(tmp_path / "killed", overrides)
    for build in before:
        build(killed_ctx)
    original = trainer_module.build_trainer

    def stopping(cfg, work_dir, max_epochs, callbacks=None):
        return original(cfg, work_dir, max_epochs, [*(callbacks or []), StopAtEpoch(2)])

    monkeypatch.setattr(trainer_module, "build_trainer", stopping)
    with pytest.raises(_Stop):
        stage(killed_ctx)
    checkpoints = list((tmp_path / "killed").rglob(".work/*/checkpoints/last.ckpt"))
    assert checkpoints and all(f".work/{want.stage}-" in str(c) for c in checkpoints), checkpoints
    assert torch.load(checkpoints[0], map_location="cpu", weights_only=False)["epoch"] == 1
    monkeypatch.setattr(trainer_module, "build_trainer", original)

    got = stage(context(tmp_path / "killed", overrides))  # a fresh process would do the same
    got_metrics, want_metrics = (json.loads((a.path / "metrics.json").read_text()) for a in (got, want))
    assert len(want_metrics["history"]) == 3 and got_metrics == want_metrics
    got_w, want_w = load_file(str(got.file(weights))), load_file(str(want.file(weights)))
    assert got_w.keys() == want_w.keys() and all(torch.equal(got_w[k], want_w[k]) for k in want_w)


# ---- DDP -------------------------------------------------------------------------------------------


@pytest.mark.slow  # ~1 min: two gloo processes train LFME's three experts, then the student
def test_lfme_trains_with_two_gloo_ddp_processes(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "relaxkd", "distill", str(REPO / "configs" / "demo.yaml"), *tiny_overrides(root), *LFME,
               "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr  # really two processes
    [record] = list((root / "demo").glob("distill-*/metrics.json"))
    metrics = json.loads(record.read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1] and metrics["provenance"]["loss"] == "lfme"
    assert all(h["num_samples"] == 360 for h in metrics["history"])  # validation gathered from both ranks
    assert {"expert_weight_many", "expert_weight_medium", "expert_weight_few"} <= set(metrics["history"][-1])
    assert len(list((root / "demo").glob("teacher-expert-*/manifest.json"))) == 3


@pytest.mark.slow  # ~1-2 min: three CLI runs
def test_sigkilled_ffkd_distillation_resumes_to_the_same_metrics(tmp_path):
    """A real SIGKILL of `relaxkd distill` with FFKD (its refined teacher lives in the checkpoint)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def command(root: Path) -> list[str]:
        return [sys.executable, "-m", "relaxkd", "distill", str(REPO / "configs" / "demo.yaml"), *tiny_overrides(root),
                *FFKD, "distill.optim={epochs: 4, batch_size: 128, lr: 0.05, warmup_epochs: 1, milestones: [2]}"]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for root in (straight, killed):  # the teacher first, so the kill lands in the student's training
        torch.set_num_threads(1)
        unimodal_teacher(Context(load_config(REPO / "configs" / "demo.yaml", [*tiny_overrides(root), *FFKD])), "strong")
    reference = subprocess.Popen(
        command(straight), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    first = subprocess.Popen(command(killed), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, checkpoints = time.monotonic() + 240, []
        while not checkpoints and first.poll() is None and time.monotonic() < deadline:
            checkpoints = list((killed / "demo" / ".work").glob("distill-*/checkpoints/last.ckpt"))
            time.sleep(0.05)
        assert checkpoints and first.poll() is None, "the run must be killed while training"
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert not list((killed / "demo").glob("distill-*/manifest.json"))
        resumed = subprocess.run(command(killed), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resuming from checkpoint" in resumed.stderr
        _, err = reference.communicate(timeout=300)
        assert reference.returncode == 0, err[-3000:]
    finally:
        for proc in (reference, first):
            if proc.poll() is None:
                proc.kill()
    [got] = list((killed / "demo").glob("distill-*/metrics.json"))
    [want] = list((straight / "demo").glob("distill-*/metrics.json"))
    assert len(json.loads(want.read_text())["history"]) == 4
    assert json.loads(got.read_text()) == json.loads(want.read_text())
