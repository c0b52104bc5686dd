"""Histogram and adaptive-lr statistics against direct computations."""

from __future__ import annotations

import math

import torch

from radam_repro.loggers.statistics import adaptive_lr_variance, is_histogram_step, optimizer_histograms
from radam_repro.optim import RAdam


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
    values = torch.log(torch.cat([a.grad.flatten(), b.grad.flatten()]).abs() + 1e-9).clamp(g["edges"][0], g["edges"][-1])
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
