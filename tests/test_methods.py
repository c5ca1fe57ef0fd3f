"""KD methods as plug-ins: each method's loss against its reference formula, written out here.

Every oracle below is an independent numpy transcription of the reference implementation named in
its docstring; the method layer must reproduce it on fixed inputs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from relaxkd.config import load_config
from relaxkd.errors import UserError
from relaxkd.methods import METHODS, MethodContext, Outputs, Step, build_method
from relaxkd.methods.lfme import scale_instance_weights

from conftest import REPO


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_ce(z, y):
    return float(-np_log_softmax(z)[np.arange(len(y)), y].mean())


def np_kl_rows(p_log, q_log):
    """KL(p ‖ q) per row from log-probabilities."""
    return (np.exp(p_log) * (p_log - q_log)).sum(-1)


def make_step(student, teachers: dict, targets, epoch=0, indices=None):
    return Step(
        epoch=epoch, step=0, images=student, targets=targets,
        indices=torch.arange(len(targets)) if indices is None else indices,
        student=Outputs(student), teachers={n: Outputs(t) for n, t in teachers.items()},
    )


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(3)
    student = torch.randn(8, 6, generator=g, dtype=torch.float64) * 2
    teacher = torch.randn(8, 6, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, 6, (8,), generator=g)
    return student, teacher, targets


# ---- z-score KD ------------------------------------------------------------------------------


def ref_zscore_kd(s, t, y, tau=2.0, ce_w=0.1, kd_w=9.0):
    """sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py (LOGIT_STAND on):
    normalize(z) = (z - mean) / (1e-7 + std) (torch.std: unbiased), on student and teacher;
    loss = CE_WEIGHT·CE + KD_WEIGHT·τ²·mean_i Σ_c KL."""
    def norm(z):
        return (z - z.mean(-1, keepdims=True)) / (1e-7 + z.std(-1, ddof=1, keepdims=True))
    kd = np_kl_rows(np_log_softmax(norm(t) / tau), np_log_softmax(norm(s) / tau)).mean() * tau**2
    return ce_w * np_ce(s, y) + kd_w * kd


def test_zscore_kd_keeps_its_reference_recipe_unless_overridden(batch):
    s, t, y = batch
    method = build_method("zscore", MethodContext(num_classes=6, teacher_names=["t"]))
    assert method.params.model_dump() == {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 9.0}
    out = method(make_step(s, {"t": t}, y))
    assert out["loss"].item() == pytest.approx(ref_zscore_kd(s.numpy(), t.numpy(), y.numpy()), rel=1e-9)
    cfg = load_config(REPO / "configs" / "demo.yaml", ["distill.loss=zscore", "distill.temperature=4"])
    assert cfg.distill.method_params().model_dump() == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 9.0}


# ---- DKD -------------------------------------------------------------------------------------


def ref_dkd(s, t, y, epoch, alpha=1.0, beta=8.0, tau=4.0, warmup=20, ce_w=1.0):
    """megvii-research/mdistiller, mdistiller/distillers/DKD.py: CE_WEIGHT·CE +
    min(epoch / WARMUP, 1)·(α·TCKD + β·NCKD), epoch counted from 1 (mdistiller/engine/trainer.py);
    TCKD on [p_target, 1 - p_target], NCKD on the softmax with the target logit minus 1000."""
    rows = np.arange(len(y))
    ps, pt = np.exp(np_log_softmax(s / tau)), np.exp(np_log_softmax(t / tau))
    bs = np.stack([ps[rows, y], 1 - ps[rows, y]], 1)
    bt = np.stack([pt[rows, y], 1 - pt[rows, y]], 1)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum() * tau**2 / len(y)
    mask = np.zeros_like(s)
    mask[rows, y] = 1.0
    nt_t = np_log_softmax(t / tau - 1000.0 * mask)
    nt_s = np_log_softmax(s / tau - 1000.0 * mask)
    nckd = (np.exp(nt_t) * (nt_t - nt_s)).sum() * tau**2 / len(y)
    return ce_w * np_ce(s, y) + min(epoch / warmup, 1.0) * (alpha * tckd + beta * nckd)


@pytest.mark.parametrize("epoch0", [0, 9, 19, 30])
def test_dkd_applies_mdistillers_warmup_on_the_dkd_term(batch, epoch0):
    s, t, y = batch
    method = build_method("dkd", MethodContext(num_classes=6, teacher_names=["t"]))
    out = method(make_step(s, {"t": t}, y, epoch=epoch0))
    expected = ref_dkd(s.numpy(), t.numpy(), y.numpy(), epoch=epoch0 + 1)  # Lightning counts from 0
    assert out["loss"].item() == pytest.approx(expected, rel=1e-9)
    off = build_method("dkd", MethodContext(num_classes=6, teacher_names=["t"]), {"warmup_epochs": 0})
    assert off(make_step(s, {"t": t}, y))["loss"].item() == pytest.approx(
        ref_dkd(s.numpy(), t.numpy(), y.numpy(), epoch=20), rel=1e-9
    )


# ---- LFME ------------------------------------------------------------------------------------


def ref_lfme(logits, labels, experts, shot_list, distill_acc, current_acc, instance_weight, epoch, num_epochs,
             T=2.0, decay_thresh=0.3):
    """xiangly55/LFME, run_network_LFME.py (batch_loss, get_distill_loss_weight,
    instance_weight_scheduler 'Linear') and loss/DistillationLoss.py (F.kl_div with its default
    element-wise mean, times scale = len(shot_list[phase]))."""
    E = num_epochs / 2
    w = (1 - instance_weight) / E * epoch + instance_weight
    logits = logits * w[:, None]
    loss = np_ce(logits, labels) * 1.0
    tot = 0.0
    for phase, cols in shot_list.items():
        sub = logits[:, cols]
        q_log = np_log_softmax(sub / T)
        p_log = np_log_softmax(experts[phase] / T)
        kl_mean = (np.exp(p_log) * (p_log - q_log)).sum() / p_log.size  # elementwise mean
        d = kl_mean * len(cols)
        if current_acc[phase] < distill_acc[phase] * decay_thresh:
            weight = 1.0
        else:
            weight = max((distill_acc[phase] - current_acc[phase]) / distill_acc[phase] / (1 - decay_thresh), 0.0)
        tot += d * weight
    return loss + tot * 1.0


def lfme_info(classes, accuracy, weights):
    return {"lfme": {"classes": classes, "accuracy": accuracy, "instance_weights": weights}}


@pytest.mark.parametrize("student_acc", [(0.0, 0.0, 0.0), (70.0, 30.0, 2.0), (95.0, 55.0, 5.0)])
@pytest.mark.parametrize("epoch0", [0, 3, 7])
def test_lfme_loss_and_weighting_equal_the_reference(student_acc, epoch0):
    g = torch.Generator().manual_seed(5)
    C, B = 7, 10
    classes = {"many": [0, 1], "medium": [2, 3, 4], "few": [5, 6]}
    s = torch.randn(B, C, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, C, (B,), generator=g)
    full = {f"expert_{k}": torch.randn(B, C, generator=g, dtype=torch.float64) * 3 for k in classes}
    iw = torch.rand(20, generator=g, dtype=torch.float64)
    idx = torch.randperm(20, generator=g)[:B]
    expert_acc = {"many": 90.0, "medium": 60.0, "few": 10.0}
    ctx = MethodContext(num_classes=C, teacher_names=list(full), total_epochs=8, extra=lfme_info(classes, expert_acc, iw))
    method = build_method("lfme", ctx).double()
    method.on_validation_metrics({"many_shot": student_acc[0], "medium_shot": student_acc[1], "few_shot": student_acc[2]})
    out = method(make_step(s, full, y, epoch=epoch0, indices=idx))
    expected = ref_lfme(
        s.numpy(), y.numpy(), {k: full[f"expert_{k}"].numpy()[:, v] for k, v in classes.items()}, classes,
        expert_acc, dict(zip(["many", "medium", "few"], student_acc)), iw.numpy()[idx.numpy()],
        epoch=epoch0 + 1, num_epochs=8,
    )
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)


def ref_scale(instance_weights, labels, shot_list, low_mean, medium_mean, many_mean, thresh=1.0):
    """xiangly55/LFME, data/dataloader_LFME.py: set_scale_classwise_instance_weight_with_shot."""
    out = np.zeros_like(instance_weights)
    for i in np.unique(labels):
        idx = np.where(labels == i)[0]
        scaled = instance_weights[idx]
        if i in shot_list["few"]:
            t = thresh
        elif i in shot_list["medium"]:
            t = thresh * low_mean / medium_mean
        else:
            t = thresh * low_mean / many_mean
        out[idx] = (scaled - scaled.min()) / (scaled.max() - scaled.min()) * (1 - t) + t
    return out


def test_lfme_curriculum_scaling_equals_the_reference():
    g = torch.Generator().manual_seed(1)
    counts = [150, 120, 60, 30, 10, 5]
    subset = ["many", "many", "medium", "medium", "few", "few"]
    labels = torch.tensor([c for c in range(6) for _ in range(4)])
    hardness = torch.rand(len(labels), generator=g, dtype=torch.float64)
    ours = scale_instance_weights(hardness, labels, subset, counts)
    shots = {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}
    ref = ref_scale(hardness.numpy(), labels.numpy(), shots, low_mean=7.5, medium_mean=45.0, many_mean=135.0)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-6)


# ---- FFKD (reconstructed: no reference code exists) -------------------------------------------


def ref_ffkd(s, t, y, tau=4.0, ce=1.0, kd=1.0, fb=1.0, tce=1.0):
    """The formulation documented in relaxkd/methods/ffkd.py and docs/reproduction.md."""
    ps, pt = np_log_softmax(s / tau), np_log_softmax(t / tau)
    forward = np_kl_rows(pt, ps).mean() * tau**2
    u = np.exp(-np_kl_rows(pt, ps))
    feedback = (u * np_kl_rows(ps, pt)).mean() * tau**2
    return ce * np_ce(s, y) + kd * forward + tce * np_ce(t, y) + fb * feedback


def test_ffkd_forward_and_feedback_terms_equal_the_documented_formulation(batch):
    s, t, y = batch
    teacher = torch.nn.Linear(3, 6)
    ctx = MethodContext(num_classes=6, teacher_names=["strong"], teacher_modules={"strong": teacher})
    method = build_method("ffkd", ctx)
    out = method(make_step(s, {"strong": t}, y))
    assert out["loss"].item() == pytest.approx(ref_ffkd(s.numpy(), t.numpy(), y.numpy()), rel=1e-9)
    # gradients: the feedback term reaches the teacher, not the student (and vice versa)
    s_, t_ = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    method(make_step(s_, {"strong": t_}, y))["loss"].backward()
    ps, pt = F.log_softmax(s / 4, 1), F.log_softmax(t / 4, 1)
    u = torch.exp(-(pt.exp() * (pt - ps)).sum(1))
    t2 = t.clone().requires_grad_(True)
    (F.cross_entropy(t2, y) + 16 * (u * (ps.exp() * (ps - F.log_softmax(t2 / 4, 1))).sum(1)).mean()).backward()
    torch.testing.assert_close(t_.grad, t2.grad)
    off = build_method("ffkd", ctx, {"update_teacher": False})
    assert not off.param_groups() and set(off(make_step(s, {"strong": t}, y))) == {"loss", "ce", "kd"}
    assert method.param_groups()[0]["lr"] == 0.001 and not any(p.requires_grad for p in off.parameters())


# ---- the plug-in interface --------------------------------------------------------------------


def test_method_parameters_are_typed_and_unknown_keys_list_the_valid_ones():
    with pytest.raises(UserError, match=r"unknown key 'gamma' for KD method 'dkd'; valid keys: .*warmup_epochs"):
        load_config(REPO / "configs" / "demo.yaml", ["distill.loss=dkd", "distill.params={gamma: 1}"]).distill.method_params()
    with pytest.raises(UserError, match=r"distill.params.decay_thresh of KD method 'lfme'"):
        load_config(
            REPO / "configs" / "demo.yaml", ["distill.loss=lfme", "distill.params={decay_thresh: 2}"]
        ).distill.method_params()
    with pytest.raises(UserError, match=r"unknown KD method 'crd'; valid KD methods: .*dkd.*zscore"):
        load_config(REPO / "configs" / "demo.yaml", ["distill.loss=crd"]).distill.method_params()


def test_what_methods_declare():
    assert METHODS.get("kd").serves_cached_targets() and METHODS.get("lfme").serves_cached_targets()
    assert not METHODS.get("ffkd").serves_cached_targets()
    assert METHODS.get("lfme").long_tailed_only and not METHODS.get("none").needs_teachers


def test_the_architecture_docs_example_method_works(batch):
    """docs/architecture.md's "Adding a KD method" example, run as written."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    code = text.split("## Adding a KD method", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert len([line for line in code.splitlines() if line.strip() and not line.strip().startswith("#")]) <= 12
    if "softkd" not in METHODS:
        exec(compile(code, "architecture.md", "exec"), {})
    s, t, y = batch
    method = build_method("softkd", MethodContext(num_classes=6, teacher_names=["t"]), {"smooth": 0.2})
    out = method(make_step(s, {"t": t}, y))
    tau = 4.0
    kd = np_kl_rows(np_log_softmax(0.8 * t.numpy() / tau), np_log_softmax(s.numpy() / tau)).mean() * tau**2
    assert out["loss"].item() == pytest.approx(np_ce(s.numpy(), y.numpy()) + kd, rel=1e-9)


