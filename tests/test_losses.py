"""Loss functions against literal golden values and an independent numpy route."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from relaxkd.config import DISTILL_PRESETS, MULTIMODAL_PRESETS
from relaxkd.errors import UserError
from relaxkd.losses import (
    AGGREGATORS,
    adaptive_teacher_weights,
    aggregate_teacher_logits,
    cosine_regularization,
    dkd_loss,
    hierarchical_loss,
    kd_loss,
    multimodal_teacher_loss,
    standardize_logits,
)
from relaxkd.methods import METHODS, MethodContext, Outputs, Step, build_method, method_params


def distillation_loss(student, teachers, targets, *, method="kd", aggregate="mean_logits", teacher_weights=None,
                      multimodal_index=None, params=None, **shared):
    """CE + KD through the method layer, as the student's training step computes it."""
    names = [f"t{i}" for i in range(len(teachers))]
    context = MethodContext(
        num_classes=student.shape[1], teacher_names=names, multimodal_index=multimodal_index, aggregate=aggregate
    )
    m = build_method(method, context, method_params(method, params, shared))
    step = Step(epoch=0, step=0, images=student, targets=targets, indices=torch.arange(len(targets)),
                student=Outputs(student), teachers={n: Outputs(t) for n, t in zip(names, teachers)},
                teacher_weights=teacher_weights)
    return m(step)


# ---- independent numpy reference ---------------------------------------------------------


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * np.log(p / q)).sum(-1)


def np_standardize(z: np.ndarray) -> np.ndarray:
    return (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)


def np_kd(s: np.ndarray, t: np.ndarray, tau: float) -> float:
    return float(tau**2 * np_kl(np_softmax(t / tau), np_softmax(s / tau)).mean())


def np_dkd(s: np.ndarray, t: np.ndarray, y: np.ndarray, alpha: float, beta: float, tau: float) -> float:
    rows = np.arange(len(y))
    ps, pt = np_softmax(s / tau), np_softmax(t / tau)
    bs = np.stack([ps[rows, y], 1 - ps[rows, y]], 1)
    bt = np.stack([pt[rows, y], 1 - pt[rows, y]], 1)
    tckd = np_kl(bt, bs).mean() * tau**2
    nckd = 0.0
    for i, c in enumerate(y):
        keep = np.arange(s.shape[1]) != c
        nckd += np_kl(np_softmax(t[i, keep] / tau), np_softmax(s[i, keep] / tau))
    return float(alpha * tckd + beta * nckd / len(y) * tau**2)


def np_ce(s: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np_softmax(s)[np.arange(len(y)), y]).mean())


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    teachers = [torch.randn(6, 5, generator=g, dtype=torch.float64) * 3 for _ in range(3)]
    targets = torch.randint(0, 5, (6,), generator=g)
    return student, teachers, targets


S2 = torch.tensor([[1.0, 2.0, 4.0], [0.0, -1.0, 3.0]], dtype=torch.float64)
T2 = torch.tensor([[2.0, 0.0, 1.0], [5.0, 1.0, 1.0]], dtype=torch.float64)
Y2 = torch.tensor([2, 0])

# ---- KD / z-score KD ----------------------------------------------------------------------


def test_kd_loss_literal_golden():
    value = kd_loss(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]]), 2.0)
    assert value.item() == pytest.approx(1.2806266713192258, rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 3.0, 4.0])
def test_kd_loss_matches_numpy(batch, tau):
    student, teachers, _ = batch
    expected = np_kd(student.numpy(), teachers[0].numpy(), tau)
    assert kd_loss(student, teachers[0], tau).item() == pytest.approx(expected, rel=1e-10)


def test_kd_loss_zero_for_identical_logits(batch):
    student, _, _ = batch
    assert kd_loss(student, student.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-12)


def test_standardize_logits_zero_mean_unit_unbiased_std(batch):
    z = standardize_logits(batch[0])
    torch.testing.assert_close(z.mean(1), torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.std(1, correction=1), torch.ones(6, dtype=torch.float64), atol=1e-6, rtol=0)


def test_zscore_kd_literal_golden_and_numpy():
    value = kd_loss(S2, T2, 2.0, standardize=True).item()
    assert value == pytest.approx(0.9361855261940841, rel=1e-9)
    expected = np_kd(np_standardize(S2.numpy()), np_standardize(T2.numpy()), 2.0)
    assert value == pytest.approx(expected, rel=1e-10)


def test_zscore_kd_ignores_logit_shift_and_scale():
    base = kd_loss(S2, T2, 2.0, standardize=True)
    moved = kd_loss(3 * S2 + 7, 0.5 * T2 - 2, 2.0, standardize=True)
    assert moved.item() == pytest.approx(base.item(), rel=1e-6)


# ---- DKD -----------------------------------------------------------------------------------


def test_dkd_literal_golden():
    assert dkd_loss(S2, T2, Y2).item() == pytest.approx(14.298243960375663, rel=1e-8)


