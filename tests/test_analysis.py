"""The analytic side of the paper: r_t against the paper's closed forms, Var[ψ] against simulation (Fig. 8/9)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import PAPER_RT_TABLE
from radam_repro.analysis import variance as V
from radam_repro.analysis.__main__ import main as analysis_main
from radam_repro.optim.rectification import hilton_multiplier

torch.set_num_threads(1)

PAPER_TABLE = PAPER_RT_TABLE  # the paper's closed forms at beta2 = 0.999


def test_rectification_curves_match_the_paper_table():
    steps = [row[0] for row in PAPER_TABLE]
    rho = V.rho_curve(0.999, steps)
    r = V.rectification_curve(0.999, steps, threshold=5.0)
    for (t, rho_ref, r_ref, hilton_ref), rho_got, r_got in zip(PAPER_TABLE, rho, r):
        assert rho_got == pytest.approx(rho_ref, abs=5e-4), t
        assert math.isnan(r_got) if r_ref is None else r_got == pytest.approx(r_ref, abs=5e-5), t
        assert hilton_multiplier(0.999, t) == pytest.approx(hilton_ref, abs=5e-5), t
    # the paper's Alg. 2 threshold (rho_t > 4) already rectifies step 5, with r_5 ≈ 0.017
    assert V.rectification_curve(0.999, [5], threshold=4.0)[0] == pytest.approx(0.017, abs=5e-4)


@pytest.mark.parametrize("beta2, radam, hilton", [(0.999, 1033, 877), (0.9995, 2063, 1754), (0.98, 55, 43)])
def test_effective_warmup_periods_match_the_paper_notes(beta2, radam, hilton):
    steps = np.arange(1, int(60 / (1 - beta2)))
    assert V.effective_warmup_period(V.rectification_curve(beta2, steps)) == pytest.approx(radam, abs=1)
    assert V.effective_warmup_period([hilton_multiplier(beta2, t) for t in steps]) == pytest.approx(hilton, abs=1)


@pytest.mark.parametrize("rho", [5.0, 6.5, 10.0, 20.0, 50.0, 100.0])
def test_exact_variance_equals_the_papers_beta_function_form(rho):
    """Var[ψ]σ² = ρ/(ρ-2) - ρ·2^(2ρ-5)/π·B((ρ-1)/2, (ρ-1)/2)², evaluated with plain gamma functions."""
    a = (rho - 1) / 2
    beta = math.gamma(a) ** 2 / math.gamma(2 * a)
    paper_form = rho / (rho - 2) - rho * 2 ** (2 * rho - 5) / math.pi * beta**2
    assert V.variance_psi(rho) == pytest.approx(paper_form, rel=1e-9)
    assert V.variance_psi(rho, sigma=2.0) == pytest.approx(paper_form / 4, rel=1e-9)


@pytest.mark.parametrize("rho", [8.0, 20.0, 100.0])
def test_exact_variance_matches_sampled_scaled_inverse_chi_square(rho):
    """ψ² = ρ/χ²_ρ for σ = 1: the SMA-of-ρ-squared-Gaussians model behind the closed form."""
    psi = np.sqrt(rho / np.random.default_rng(0).chisquare(rho, size=2_000_000))
    assert psi.var(ddof=1) == pytest.approx(V.variance_psi(rho), rel=0.02)


def test_first_order_approximation_converges_to_the_exact_variance():
    rho = np.array([5.0, 10.0, 20.0, 50.0, 100.0, 500.0])
    rel_error = V.variance_psi_first_order(rho) / V.variance_psi(rho) - 1
    assert np.all(np.diff(rel_error) < 0) and np.all(rel_error > 0)
    assert np.all(rel_error[rho >= 50] < 0.05)
    # §4.2: the variance at rho = 5 is more than 100 times the variance at rho = 500
    assert V.variance_psi(5.0) / V.variance_psi(500.0) > 100


@pytest.fixture(scope="module")
def simulation():
    steps, var = V.simulate_psi_variance([0.0, 1.0, 10.0], trajectories=20_000, steps=6000, seed=1)
    return steps, var, V.rho_curve(0.999, steps)


def test_simulated_variance_matches_the_closed_form_in_the_early_phase(simulation):
    steps, var, rho = simulation
    early = (rho >= 20) & (rho <= 200)
    assert early.sum() > 50
    np.testing.assert_allclose(var[0][early], V.variance_psi(rho[early]), rtol=0.05)
    # the paper's first-order form is itself > 5% above the exact one below rho ≈ 50
    first_order = (rho >= 80) & (rho <= 200)
    np.testing.assert_allclose(var[0][first_order], V.variance_psi_first_order(rho[first_order]), rtol=0.05)


def test_simulated_variance_follows_the_emas_effective_sample_size(simulation):
    """For all rho_t >= 20 the EMA behaves like an SMA of Kish's n_eff samples, not of rho_t samples.

    Mid-warmup (rho_t in [800, 1500], t ≈ 1000-3000 at β2 = 0.999) n_eff exceeds rho_t by ~10%, so
    the closed form evaluated at rho_t over-estimates the simulated variance by more than 5%.
    """
    steps, var, rho = simulation
    late = rho >= 20
    n_eff = V.effective_sample_size(0.999, steps[late])
    np.testing.assert_allclose(var[0][late], V.variance_psi(n_eff), rtol=0.05)
    middle = (rho >= 800) & (rho <= 1500)
    assert np.all(var[0][middle] < 0.95 * V.variance_psi(rho[middle]))


@pytest.mark.parametrize("index, mu", [(1, 1.0), (2, 10.0)])
def test_simulated_variance_with_nonzero_mean_matches_the_delta_method(simulation, index, mu):
    """Var[v^-1/2] ≈ Var[v]/(4 E[v]^3), Var[v] = Var[g²]/n_eff, g ~ N(μ, 1): E[g²] = μ²+1, Var[g²] = 4μ²+2."""
    steps, var, _ = simulation
    n_eff = V.effective_sample_size(0.999, steps[-1])
    expected = (4 * mu**2 + 2) / n_eff / (4 * (mu**2 + 1) ** 3)
    assert var[index][-1] == pytest.approx(expected, rel=0.05)


def test_cli_writes_figures_and_numbers(tmp_path):
    import matplotlib.image

    out = analysis_main(["--out", str(tmp_path), "--trajectories", "300", "--steps", "600"])
    for name in ("rectification.png", "variance_simulation.png", "variance_analytic.png"):
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 20_000
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 300 and image[..., :3].std() > 0.05
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["rectification"]["effective_warmup_period"]["RAdam r_t"] == pytest.approx(1033, abs=1)
    assert summary["variance"]["var_ratio_rho5_over_rho500"] > 100
