"""GI-Adam (v_0 = g_1^2, Kalra & Barkeshli 2024) against a float64 reference written here, fused and foreach."""

from __future__ import annotations

import math

import pytest
import torch
from test_optim import assert_trajectories_close, groups_for, run

from radam_repro.optim import Adam, GIAdam


class ReferenceGIAdam(torch.optim.Optimizer):
    """The definition, one tensor at a time: v starts at the first gradient squared, then Adam with bias corrections."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=True, sqrt_v=True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.decoupled, self.sqrt_v = decoupled, sqrt_v

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                g = p.grad if self.decoupled else p.grad + wd * p
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=g * g)
                state["t"] += 1
                t = state["t"]
                state["m"] = beta1 * state["m"] + (1 - beta1) * g
                state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
                m_hat = state["m"] / (1 - beta1**t)
                if self.sqrt_v:  # eps on sqrt(v_t), the bias correction in the step size (fairseq)
                    update = m_hat * math.sqrt(1 - beta2**t) / (state["v"].sqrt() + eps)
                else:
                    update = m_hat / ((state["v"] / (1 - beta2**t)).sqrt() + eps)
                if self.decoupled:
                    p.mul_(1 - lr * wd)
                p.sub_(lr * update)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("eps_placement", ["sqrt_v", "sqrt_vhat"])
@pytest.mark.parametrize("decoupled", [True, False])
def test_gi_adam_matches_float64_reference(fused, eps_placement, decoupled):
    kw = dict(eps_placement=eps_placement, decoupled_weight_decay=decoupled, fused=fused)
    ours = run(lambda ps: GIAdam(groups_for(ps), **kw), steps=60)
    sqrt_v = eps_placement == "sqrt_v"
    ref = run(lambda ps: ReferenceGIAdam(groups_for(ps), decoupled=decoupled, sqrt_v=sqrt_v), steps=60)
    assert_trajectories_close(ours, ref, rtol=1e-10)
    adam = run(lambda ps: Adam(groups_for(ps), **kw), steps=60)
    assert (ours - adam).abs().max() > 1e-3  # the initialisation matters: not Adam


def test_gi_adam_first_step_is_adam_times_sqrt_one_minus_beta2():
    """v_1 = g^2, so v_hat_1 = g^2 / (1 - beta2): the first step is sqrt(1 - beta2) of Adam's sign step lr."""
    lr, beta2 = 1e-2, 0.98
    p = torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor([0.4, -7.0, 1e-3], dtype=torch.float64)
    GIAdam([p], lr=lr, betas=(0.9, beta2), eps=1e-300, eps_placement="sqrt_vhat").step()
    expected = torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64) - lr * math.sqrt(1 - beta2) * p.grad.sign()
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-15)


def test_gi_adam_under_grad_scaler_initialises_from_the_unscaled_gradient():
    p = torch.tensor([1.0, -1.0], requires_grad=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    opt = GIAdam([p], lr=1e-2)
    scaler.scale((p * torch.tensor([0.5, 3.0])).sum()).backward()
    scaler.step(opt)
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], torch.tensor([0.25, 9.0]))
