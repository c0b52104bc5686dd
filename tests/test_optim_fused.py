"""The fused path (torch's fused Adam/AdamW kernels with the variant folded in) against the references.

Every reference of test_optim.py is rerun with ``fused=True`` in float64 (the CPU kernel supports it); the
settings no external reference covers are checked against our foreach path (``fused=False``), itself
checked against the references there.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from test_optim import (
    FairseqAdam,
    OfficialRAdam,
    _ScheduledAdamW,
    assert_trajectories_close,
    groups_for,
    make_problem,
    run,
)

from radam_repro.optim import Adam, Adam2k, GIAdam, RAdam, SimplifiedRAdam, lambda_lr
from radam_repro.optim.rectification import untuned_exponential_warmup

FUSED_KERNELS = ("aten::_fused_adam_", "aten::_fused_adamw_")

VARIANTS = {
    "adam": lambda groups, **kw: Adam(groups, **kw),
    "adam_eps": lambda groups, **kw: Adam(groups, eps=1e-4, **kw),
    "adam_2k": lambda groups, **kw: Adam2k(groups, freeze_steps=20, **kw),
    "radam_sgd": lambda groups, **kw: RAdam(groups, threshold=5, degenerated_to_sgd=True, **kw),
    "radam_skip": lambda groups, **kw: RAdam(groups, threshold=4, degenerated_to_sgd=False, **kw),
    "radam_simple": lambda groups, **kw: SimplifiedRAdam(groups, **kw),
    "adam_gi": lambda groups, **kw: GIAdam(groups, **kw),
}


def fused_calls(opt, steps=1):
    """Names of torch's fused Adam kernels that ``steps`` calls of ``opt.step()`` ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            opt.step()
    return {e.key for e in prof.key_averages()} & set(FUSED_KERNELS)


