"""Table 1's baselines end to end on the demo data (tiny settings), a method plugged in from outside
the package, and the bad inputs each baseline refuses (one line, exit 2; docs/errors.md)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from relaxkd.config import load_config
from relaxkd.errors import UserError
from relaxkd.methods import METHODS, LogitMethod, LogitParams, register_method
from relaxkd.stages.context import Context
from relaxkd.stages.distill import distill

from cli_helpers import relaxkd
from conftest import REPO, tiny_overrides

DEMO = REPO / "configs" / "demo.yaml"
#: a long-tailed demo: digits with the LDAM profile (imbalance 100: 142 ... 1 images per class)
LONG_TAILED = ["data.params={imbalance_factor: 100}"]
TINY_DMAE = (
    "distill.params={pretrain_epochs: 2, pretrain_batch_size: 64, pretrain_warmup_epochs: 1, "
    "decoder_dim: 32, decoder_depth: 1, decoder_heads: 2}"
)


def pipeline(root: Path, *extra: str) -> Context:
    torch.set_num_threads(1)
    return Context(load_config(DEMO, [*tiny_overrides(root), *extra]))


def metrics(artifact) -> dict:
    return json.loads((artifact.path / "metrics.json").read_text())


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One run root: its strong teacher is shared by the balanced trials (content-addressed)."""
    return tmp_path_factory.mktemp("baselines") / "runs"


# ---- a method from outside the package ------------------------------------------------------------


class CenteredParams(LogitParams):
    temperature: float = 2.0
    ce_weight: float = 1.0
    kd_weight: float = 0.5


@register_method("test-centered-kd")
class CenteredKD(LogitMethod):
    """KD on mean-centred logits: defined in a test file, trained through the whole pipeline."""

    Params = CenteredParams

    def kd_term(self, student, teacher, step):
        s = student - student.mean(1, keepdim=True)
        t = teacher - teacher.mean(1, keepdim=True)
        tau = self.params.temperature
        return F.kl_div(F.log_softmax(s / tau, 1), F.log_softmax(t / tau, 1), reduction="batchmean", log_target=True) * tau**2


def test_a_method_registered_outside_the_package_trains_end_to_end(root):
    assert "test-centered-kd" in METHODS
    p = pipeline(root, "distill.teachers=[strong]", "distill.loss=test-centered-kd", "distill.params={kd_weight: 0.7}")
    m = metrics(distill(p))
    assert m["provenance"]["loss"] == "test-centered-kd" and len(m["history"]) == 2
    # the plug-in's own recipe (CenteredParams: τ 2, CE 1, KD 0.5) with distill.params' KD weight 0.7, as the student trained
    assert m["provenance"]["params"] == {"temperature": 2.0, "ce_weight": 1.0, "kd_weight": 0.7}
    assert m["top1"] > 20.0, m["top1"]  # chance is 10 % on digits
    with pytest.raises(UserError, match="unknown key 'alpha' for KD method 'test-centered-kd'"):
        pipeline(root, "distill.teachers=[strong]", "distill.loss=test-centered-kd", "distill.params={alpha: 1}")


# ---- FFKD ----------------------------------------------------------------------------------------


def test_ffkd_trains_end_to_end_and_writes_metrics(root):
    p = pipeline(root, "distill.teachers=[strong]", "distill.loss=ffkd", "distill.params={teacher_lr: 0.01}")
    m = metrics(distill(p))
    assert len(m["history"]) == 2 and math.isfinite(m["top1"]) and m["provenance"]["loss"] == "ffkd"


@pytest.mark.parametrize("update", [True, False])
def test_ffkd_refines_a_copy_of_its_teacher_only_when_switched_on(update):
    from relaxkd.data.transforms import IMAGENET_STATS
    from relaxkd.distill import StudentDistiller, StudentSettings, TeacherSet
    from relaxkd.engine.settings import OptimConfig
    from relaxkd.models import build_backbone

    torch.manual_seed(0)
    teacher = build_backbone("tiny_cnn", 10)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    settings = StudentSettings("tiny_cnn", OptimConfig(epochs=1, lr=0.1, warmup_epochs=0, milestones=[]), loss="ffkd",
                               params={"update_teacher": update, "teacher_lr": 0.5})
    module = StudentDistiller(
        settings, num_classes=10, input_stats=IMAGENET_STATS,
        teachers=TeacherSet(names=["strong"], members={"strong": teacher}, image_stats=IMAGENET_STATS),
    )
    optimizer = module.configure_optimizers()["optimizer"]
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    terms = module.method(module.step_inputs((x, y, torch.arange(16))))
    terms["loss"].backward()
    optimizer.step()
    refined = module.method.refined.members["strong"].state_dict()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # the artifact's model is untouched
    assert torch.equal(refined["fc.weight"], before["fc.weight"]) != update
    assert ("feedback" in terms) == update and len(optimizer.param_groups) == (2 if update else 1)


