"""Histogram and adaptive-lr statistics against direct computations."""

from __future__ import annotations

import math

import torch

from radam_repro.loggers.statistics import (
    adaptive_lr_row,
    adaptive_lr_variance,
    eps_dominated,
    eps_dominated_fraction,
    histogram_record,
    is_histogram_step,
    optimizer_histograms,
)
from radam_repro.optim import Adam, RAdam


def test_histogram_schedule_is_the_papers():
    steps = [s for s in range(1, 1000) if is_histogram_step(s)]
    assert steps == [1, 5, 10, 25, 50, 75, 100, 150, 200, 300, 600, 900]


def test_histograms_count_every_coordinate_and_match_numpy():
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(30, 7)), torch.nn.Parameter(torch.randn(11))
    opt = RAdam([a, b])
    a.grad, b.grad = torch.randn(30, 7) * 1e-3, torch.zeros(11)
    opt.step()
    hist = optimizer_histograms(opt)
    g = hist["log_abs_grad"]
    assert sum(g["counts"]) == 30 * 7 + 11
    values = torch.log(torch.cat([a.grad.flatten(), b.grad.flatten()]).abs() + 1e-9).clamp(
        g["edges"][0], g["edges"][-1]
    )
    expected = torch.histc(values, bins=len(g["counts"]), min=g["edges"][0], max=g["edges"][-1])
    assert g["counts"] == expected.tolist()
    floor_bin = int((math.log(1e-9) - g["edges"][0]) / (g["edges"][1] - g["edges"][0]))
    assert g["counts"][floor_bin] >= 11  # the zero gradients sit at log(1e-9), the floor
    assert sum(hist["log_abs_exp_avg_sq"]["counts"]) == 30 * 7 + 11


def test_adaptive_lr_variance_per_layer_skips_unseen_coordinates():
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(50))
    opt = RAdam([w], betas=(0.9, 0.99))
    grads = []
    for _ in range(3):
        g = torch.randn(50)
        g[:10] = 0.0  # never seen: no adaptive lr yet
        grads.append(g)
        w.grad = g
        opt.step()
    v = sum(0.01 * 0.99 ** (2 - i) * grads[i] ** 2 for i in range(3))
    psi = 1 / ((v[10:] / (1 - 0.99**3)).sqrt() + 1e-8)
    out = adaptive_lr_variance(opt, {w: "w"})
    assert math.isclose(out["w"], psi.var().item(), rel_tol=1e-4)


def test_eps_dominated_fraction_compares_eps_with_the_root_it_is_added_to():
    """sqrt_v (fairseq): eps vs sqrt(v_t) = sqrt(1 - beta2) |g| after one step; sqrt_vhat (torch): eps vs |g|."""
    torch.manual_seed(2)
    g = torch.logspace(-7, -1, 600)[torch.randperm(600)]
    g[:100] = 0.0  # never seen: left out
    for placement, root in (("sqrt_v", math.sqrt(1 - 0.999) * g), ("sqrt_vhat", g)):
        w = torch.nn.Parameter(torch.zeros(600))
        opt = Adam([w], eps=1e-4, betas=(0.9, 0.999), eps_placement=placement)
        w.grad = g.clone()
        opt.step()
        expected = (root[100:] < 1e-4).float().mean().item()
        assert 0.2 < expected < 0.9
        assert math.isclose(eps_dominated_fraction(opt)["adaptive_lr/eps_dominated"], expected, rel_tol=1e-6)


def test_eps_dominated_against_another_eps_stays_on_the_device_and_takes_an_integer_step():
    """The GPU check's frac_below_1e-4: the same statistic with eps = 1e-4 for an eps = 1e-8 run; a 0-d tensor (no
    host read), also for a state whose step is a Python int (the official radam.py's)."""
    torch.manual_seed(2)
    g = torch.logspace(-7, -1, 500)[torch.randperm(500)]
    w = torch.nn.Parameter(torch.zeros(500))
    opt = Adam([w], eps=1e-8, betas=(0.9, 0.999), eps_placement="sqrt_vhat")
    w.grad = g.clone()
    opt.step()
    opt.state[w]["step"] = 1
    fraction = eps_dominated(opt, 1e-4)
    assert torch.is_tensor(fraction) and fraction.dim() == 0
    assert math.isclose(fraction.item(), (g < 1e-4).float().mean().item(), rel_tol=1e-6)
    assert eps_dominated(opt).item() == 0.0  # against its own eps = 1e-8: no coordinate


def test_histogram_record_carries_the_eps_fraction_into_the_metrics_row():
    w = torch.nn.Parameter(torch.zeros(10))
    opt = Adam([w], eps=1.0)
    w.grad = torch.full((10,), 1e-3)
    opt.step()
    row = adaptive_lr_row(histogram_record(1, opt, {w: "w"}))
    assert row["adaptive_lr/eps_dominated"] == 1.0 and "adaptive_lr/var_mean" in row