@pytest.mark.parametrize("decoupled", [True, False])
@pytest.mark.parametrize("eps_placement", ["sqrt_v", "sqrt_vhat"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_matches_foreach_for_every_variant_eps_placement_and_decay_mode(variant, eps_placement, decoupled):
    """Per-group lr/betas/wd, through every phase change (fallback -> rectified, freeze -> Adam)."""
    make = VARIANTS[variant]
    kw = {"eps_placement": eps_placement, "decoupled_weight_decay": decoupled}
    fused = run(lambda ps: make(groups_for(ps), fused=True, **kw), steps=40)
    foreach = run(lambda ps: make(groups_for(ps), fused=False, **kw), steps=40)
    assert_trajectories_close(fused, foreach, rtol=1e-10)


def test_fused_adam_matches_torch_adam_adamw_and_fairseq():
    ours_l2 = run(lambda ps: Adam(groups_for(ps), eps_placement="sqrt_vhat", decoupled_weight_decay=False, fused=True))
    assert_trajectories_close(ours_l2, run(lambda ps: torch.optim.Adam(groups_for(ps), foreach=True)))
    assert_trajectories_close(ours_l2, run(lambda ps: torch.optim.Adam(groups_for(ps), fused=True)), rtol=1e-12)
    ours_w = run(lambda ps: Adam(groups_for(ps), eps_placement="sqrt_vhat", eps=1e-4, fused=True))
    assert_trajectories_close(ours_w, run(lambda ps: torch.optim.AdamW(groups_for(ps), eps=1e-4, fused=True)), 1e-12)
    for eps in (1e-8, 1e-4):  # Adam-eps: eps on the raw sqrt(v), mapped onto the kernel's eps on sqrt(v_hat)
        ours = run(lambda ps, eps=eps: Adam(groups_for(ps), eps=eps, fused=True), steps=100)
        assert_trajectories_close(ours, run(lambda ps, eps=eps: FairseqAdam(groups_for(ps), eps=eps), steps=100))


def test_fused_adam2k_matches_fairseq_freeze_then_adam():
    ours = run(lambda ps: Adam2k(groups_for(ps), freeze_steps=40, fused=True), steps=120)
    assert_trajectories_close(ours, run(lambda ps: FairseqAdam(groups_for(ps), freeze=40), steps=120))


@pytest.mark.parametrize("decoupled", [True, False])
def test_fused_radam_matches_torch_radam(decoupled):
    ours = run(lambda ps: RAdam(groups_for(ps), decoupled_weight_decay=decoupled, fused=True), steps=120)
    ref = run(lambda ps: torch.optim.RAdam(groups_for(ps), decoupled_weight_decay=decoupled, foreach=False), steps=120)
    assert_trajectories_close(ours, ref)


@pytest.mark.parametrize("degenerated_to_sgd,threshold", [(True, 5), (False, 4)])
def test_fused_radam_matches_official_radam(degenerated_to_sgd, threshold):
    ours = run(
        lambda ps: RAdam(groups_for(ps), threshold=threshold, degenerated_to_sgd=degenerated_to_sgd, fused=True),
        steps=120,
    )
    ref = run(
        lambda ps: OfficialRAdam(groups_for(ps), degenerated_to_sgd=degenerated_to_sgd, threshold=threshold), steps=120
    )
    assert_trajectories_close(ours, ref)


def test_fused_simplified_radam_and_untuned_warmup_match_scheduled_adamw():
    no_wd = {"wds": (0.0, 0.0, 0.0)}
    ours = run(lambda ps: SimplifiedRAdam(groups_for(ps, **no_wd), eps_placement="sqrt_vhat", fused=True), steps=120)
    ref = run(lambda ps: _ScheduledAdamW(torch.optim.AdamW(groups_for(ps, **no_wd))), steps=120)
    assert_trajectories_close(ours, ref)

    # Ma & Yarats' untuned warmup is an lr schedule: it scales the decay as well, as for torch's AdamW
    def warmed(opt):
        return _WithScheduler(opt, lambda k: untuned_exponential_warmup(0.999, k + 1))

    ours = run(lambda ps: warmed(Adam(groups_for(ps), eps_placement="sqrt_vhat", fused=True)), steps=120)
    ref = run(lambda ps: warmed(torch.optim.AdamW(groups_for(ps))), steps=120)
    assert_trajectories_close(ours, ref)


class _WithScheduler:
    """An optimizer whose step also steps a LambdaLR, as the harness does."""

    def __init__(self, opt, multiplier):
        self.opt, self.scheduler = opt, lambda_lr(opt, multiplier)

    def zero_grad(self):
        self.opt.zero_grad()

    def step(self):
        self.opt.step()
        self.scheduler.step()


def test_float32_fused_matches_torch_radam_to_rounding():
    ours = run(lambda ps: RAdam(groups_for(ps), fused=True), dtype=torch.float32, steps=100)
    ref = run(lambda ps: torch.optim.RAdam(groups_for(ps), decoupled_weight_decay=True), dtype=torch.float32, steps=100)
    assert_trajectories_close(ours, ref, rtol=1e-4)


@pytest.mark.parametrize(
    "make,split",
    [
        (lambda ps: RAdam(groups_for(ps)), 3),  # saved in the SGD phase, resumed into the rectified one
        (lambda ps: Adam2k(groups_for(ps), freeze_steps=20, eps_placement="sqrt_vhat"), 12),  # saved while frozen
        (lambda ps: SimplifiedRAdam(groups_for(ps), decoupled_weight_decay=False), 30),
        (lambda ps: GIAdam(groups_for(ps)), 1),  # saved after v_0 = g_1^2 was set: resumed without re-initialising
    ],
)
def test_state_dict_round_trip_mid_run_is_bit_identical(make, split):
    whole = run(make, steps=60)
    params, loss_fn = make_problem(0)
    params = [p.clone().requires_grad_() for p in params]
    opt = make(params)
    trajectory = []
    for i in range(60):
        if i == split:
            buffer = io.BytesIO()
            torch.save(opt.state_dict(), buffer)
            opt = make(params)
            opt.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
        if i == split + 10:
            opt = copy.deepcopy(opt)  # pickling keeps torch's state only: the host step counts are rebuilt
            params = opt.param_groups[0]["params"] + opt.param_groups[1]["params"] + opt.param_groups[2]["params"]
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()
        trajectory.append(torch.cat([p.detach().flatten().clone() for p in params]))
    assert torch.equal(torch.stack(trajectory), whole)


def test_torch_fused_adam_state_cross_loads_both_ways():
    def continued(first, second):
        params, loss_fn = make_problem(5)
        params = [p.clone().requires_grad_() for p in params]
        opt = first(params)
        for i in range(40):
            if i == 20:
                state = opt.state_dict()
                opt = second(params)
                opt.load_state_dict(state)
            opt.zero_grad()
            loss_fn(params).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in params])

    def torch_adam(ps):
        return torch.optim.Adam(groups_for(ps), fused=True)

    def ours(ps):
        return Adam(groups_for(ps), eps_placement="sqrt_vhat", decoupled_weight_decay=False)

    reference = continued(torch_adam, torch_adam)
    torch.testing.assert_close(continued(torch_adam, ours), reference, rtol=1e-12, atol=0)
    torch.testing.assert_close(continued(ours, torch_adam), reference, rtol=1e-12, atol=0)