def test_dkd_matches_numpy_and_decomposes(batch):
    student, teachers, targets = batch
    s, t, y = student.numpy(), teachers[1].numpy(), targets.numpy()
    for alpha, beta, tau in [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)]:
        value = dkd_loss(student, teachers[1], targets, alpha=alpha, beta=beta, temperature=tau).item()
        assert value == pytest.approx(np_dkd(s, t, y, alpha, beta, tau), rel=1e-8)
    tckd = dkd_loss(S2, T2, Y2, alpha=1.0, beta=0.0).item()
    nckd = dkd_loss(S2, T2, Y2, alpha=0.0, beta=1.0).item()
    assert tckd == pytest.approx(2.2136717326377124, rel=1e-8)
    assert nckd == pytest.approx(1.5105715284672439, rel=1e-8)


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_nonpositive_temperature_is_user_error(batch, tau):
    student, teachers, targets = batch
    with pytest.raises(UserError, match="temperature"):
        kd_loss(student, teachers[0], tau)
    with pytest.raises(UserError, match="temperature"):
        dkd_loss(student, teachers[0], targets, temperature=tau)
    with pytest.raises(UserError, match="temperature"):
        distillation_loss(student, teachers, targets, temperature=tau)


# ---- aggregation and distillation_loss -----------------------------------------------------


def test_aggregate_eq1_by_hand():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[3.0, 2.0]])
    tx = torch.tensor([[10.0, -4.0]])
    # ((a + b) / 2 + tx) / 2 = ([2, 1] + [10, -4]) / 2
    torch.testing.assert_close(aggregate_teacher_logits([a, tx, b], multimodal_index=1), torch.tensor([[6.0, -1.5]]))
    torch.testing.assert_close(aggregate_teacher_logits([a, b, tx], None), torch.tensor([[14 / 3, -2 / 3]]))
    torch.testing.assert_close(aggregate_teacher_logits([tx], 0), tx)
    with pytest.raises(UserError, match="multimodal_index"):
        aggregate_teacher_logits([a, b], 2)


def test_distillation_mean_logits_is_ce_plus_kd_of_eq1(batch):
    student, teachers, targets = batch
    out = distillation_loss(
        student, teachers, targets, temperature=3.0, ce_weight=0.7, kd_weight=0.3, multimodal_index=2
    )
    s, t = student.numpy(), [z.numpy() for z in teachers]
    z_bar = ((t[0] + t[1]) / 2 + t[2]) / 2
    ce, kd = np_ce(s, targets.numpy()), np_kd(s, z_bar, 3.0)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-10)
    assert out["kd"].item() == pytest.approx(kd, rel=1e-10)
    assert out["loss"].item() == pytest.approx(0.7 * ce + 0.3 * kd, rel=1e-10)


def test_distillation_mean_losses_and_adaptive(batch):
    student, teachers, targets = batch
    s = student.numpy()
    per_teacher = [np_kd(s, z.numpy(), 4.0) for z in teachers]
    mean = distillation_loss(student, teachers, targets, aggregate="mean_losses", temperature=4.0)
    assert mean["kd"].item() == pytest.approx(sum(per_teacher) / 3, rel=1e-10)
    weights = [0.5, 0.3, 0.2]
    adaptive = distillation_loss(student, teachers, targets, aggregate="adaptive", teacher_weights=weights, temperature=4.0)
    assert adaptive["kd"].item() == pytest.approx(sum(w * loss for w, loss in zip(weights, per_teacher)), rel=1e-10)
    # the training step passes the weights as a tensor (no host synchronisation)
    on_device = distillation_loss(
        student, teachers, targets, aggregate="adaptive", teacher_weights=torch.tensor(weights), temperature=4.0
    )
    assert on_device["kd"].item() == pytest.approx(adaptive["kd"].item(), rel=1e-6)


def test_adaptive_needs_valid_weights(batch):
    student, teachers, targets = batch
    with pytest.raises(UserError, match="teacher_weights"):
        distillation_loss(student, teachers, targets, aggregate="adaptive")
    with pytest.raises(UserError, match="sum to 1"):
        distillation_loss(student, teachers, targets, aggregate="adaptive", teacher_weights=[0.5, 0.5, 0.5])
    with pytest.raises(UserError, match="3 teachers"):
        distillation_loss(student, teachers, targets, aggregate="adaptive", teacher_weights=[0.5, 0.5])


def test_adaptive_teacher_weights_inverse_loss():
    assert adaptive_teacher_weights([1.0, 2.0, 4.0]) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert sum(adaptive_teacher_weights([0.3, 0.7])) == pytest.approx(1.0)
    with pytest.raises(UserError):
        adaptive_teacher_weights([])
    with pytest.raises(UserError):
        adaptive_teacher_weights([1.0, math.nan])