# ---- LFME ----------------------------------------------------------------------------------------


def test_lfme_trains_subset_experts_then_the_student_with_self_paced_weights(root):
    p = pipeline(root, *LONG_TAILED, "distill.teachers=[expert_many, expert_medium, expert_few]", "distill.loss=lfme")
    art = distill(p)
    m = metrics(art)
    assert {"many_shot", "medium_shot", "few_shot"} <= set(m) and len(m["history"]) == 2
    assert {"expert_weight_many", "expert_weight_medium", "expert_weight_few"} <= set(m["history"][-1])
    assert all(0.0 <= m["history"][-1][f"expert_weight_{s}"] for s in ("many", "medium", "few"))
    experts = sorted(a.parent.name for a in root.rglob("teacher-expert-*/manifest.json"))
    assert len(experts) == 3
    info = [json.loads(next((root / "demo").glob(f"{e}/teacher.json")).read_text()) for e in experts]
    assert sorted(i["subset"] for i in info) == ["few", "many", "medium"]


def test_lfme_on_a_balanced_dataset_is_one_line_exit_2(capsys, monkeypatch, tmp_path):
    result = relaxkd(capsys, monkeypatch, "distill", DEMO, *tiny_overrides(tmp_path / "runs"),
                     "distill.teachers=[expert_many, expert_medium, expert_few]", "distill.loss=lfme")
    assert result.code == 2
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("error: KD method 'lfme' needs a long-tailed training set") and "'digits' is balanced" in last
    assert not list((tmp_path / "runs").rglob("manifest.json"))  # refused before any work


# ---- DMAE ----------------------------------------------------------------------------------------


def test_dmae_pretrains_a_vit_with_feature_distillation_then_fine_tunes_it(root):
    p = pipeline(root, "distill.teachers=[strong]", "distill.loss=dmae", "distill.student=vit_micro", TINY_DMAE)
    art = distill(p)
    m = metrics(art)
    assert len(m["history"]) == 2 and math.isfinite(m["top1"])
    pre = next(root.rglob("dmae-pretrain-*/metrics.json"))
    pm = json.loads(pre.read_text())
    assert len(pm["history"]) == 2 and pm["alignment"] > 0 and pm["reconstruction"] > 0
    assert pm["teacher_layer"] == "features.2" and pm["student_block"] == 2


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["distill.loss=ffkd", "distill.targets=cached"],
            "error: KD method 'ffkd' updates its teachers, which cached teacher targets cannot serve; set distill.targets=online",
        ),
        (
            ["distill.loss=dmae", "distill.student=vit_micro", "distill.targets=cached"],
            "error: KD method 'dmae' needs teacher features, which cached teacher targets cannot serve; set "
            "distill.targets=online",
        ),
        (
            ["distill.loss=dmae"],
            "error: KD method 'dmae' needs a vit student, but distill.student=tiny_cnn is a cnn; use e.g. "
            "distill.student=vit_tiny_patch16 (vit_micro for tests)",
        ),
        (
            ["distill.loss=dkd", "distill.params={gamma: 2}"],
            "error: distill.params: unknown key 'gamma' for KD method 'dkd'; valid keys: temperature, ce_weight, kd_weight, "
            "alpha, beta, warmup_epochs",
        ),
        (
            ["distill.loss=lfme"],
            "error: KD method 'lfme' distils from its subset experts; set distill.teachers=[expert_many, expert_medium, "
            "expert_few] (got [strong])",
        ),
        (
            ["distill.loss=ffkd", "distill.teachers=[strong, tx]"],
            "error: KD method 'ffkd' refines image teachers online; remove tx from distill.teachers",
        ),
        (
            ["distill.loss=dmae", "distill.student=vit_micro", "distill.teachers=[tx]"],
            "error: KD method 'dmae' aligns the features of one image teacher; set e.g. distill.teachers=[strong] (got [tx])",
        ),
        # (other test files register plug-ins too: the list is checked up to the built-ins)
        (["distill.methods={crd: {}}"], "error: unknown KD method 'crd'; valid KD methods: dkd, dmae, ffkd, kd, lfme, none, "),
    ],
)
def test_bad_method_inputs_are_one_line_exit_2_before_any_work(capsys, monkeypatch, tmp_path, extra, expected):
    for command in ("validate", "distill"):
        result = relaxkd(
            capsys, monkeypatch, command, DEMO, *tiny_overrides(tmp_path / "runs"), "distill.teachers=[strong]", *extra
        )
        assert result.code == 2, result.err
        last = result.err.strip().splitlines()[-1]
        assert last == expected or (expected.endswith(", ") and last.startswith(expected) and last.endswith("zscore"))
    assert not list((tmp_path / "runs").rglob("manifest.json"))


# ---- Table 1's sweep -------------------------------------------------------------------------------