# ---- DMAE ------------------------------------------------------------------------------------


def ref_patchify(imgs, p):
    """UCSC-VLAA/DMAE, models_mae_distill.py: patchify (einsum 'nchpwq->nhwpqc')."""
    n, c, h, w = imgs.shape
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    return np.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)


def ref_forward_loss(imgs, pred, mask, p, norm_pix_loss=True):
    """models_mae_distill.py: forward_loss (per-patch normalised pixels, mean over removed patches)."""
    target = ref_patchify(imgs, p)
    if norm_pix_loss:
        mean = target.mean(-1, keepdims=True)
        var = target.var(-1, ddof=1, keepdims=True)  # torch.var: unbiased
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(-1)
    return (loss * mask).sum() / mask.sum()


def ref_distillation_embedding(teacher, student, weight, bias):
    """models_mae_distill.py: forward_distillation_loss_embedding with an fc-1layer projection head and
    embedding_distillation_func L1: L1Loss(normalize(teacher), normalize(projection(student)))."""
    projected = student @ weight.T + bias
    nt = teacher / np.maximum(np.linalg.norm(teacher, axis=-1, keepdims=True), 1e-12)
    ns = projected / np.maximum(np.linalg.norm(projected, axis=-1, keepdims=True), 1e-12)
    return np.abs(nt - ns).mean()