def test_fused_kernel_runs_in_the_common_phase_only():
    p = torch.nn.Parameter(torch.randn(4, 3))
    p.grad = torch.randn(4, 3)
    radam = RAdam([p], weight_decay=0.01)
    assert fused_calls(radam, steps=5) == set()  # rho_t <= 5: SGD fallback on foreach kernels
    assert fused_calls(radam) == {"aten::_fused_adamw_"}
    adam2k = Adam2k([p], freeze_steps=3, decoupled_weight_decay=False, weight_decay=0.1)
    assert fused_calls(adam2k, steps=3) == set()
    assert fused_calls(adam2k) == {"aten::_fused_adam_"}
    assert fused_calls(RAdam([p], fused=False), steps=8) == set()


def test_mismatched_gradient_layout_falls_back_to_foreach():
    """The fused kernels walk raw memory; a transposed parameter with a contiguous gradient must not use them."""
    base = torch.randn(3, 4, dtype=torch.float64)
    grad = torch.randn(4, 3, dtype=torch.float64)
    results = []
    for fused in (None, False):
        p = torch.nn.Parameter(base.clone().t())
        p.grad = grad.clone()
        opt = Adam([p], lr=0.1, fused=fused)
        if fused is None:
            assert fused_calls(opt) == set()
        else:
            opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-14, atol=0)


def test_fused_true_on_an_unsupported_device_raises_naming_the_fix():
    with pytest.raises(ValueError, match="fused=True.*meta.*fused=None"):
        Adam([torch.nn.Parameter(torch.zeros(2, device="meta"))], fused=True)
    with pytest.raises(ValueError, match="invalid fused='yes'"):
        Adam([torch.nn.Parameter(torch.zeros(2))], fused="yes")


@pytest.mark.parametrize("unscale_first", [False, True])
@pytest.mark.parametrize("make", [lambda ps: RAdam(groups_for(ps)), lambda ps: Adam2k(groups_for(ps), freeze_steps=6)])
def test_grad_scaler_passes_scale_and_found_inf_and_skipped_steps_do_not_count(make, unscale_first):
    """fp16-style loss scaling: the kernels unscale (or train.py's unscale_ did), a step with inf is skipped.

    The reference never sees the skipped steps; RAdam's phase and Adam-2k's freeze depend on the step
    count, so a skipped step that was counted would show. Scaling by powers of 2 is exact, hence equality.
    """
    inf_steps = {2, 9}  # one in the foreach phase (RAdam's SGD step, Adam-2k's freeze), one in the fused phase
    params, loss_fn = make_problem(7, torch.float32)
    ours = [p.clone().requires_grad_() for p in params]
    opt = make(ours)
    assert opt._step_supports_amp_scaling
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    ref_params = [p.clone().requires_grad_() for p in params]
    ref_opt = make(ref_params)
    _, ref_loss_fn = make_problem(7, torch.float32)
    for i in range(16):
        opt.zero_grad()
        scaler.scale(loss_fn(ours)).backward()
        if i in inf_steps:
            ours[1].grad[0] = float("inf")
        if unscale_first:
            scaler.unscale_(opt)
        before = [p.detach().clone() for p in ours]
        scaler.step(opt)
        scaler.update()
        ref_opt.zero_grad()
        ref_loss_fn(ref_params).backward()  # same noise draws as ours
        if i in inf_steps:
            assert all(torch.equal(a, b) for a, b in zip(before, ours)), f"step {i} with inf was not skipped"
            continue
        ref_opt.step()
        for a, b in zip(ours, ref_params):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    assert scaler.get_scale() == 2.0**12 / 4  # halved at each skipped step
    steps = {int(s["step"]) for s in opt.state.values()}
    assert steps == {16 - len(inf_steps)}
    assert steps == {int(s["step"]) for s in ref_opt.state.values()}