def test_methods_through_distillation_loss(batch):
    student, teachers, targets = batch
    z_bar = aggregate_teacher_logits(teachers, None)
    zscore = distillation_loss(student, teachers, targets, method="zscore", temperature=2.0)
    assert zscore["kd"].item() == pytest.approx(kd_loss(student, z_bar, 2.0, standardize=True).item())
    dkd = distillation_loss(student, teachers, targets, method="dkd", params={"alpha": 0.5, "beta": 4.0})
    assert dkd["kd"].item() == pytest.approx(dkd_loss(student, z_bar, targets, 0.5, 4.0, 4.0).item())
    none = distillation_loss(student, [], targets, method="none", ce_weight=0.6)
    assert none["kd"].item() == 0.0
    assert none["loss"].item() == pytest.approx(0.6 * F.cross_entropy(student, targets).item())


def test_unknown_names_are_user_errors_listing_valid_ones(batch):
    student, teachers, targets = batch
    with pytest.raises(UserError, match="mean_logits") as info:
        distillation_loss(student, teachers, targets, aggregate="median")
    assert "'median'" in str(info.value) and "adaptive" in str(info.value)
    with pytest.raises(UserError, match="dkd"):
        distillation_loss(student, teachers, targets, method="crd")
    assert AGGREGATORS.names() == ["adaptive", "mean_logits", "mean_losses"]
    assert {"dkd", "kd", "none", "zscore", "lfme", "ffkd"} <= set(METHODS.names())


def test_kd_needs_a_teacher(batch):
    student, _, targets = batch
    with pytest.raises(UserError, match="teacher"):
        distillation_loss(student, [], targets)


def test_presets_are_defined_once_with_their_sources_and_gradient_reaches_student_only(batch):
    # the paper gives no τ or λ: KD's recipe is the authors' scripts' τ 3, CE 0.6 / KD 0.4
    authors = DISTILL_PRESETS["authors_code"]
    assert (authors["ce_weight"], authors["kd_weight"], authors["temperature"], authors["aggregate"]) == (
        0.6,
        0.4,
        3.0,
        "mean_losses",
    )
    assert set(DISTILL_PRESETS) == {"authors_code"}  # no "paper" preset: the paper states no values
    assert METHODS.get("kd").Params().model_dump() == {"temperature": 3.0, "ce_weight": 0.6, "kd_weight": 0.4}
    assert MULTIMODAL_PRESETS == {
        "paper": {"lambda_hier": 0.1, "lambda_cos": 0.01},
        "authors_code": {"lambda_hier": 0.2, "lambda_cos": 0.005},
    }
    student, teachers, targets = batch
    student = student.clone().requires_grad_(True)
    kwargs = {k: v for k, v in authors.items() if k != "aggregate"}
    out = distillation_loss(student, teachers, targets, aggregate=authors["aggregate"], **kwargs)
    out["loss"].backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


# ---- multimodal teacher losses ---------------------------------------------------------------


def test_hierarchical_loss_golden_values():
    e = torch.eye(3)
    assert hierarchical_loss(e[:2], e[1:3]).item() == pytest.approx(1.0)  # orthogonal
    assert hierarchical_loss(e, 5 * e).item() == pytest.approx(0.0, abs=1e-7)  # identical directions
    assert hierarchical_loss(e[:1], -e[:1]).item() == pytest.approx(2.0)  # opposite
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert hierarchical_loss(a, b).item() == pytest.approx((1 - 1 / math.sqrt(2)) / 2)
    assert hierarchical_loss(torch.zeros(0, 4), torch.zeros(0, 4)).item() == 0.0


def test_cosine_regularization_golden_values():
    bank = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    pretrained = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    assert cosine_regularization(bank, pretrained).item() == pytest.approx(0.5)
    assert cosine_regularization(bank, bank.clone()).item() == pytest.approx(0.0, abs=1e-7)


def test_multimodal_teacher_loss_eq6():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    targets = torch.tensor([0, 2])
    e = torch.eye(3)
    bank = torch.tensor([[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]])
    pretrained = torch.tensor([[0.6, 0.8, 0.0], [0.0, 1.0, 0.0]])
    out = multimodal_teacher_loss(logits, targets, e[:1], e[1:2], bank, pretrained, lambda_hier=0.2, lambda_cos=0.1)
    ce = np_ce(logits.numpy().astype(np.float64), targets.numpy())
    assert out["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert out["hier"].item() == pytest.approx(1.0)
    assert out["cos"].item() == pytest.approx(0.5)
    assert out["loss"].item() == pytest.approx(ce + 0.2 * 1.0 + 0.1 * 0.5, rel=1e-6)
    # No wn samples and no bank: only the cross-entropy remains.
    plain = multimodal_teacher_loss(
        logits, targets, torch.zeros(0, 3), torch.zeros(0, 3), None, None, lambda_hier=0.1, lambda_cos=0.01
    )
    assert plain["hier"].item() == 0.0 and plain["cos"].item() == 0.0
    assert plain["loss"].item() == pytest.approx(ce, rel=1e-6)
