"""The optimizer family against torch.optim, independent reference loops and the paper's table."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import PAPER_RT_TABLE

from radam_repro.optim import SGD, Adam, Adam2k, RAdam, SimplifiedRAdam, build, rectification, rho_t
from radam_repro.optim.rectification import hilton_multiplier

STEPS = 250


def make_problem(seed: int, dtype=torch.float64):
    """A random least-squares + quartic problem with three parameter tensors."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4)]
    params = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    targets = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    scales = [10.0 ** torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    noise_gen = torch.Generator().manual_seed(seed + 1)

    def loss_fn(ps):
        total = 0.0
        for p, t, s in zip(ps, targets, scales):
            noise = 0.1 * torch.randn(p.shape, generator=noise_gen, dtype=dtype)
            total = total + (s * (p - t + noise) ** 2).sum() + 0.01 * (p**4).sum()
        return total

    return params, loss_fn


def groups_for(
    params, lrs=(1e-2, 3e-3, 3e-2), betas=((0.9, 0.999), (0.8, 0.99), (0.95, 0.9995)), wds=(0.0, 1e-2, 1e-1)
):
    return [dict(params=[p], lr=lr, betas=b, weight_decay=wd) for p, lr, b, wd in zip(params, lrs, betas, wds)]


def run(make_opt, seed=0, steps=STEPS, dtype=torch.float64):
    """Run ``steps`` steps and return the trajectory of all parameters."""
    params, loss_fn = make_problem(seed, dtype)
    params = [p.clone().requires_grad_() for p in params]
    opt = make_opt(params)
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()
        trajectory.append(torch.cat([p.detach().flatten().clone() for p in params]))
    return torch.stack(trajectory)


def assert_trajectories_close(a, b, rtol=1e-6):
    # relative to each coordinate's magnitude over the run; a different algorithm misses this by far
    scale = b.abs().amax(dim=0, keepdim=True).clamp_min(1e-3)
    err = ((a - b).abs() / scale).max().item()
    assert err < rtol, f"max relative deviation {err:.3e} >= {rtol}"


@pytest.mark.parametrize("decoupled", [True, False])
def test_radam_matches_torch_radam(decoupled):
    ours = run(lambda ps: RAdam(groups_for(ps), threshold=5, degenerated_to_sgd=True, decoupled_weight_decay=decoupled))
    ref = run(lambda ps: torch.optim.RAdam(groups_for(ps), decoupled_weight_decay=decoupled, foreach=False))
    assert_trajectories_close(ours, ref)


def test_adam_sqrt_vhat_matches_torch_adam_and_adamw():
    ours_l2 = run(lambda ps: Adam(groups_for(ps), eps_placement="sqrt_vhat", decoupled_weight_decay=False))
    ref_l2 = run(lambda ps: torch.optim.Adam(groups_for(ps), foreach=True))
    assert_trajectories_close(ours_l2, ref_l2)
    ours_w = run(lambda ps: Adam(groups_for(ps), eps_placement="sqrt_vhat", eps=1e-4))
    ref_w = run(lambda ps: torch.optim.AdamW(groups_for(ps), eps=1e-4))
    assert_trajectories_close(ours_w, ref_w)


def test_float32_trajectory_matches_torch():
    ours = run(lambda ps: RAdam(groups_for(ps)), dtype=torch.float32, steps=100)
    ref = run(lambda ps: torch.optim.RAdam(groups_for(ps), decoupled_weight_decay=True), dtype=torch.float32, steps=100)
    assert_trajectories_close(ours, ref, rtol=1e-4)


class FairseqAdam(torch.optim.Optimizer):
    """Reference: fairseq's ``adam2`` (the paper's NMT Adam), written per tensor as the original."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, freeze=0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, freeze=freeze))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                beta1, beta2 = group["betas"]
                state["step"] += 1
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                if state["step"] <= group["freeze"]:
                    continue
                state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                denom = state["exp_avg_sq"].sqrt().add_(group["eps"])
                bc1, bc2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                step_size = group["lr"] * math.sqrt(bc2) / bc1
                if group["weight_decay"] != 0:
                    p.add_(p, alpha=-group["weight_decay"] * group["lr"])
                p.addcdiv_(state["exp_avg"], denom, value=-step_size)


class OfficialRAdam(torch.optim.Optimizer):
    """Reference: LiyuanLucasLiu/RAdam ``PlainRAdam`` semantics (N_sma >= threshold, skip or SGD)."""

    def __init__(
        self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, degenerated_to_sgd=False, threshold=5
    ):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.degenerated_to_sgd, self.threshold = degenerated_to_sgd, threshold

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                beta1, beta2 = group["betas"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                exp_avg.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["step"] += 1
                t = state["step"]
                beta2_t = beta2**t
                n_sma_max = 2 / (1 - beta2) - 1
                n_sma = n_sma_max - 2 * t * beta2_t / (1 - beta2_t)
                if n_sma > self.threshold:
                    if group["weight_decay"] != 0:
                        p.add_(p, alpha=-group["weight_decay"] * group["lr"])
                    step_size = (
                        group["lr"]
                        * math.sqrt(
                            (1 - beta2_t)
                            * (n_sma - 4)
                            / (n_sma_max - 4)
                            * (n_sma - 2)
                            / n_sma
                            * n_sma_max
                            / (n_sma_max - 2)
                        )
                        / (1 - beta1**t)
                    )
                    p.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size)
                elif self.degenerated_to_sgd:
                    if group["weight_decay"] != 0:
                        p.add_(p, alpha=-group["weight_decay"] * group["lr"])
                    p.add_(exp_avg, alpha=-group["lr"] / (1 - beta1**t))


def test_adam_sqrt_v_matches_fairseq_adam():
    ours = run(lambda ps: Adam(groups_for(ps)))
    ref = run(lambda ps: FairseqAdam(groups_for(ps)))
    assert_trajectories_close(ours, ref)
    # Adam-eps: with eps = 1e-4 the two eps placements differ visibly, ours follows fairseq
    ours_eps = run(lambda ps: Adam(groups_for(ps), eps=1e-4), steps=50)
    ref_eps = run(lambda ps: FairseqAdam(groups_for(ps), eps=1e-4), steps=50)
    vhat_eps = run(lambda ps: Adam(groups_for(ps), eps=1e-4, eps_placement="sqrt_vhat"), steps=50)
    assert_trajectories_close(ours_eps, ref_eps)
    assert (vhat_eps - ref_eps).abs().max() > 1e-4


def test_adam2k_matches_fairseq_adam_freeze():
    ours = run(lambda ps: Adam2k(groups_for(ps), freeze_steps=40))
    ref = run(lambda ps: FairseqAdam(groups_for(ps), freeze=40))
    assert_trajectories_close(ours, ref)


@pytest.mark.parametrize("degenerated_to_sgd", [True, False])
@pytest.mark.parametrize("threshold", [4, 5])
def test_radam_matches_official_semantics(degenerated_to_sgd, threshold):
    betas = ((0.9, 0.999), (0.8, 0.99), (0.95, 0.9995))
    ours = run(
        lambda ps: RAdam(groups_for(ps, betas=betas), threshold=threshold, degenerated_to_sgd=degenerated_to_sgd)
    )
    ref = run(
        lambda ps: OfficialRAdam(
            groups_for(ps, betas=betas), degenerated_to_sgd=degenerated_to_sgd, threshold=threshold
        )
    )
    assert_trajectories_close(ours, ref)


def test_threshold_4_rectifies_step_5_and_threshold_5_does_not():
    assert rho_t(0.999, 5) == pytest.approx(4.996, abs=1e-3)
    assert rectification(0.999, 5, threshold=4) == pytest.approx(0.0170, abs=5e-4)
    assert rectification(0.999, 5, threshold=5) is None
    p = torch.nn.Parameter(torch.zeros(3))
    opt4, opt5 = RAdam([p], threshold=4), RAdam([torch.nn.Parameter(torch.zeros(3))], threshold=5)
    for opt in (opt4, opt5):
        for _ in range(5):
            opt.param_groups[0]["params"][0].grad = torch.ones(3)
            opt.step()
    assert opt4.group_stats[0]["phase"] == "adaptive" and opt5.group_stats[0]["phase"] == "sgd"


def test_simplified_radam_equals_torch_adamw_with_hilton_schedule():
    # without weight decay: like RAdam's r_t, the multiplier scales the adaptive step, not the decay
    no_wd = dict(wds=(0.0, 0.0, 0.0))
    ours = run(lambda ps: SimplifiedRAdam(groups_for(ps, **no_wd), eps_placement="sqrt_vhat"))
    ref = run(lambda ps: _ScheduledAdamW(torch.optim.AdamW(groups_for(ps, **no_wd))))
    assert_trajectories_close(ours, ref)


class _ScheduledAdamW:
    """torch.optim.AdamW whose per-group lr is multiplied by Hilton's factor at each step."""

    def __init__(self, opt):
        self.opt, self.t = opt, 0
        self.base = [g["lr"] for g in opt.param_groups]

    def zero_grad(self):
        self.opt.zero_grad()

    def step(self):
        self.t += 1
        for g, lr in zip(self.opt.param_groups, self.base):
            g["lr"] = lr * hilton_multiplier(g["betas"][1], self.t)
        self.opt.step()


@pytest.mark.parametrize("t,rho,r,hilton", [row for row in PAPER_RT_TABLE if row[2] is not None])
def test_rectification_table(t, rho, r, hilton):
    """the paper's closed forms at beta2 = 0.999."""
    assert rho_t(0.999, t) == pytest.approx(rho, abs=1e-3)
    assert rectification(0.999, t) == pytest.approx(r, abs=1e-4)
    assert hilton_multiplier(0.999, t) == pytest.approx(hilton, abs=1e-4)
    assert hilton_multiplier(0.999, t) == pytest.approx(math.sqrt(2 / (1 + 0.999**t) - 1), rel=1e-12)


def test_adam2k_freeze_keeps_theta_and_m_and_accumulates_v():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    theta0 = p.detach().clone()
    opt = Adam2k([p], lr=0.1, weight_decay=0.1, freeze_steps=30)
    v = torch.zeros_like(p)
    for _ in range(30):
        g = torch.randn_like(p)
        p.grad = g
        opt.step()
        v = 0.999 * v + 0.001 * g * g
    state = opt.state[p]
    assert torch.equal(p.detach(), theta0)
    assert torch.equal(state["exp_avg"], torch.zeros_like(p))
    torch.testing.assert_close(state["exp_avg_sq"], v, rtol=1e-6, atol=0)
    assert int(state["step"]) == 30
    p.grad = torch.randn_like(p)
    opt.step()
    assert not torch.equal(p.detach(), theta0)
    assert opt.group_stats[0] == {"phase": "adaptive", "multiplier": 1.0, "step": 31}


def test_param_groups_lr_are_honoured_independently():
    """RAdam issue #24: one group's lr must never leak into another's step."""
    params, loss_fn = make_problem(3)
    a = [p.clone().requires_grad_() for p in params]
    opt = RAdam([{"params": [a[0]], "lr": 1e-1}, {"params": [a[1]], "lr": 1e-4}, {"params": [a[2]], "lr": 1e-2}])
    singles = [p.clone().requires_grad_() for p in params]
    single_opts = [RAdam([p], lr=lr) for p, lr in zip(singles, (1e-1, 1e-4, 1e-2))]
    for _ in range(30):
        opt.zero_grad()
        loss_fn(a).backward()
        for o in single_opts:
            o.zero_grad()
        # same gradients: recompute at the singles' point, which equals a's point while they agree
        grads = [p.grad.clone() for p in a]
        for p, g in zip(singles, grads):
            p.grad = g
        opt.step()
        for o in single_opts:
            o.step()
    for p, q in zip(a, singles):
        assert torch.equal(p, q)


def test_state_dict_round_trip_in_a_fresh_process_is_bit_identical(tmp_path):
    script = textwrap.dedent(
        """
        import sys, torch
        sys.path.insert(0, {root!r})
        from radam_repro.optim import RAdam
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        opt = RAdam(model.parameters(), lr=1e-2, weight_decay=1e-2)
        data = torch.randn(120, 64, 6, generator=torch.Generator().manual_seed(1))
        def steps(lo, hi):
            for i in range(lo, hi):
                opt.zero_grad()
                model(data[i]).pow(2).mean().backward()
                opt.step()
        mode, path = sys.argv[1], sys.argv[2]
        if mode == "full":  # the checkpoint at step 50 of the uninterrupted run, then its end
            steps(0, 50); torch.save({{"model": model.state_dict(), "opt": opt.state_dict()}}, path)
            steps(50, 120); torch.save(model.state_dict(), path + ".full")
        else:
            ck = torch.load(path)
            model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"])
            steps(50, 120); torch.save(model.state_dict(), path + ".final")
        """
    ).format(root=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    (tmp_path / "s.py").write_text(script)
    env_run = lambda *a: subprocess.run([sys.executable, str(tmp_path / "s.py"), *a], check=True)  # noqa: E731
    env_run("full", str(tmp_path / "half.pt"))
    env_run("resume", str(tmp_path / "half.pt"))
    full, resumed = torch.load(tmp_path / "half.pt.full"), torch.load(tmp_path / "half.pt.final")
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_loading_adam_state_into_radam_works_and_sgd_state_fails_clearly():
    model = torch.nn.Linear(3, 2)
    adam = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    adam.step()
    radam = RAdam(model.parameters())
    radam.load_state_dict(adam.state_dict())  # RAdam issue #47: KeyError 'buffer' in the official code
    radam.step()
    assert int(radam.state[model.weight]["step"]) == 2
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sgd.step()
    with pytest.raises(ValueError, match="non-Adam optimizer such as SGD"):
        RAdam(model.parameters()).load_state_dict(sgd.state_dict())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-1e-3), "lr"),
        (dict(betas=(1.0, 0.999)), "beta1"),
        (dict(betas=(0.9, -0.1)), "beta2"),
        (dict(eps=0.0), "eps"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(threshold=3.5), "threshold"),
        (dict(eps_placement="after"), "eps_placement"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RAdam([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_bad_freeze_steps_and_group_values_and_unknown_algorithm():
    with pytest.raises(ValueError, match="freeze_steps"):
        Adam2k([torch.nn.Parameter(torch.zeros(1))], freeze_steps=-1)
    with pytest.raises(ValueError, match="lr"):
        Adam([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": -0.1}])
    with pytest.raises(ValueError, match="unknown optimizer algorithm 'radm'.*radam"):
        build({"algorithm": "radm", "lr": 1e-3}, [torch.nn.Parameter(torch.zeros(1))])


@pytest.mark.parametrize(
    "cfg,cls",
    [
        (dict(algorithm="adam", lr=1e-3, eps=1e-4), Adam),
        (dict(algorithm="adam_2k", lr=1e-3, freeze_steps=2000), Adam2k),
        (dict(algorithm="radam", lr=1e-3, threshold=4, degenerated_to_sgd=False), RAdam),
        (dict(algorithm="simplified_radam", lr=1e-3), SimplifiedRAdam),
        (dict(algorithm="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4), SGD),  # torch.optim.SGD with our defaults
    ],
)
def test_build_from_config(cfg, cls):
    opt = build(cfg, [torch.nn.Parameter(torch.zeros(2))])
    assert type(opt) is cls
    group = opt.param_groups[0]
    for key in set(cfg) - {"algorithm"}:
        assert group[key] == cfg[key], key


def test_no_step_without_gradients_and_sparse_rejected():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = RAdam([a, b])
    a.grad = torch.ones(2)
    opt.step()
    assert int(opt.state[a]["step"]) == 1 and b not in opt.state
    emb = torch.nn.Embedding(5, 2, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        RAdam(emb.parameters()).step()


@pytest.mark.parametrize("fused", [None, False])
def test_complex_parameters_step_as_torch_adam_does(fused):
    """Complex parameters are stepped as real views (v holds re(g)^2 and im(g)^2), as torch.optim.Adam."""
    torch.manual_seed(0)
    start = torch.randn(3, 4, dtype=torch.complex64)
    targets = [torch.randn(3, 4, dtype=torch.complex64) for _ in range(5)]

    def run(make):
        p = torch.nn.Parameter(start.clone())
        opt = make([p])
        for target in targets:
            opt.zero_grad()
            (p - target).abs().pow(2).sum().backward()
            opt.step()
        return p.detach()

    ours = run(lambda ps: Adam(ps, lr=0.1, eps_placement="sqrt_vhat", fused=fused))
    ref = run(lambda ps: torch.optim.Adam(ps, lr=0.1))
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
