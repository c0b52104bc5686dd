"""Warmups and decays against fairseq's formulas, pytorch_warmup and the paper's recipes."""

from __future__ import annotations

import math

import pytest
import torch

from radam_repro.optim import RAdam
from radam_repro.optim.schedules import Decay, Schedule, build_schedule, lambda_lr

pytorch_warmup = pytest.importorskip("pytorch_warmup", reason="pytorch_warmup is a test-only dependency")


def dampened_lrs(warmup_cls, beta2: float, steps: int) -> list[float]:
    """lr used by each update under pytorch_warmup (constant base lr 1)."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0, betas=(0.9, beta2))
    warmup = warmup_cls(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        with warmup.dampening():
            pass
    return lrs


@pytest.mark.parametrize("beta2", [0.999, 0.99, 0.98])
def test_untuned_warmups_match_pytorch_warmup(beta2):
    steps = 2500
    ours_lin = Schedule(warmup="untuned_linear", beta2=beta2)
    ours_exp = Schedule(warmup="untuned_exponential", beta2=beta2)
    ref_lin = dampened_lrs(pytorch_warmup.UntunedLinearWarmup, beta2, steps)
    ref_exp = dampened_lrs(pytorch_warmup.UntunedExponentialWarmup, beta2, steps)
    # pytorch_warmup computes tau = int(2 / (1 - beta2)), which float rounding makes 1999 at beta2 = 0.999;
    # we use the exact 2 / (1 - beta2): the same rule up to that one-step rounding.
    tau_lin, tau_exp = int(2.0 / (1.0 - beta2)), int(1.0 / (1.0 - beta2))
    generic_exp = Schedule(warmup="exponential", warmup_steps=tau_exp)
    for k in range(steps):
        assert ours_lin(k) == pytest.approx(min(1.0, (k + 1) * (1 - beta2) / 2), rel=1e-12)
        assert ref_lin[k] == pytest.approx(min(1.0, (k + 1) / tau_lin), rel=1e-12)
        assert abs(ours_lin(k) - ref_lin[k]) <= 1.0 / tau_lin * 1.01
        assert ours_exp(k) == pytest.approx(1 - math.exp(-(1 - beta2) * (k + 1)), rel=1e-12)
        assert generic_exp(k) == pytest.approx(ref_exp[k], rel=1e-12)  # same rule at pytorch_warmup's rounded tau
        assert abs(ours_exp(k) - ref_exp[k]) <= 1.0 / tau_exp
    if beta2 == 0.999:
        assert tau_lin == 1999 and ours_lin(1998) < 1.0 == ref_lin[1998]


def test_fairseq_linear_warmup_then_linear_decay_nmt_recipe():
    """Adam-warmup NMT: 4000 warmup updates from 1e-8, then linear decay to 1e-9 at 70k (lr 3e-4)."""
    lr, init, min_lr = 3e-4, 1e-8, 1e-9
    sched = Schedule(
        warmup="linear",
        warmup_steps=4000,
        warmup_init_ratio=init / lr,
        decay=Decay(kind="linear", min_lr_ratio=min_lr / lr),
        total_steps=70000,
    )
    fairseq = lambda k: init + k * (lr - init) / 4000 if k < 4000 else (lr - min_lr) * (1 - (k - 4000) / 66000) + min_lr  # noqa: E731
    for k in [0, 1, 2000, 3999, 4000, 4001, 30000, 69999, 70000]:
        assert lr * sched(k) == pytest.approx(fairseq(k), rel=1e-9, abs=1e-15)


def test_adam_2k_recipe_lr_at_unfreeze_is_3e_4():
    sched = Schedule(decay=Decay(kind="linear", min_lr_ratio=1e-9 / 3.086e-4), total_steps=72000)
    assert 3.086e-4 * sched(2000) == pytest.approx(3.000e-4, rel=1e-3)


def test_step_decay_cifar_recipe_and_inverse_sqrt():
    spe = 391
    sched = Schedule(decay=Decay(kind="step", milestones=[81 * spe, 122 * spe], gamma=0.1), total_steps=164 * spe)
    assert (
        sched(81 * spe - 1) == 1.0 and sched(81 * spe) == pytest.approx(0.1) and sched(122 * spe) == pytest.approx(0.01)
    )
    inv = Schedule(warmup="linear", warmup_steps=100, decay=Decay(kind="inverse_sqrt"))
    assert inv(50) == pytest.approx(0.5) and inv(400) == pytest.approx(0.5) and inv(100) == pytest.approx(1.0)


def test_warmup_composes_with_step_decay_through_lambda_lr():
    opt = RAdam([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg = {"lr": 0.1, "betas": [0.9, 0.999], "warmup": {"kind": "linear", "steps": 10, "init_lr": 0.0}}
    sched = lambda_lr(opt, build_schedule(cfg, Decay(kind="step", milestones=[5], gamma=0.1), total_steps=20))
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1 * min(1, k / 10) * (0.1 if k >= 5 else 1.0) for k in range(12)]
    assert lrs == pytest.approx(expected)


def test_invalid_schedules_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown warmup kind 'cosine'"):
        Schedule(warmup="cosine")
    with pytest.raises(ValueError, match="optimizer.warmup.steps > 0"):
        Schedule(warmup="linear", warmup_steps=0)
    with pytest.raises(ValueError, match="unknown decay kind"):
        Schedule(decay=Decay(kind="cosine"))