def test_dmae_losses_and_masking_equal_the_reference():
    from relaxkd.methods.dmae import alignment_loss, patchify, random_masking, reconstruction_loss

    g = torch.Generator().manual_seed(2)
    imgs = torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(patchify(imgs, 4).numpy(), ref_patchify(imgs.numpy(), 4))
    torch.manual_seed(0)
    ids_keep, mask, ids_restore = random_masking(3, 4, 0.75, "cpu")
    # the reference's bookkeeping: 1 kept patch of 4, mask 1 = removed, ids_restore inverts the shuffle
    assert ids_keep.shape == (3, 1) and mask.sum(1).tolist() == [3.0, 3.0, 3.0]
    assert all(mask[i, ids_keep[i, 0]] == 0 for i in range(3))
    pred = torch.randn(3, 4, 48, generator=g, dtype=torch.float64)
    ours = reconstruction_loss(imgs, pred, mask.double(), 4, True).item()
    assert ours == pytest.approx(ref_forward_loss(imgs.numpy(), pred.numpy(), mask.numpy(), 4), rel=1e-9)
    teacher = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    student = torch.randn(3, 2, 6, generator=g, dtype=torch.float64)
    head = torch.nn.Linear(6, 5).double()
    ours = alignment_loss(teacher, head(student), "L1").item()
    ref = ref_distillation_embedding(teacher.numpy(), student.numpy(), head.weight.detach().numpy(), head.bias.detach().numpy())
    assert ours == pytest.approx(ref, rel=1e-9)


def test_dmae_fine_tuning_is_label_smoothed_ce_without_teachers(batch):
    """main_finetune.py: LabelSmoothingCrossEntropy(smoothing=0.1) when mixup is off."""
    s, _, y = batch
    method = build_method("dmae", MethodContext(num_classes=6, teacher_names=["strong"]))
    out = method(make_step(s, {}, y))
    logp = np_log_softmax(s.numpy())
    ref = (0.9 * -logp[np.arange(len(y)), y.numpy()] + 0.1 * -logp.mean(-1)).mean()
    assert out["loss"].item() == pytest.approx(ref, rel=1e-9)
    assert method.teacher_outputs(s, {}) == {}