def test_table1_lists_the_papers_baselines_and_lfme_needs_long_tailed_data():
    from relaxkd.trials import TABLE1_ROWS, table1_trials

    trials = {t.name: t for t in table1_trials()}
    assert set(trials) == set(TABLE1_ROWS) == {
        "ours", "ensemble-kd", "zscore-kd", "dkd", "vanilla-kd", "no-kd", "lfme", "ffkd", "dmae"}
    assert trials["lfme"].requires == ("long_tailed",) and not trials["ffkd"].requires
    assert "distill.student={distill.vit_student}" in trials["dmae"].overrides


def test_table1_sweep_skips_lfme_on_balanced_data_and_refuses_it_by_name(root, capsys, monkeypatch, tmp_path):
    from relaxkd.stages import plan
    from relaxkd.trials import table1_trials

    # the family run (no trial names) over LFME and no-KD only, to keep the test short
    monkeypatch.setattr(plan, "select_trials", lambda family, names: [t for t in table1_trials() if t.name in ("lfme", "no-kd")])
    ctx = pipeline(tmp_path / "runs", "sweep_students=true")
    plan.run_sweep(ctx, "table1")
    monkeypatch.undo()
    record = json.loads((ctx.cfg.run_dir / "sweep-table1.json").read_text())
    assert set(record) == {"no-kd"}  # LFME skipped on balanced digits
    result = relaxkd(capsys, monkeypatch, "sweep", DEMO, *tiny_overrides(tmp_path / "runs"), "sweep_students=true",
                     "--family", "table1", "--trials", "lfme")
    assert result.code == 2
    assert result.err.strip().splitlines()[-1] == (
        "error: trial 'lfme' of sweep table1 needs long-tailed training data; dataset 'digits' is not long-tailed; "
        "use e.g. cifar100_lt or imagenet_lt")


def test_table1_sweep_runs_the_new_baselines_on_the_demo_data(root):
    """LFME (long-tailed digits), FFKD and DMAE (the demo's vit_micro) as table1 trials."""
    from relaxkd.stages.plan import run_sweep

    ctx = pipeline(
        root,
        *LONG_TAILED,
        "sweep_students=true",
        "distill.methods={dmae: {pretrain_epochs: 1, pretrain_batch_size: 64, "
        "pretrain_warmup_epochs: 0, decoder_dim: 32, decoder_depth: 1, decoder_heads: 2, finetune_epochs: 2}}",
    )
    run_sweep(ctx, "table1", "lfme,ffkd,dmae")
    record = json.loads((ctx.cfg.run_dir / "sweep-table1.json").read_text())
    assert set(record) == {"lfme", "ffkd", "dmae"}
    assert "distill.student=vit_micro" in record["dmae"]["overrides"]
    for name, entry in record.items():
        m = json.loads((Path(entry["artifacts"]["distill"]) / "metrics.json").read_text())
        assert m["provenance"]["loss"] == name and math.isfinite(m["top1"]) and "few_shot" in m


def test_experts_on_a_balanced_dataset_are_refused(capsys, monkeypatch, tmp_path):
    result = relaxkd(capsys, monkeypatch, "distill", DEMO, *tiny_overrides(tmp_path / "runs"), "distill.teachers=[expert_many]")
    assert result.code == 2
    assert result.err.strip().splitlines()[-1] == (
        "error: teachers expert_many are LFME's subset experts, defined for long-tailed training sets; "
        "dataset 'digits' is balanced; use e.g. cifar100_lt or imagenet_lt")
    assert not list((tmp_path / "runs").rglob("manifest.json"))


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([*LONG_TAILED, "distill.teachers=[expert_many, expert_medium, expert_few]", "distill.loss=lfme"], id="lfme"),
        pytest.param(["distill.teachers=[strong]", "distill.loss=test-centered-kd"], id="plug-in"),
    ],
)
def test_cached_teacher_targets_serve_logit_methods_bit_for_bit(root, extra):
    """A logit-only method (LFME, a plug-in) trains the same student from cached targets as online."""
    online = metrics(distill(pipeline(root, *extra)))
    cached = metrics(distill(pipeline(root, *extra, "distill.targets=cached")))
    assert cached["provenance"]["targets"] == "cached" and online["provenance"]["targets"] == "online"
    assert cached["history"] == online["history"]


def test_table1_trials_run_under_a_cached_targets_config(root):
    """A sweep with distill.targets=cached (to save teacher passes) still runs FFKD and DMAE online."""
    from relaxkd.config import apply_overrides, build_config
    from relaxkd.stages.context import Context as Ctx
    from relaxkd.trials import resolve_overrides, table1_trials

    base = pipeline(root, "distill.targets=cached")
    for trial in (t for t in table1_trials() if t.name in ("ffkd", "dmae")):
        overrides = resolve_overrides(trial.overrides, base.cfg.to_dict())
        Ctx(build_config(apply_overrides(base.cfg.to_dict(), overrides)))  # validated: no refusal
