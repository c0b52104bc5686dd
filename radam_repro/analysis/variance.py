"""The variance of Adam's adaptive learning rate (Liu et al., 2019, Sec. 3-4, App. A-B and F).

ψ_t = sqrt((1 - β2^t) / v_t), with v_t = β2·v_{t-1} + (1 - β2)·g_t² the EMA of squared gradients,
is Adam's adaptive learning rate (1/sqrt(v̂_t)). Approximating the EMA by a simple moving average of
ρ_t samples g_i ~ N(0, σ²) makes ψ² a scaled inverse chi-square variable,
ψ² = (ρ/σ²)·(1/χ²_ρ), whence (App. A)

    Var[ψ] = (1/σ²)·[ρ/(ρ-2) - (ρ/2)·(Γ((ρ-1)/2)/Γ(ρ/2))²]
           = (1/σ²)·[ρ/(ρ-2) - ρ·2^(2ρ-5)/π·B((ρ-1)/2, (ρ-1)/2)²]     (Legendre duplication)
           ≈ ρ / (2(ρ-2)(ρ-4)σ²)                                       (first order, eq. 5)

The EMA's own effective number of samples is Kish's n_eff(t) = (1-β2^t)(1+β2) / ((1-β2)(1+β2^t)),
which equals ρ∞ as t → ∞ but exceeds ρ_t in the middle of the warmup phase.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from radam_repro.optim.rectification import rectification, rho_t

_lgamma = np.vectorize(math.lgamma, otypes=[float])


def variance_psi(rho, sigma: float = 1.0) -> np.ndarray:
    """Exact Var[ψ] for ψ² ~ scaled-inv-χ²(ρ, 1/σ²), finite for ρ > 2 (computed with lgamma)."""
    rho = np.asarray(rho, dtype=float)
    ratio_sq = np.exp(2.0 * (_lgamma((rho - 1.0) / 2.0) - _lgamma(rho / 2.0)))
    return (rho / (rho - 2.0) - rho / 2.0 * ratio_sq) / sigma**2


def variance_psi_first_order(rho, sigma: float = 1.0) -> np.ndarray:
    """The paper's first-order approximation Var[ψ] ≈ ρ / (2(ρ-2)(ρ-4)σ²)."""
    rho = np.asarray(rho, dtype=float)
    return rho / (2.0 * (rho - 2.0) * (rho - 4.0) * sigma**2)


def effective_sample_size(beta2: float, steps) -> np.ndarray:
    """Kish's n_eff of the bias-corrected EMA weights (1-β2)β2^(t-i)/(1-β2^t), i = 1..t."""
    beta2_t = beta2 ** np.asarray(steps, dtype=float)
    return (1.0 - beta2_t) * (1.0 + beta2) / ((1.0 - beta2) * (1.0 + beta2_t))


def rho_curve(beta2: float, steps) -> np.ndarray:
    """ρ_t at each step (1-based)."""
    return np.array([rho_t(beta2, int(t)) for t in steps])


def rectification_curve(beta2: float, steps, threshold: float = 4.0) -> np.ndarray:
    """r_t at each step, NaN where ρ_t ≤ threshold (no rectified step)."""
    values = (rectification(beta2, int(t), threshold) for t in steps)
    return np.array([math.nan if r is None else r for r in values])


def effective_warmup_period(multipliers) -> float:
    """Ma & Yarats' effective warmup period Σ_t (1 - ω_t); NaN multipliers (no step) count as 0."""
    return float(np.sum(1.0 - np.nan_to_num(np.asarray(multipliers, dtype=float), nan=0.0)))


def record_steps(steps: int, points: int = 300) -> np.ndarray:
    """Steps at which to record a simulation: log-spaced early, linear later (both dense enough to plot)."""
    grid = np.concatenate([np.geomspace(1, steps, points), np.linspace(1, steps, points)])
    return np.unique(np.rint(grid).astype(int))


def simulate_psi_variance(
    mus,
    *,
    beta2: float = 0.999,
    trajectories: int = 5000,
    steps: int = 6000,
    record: np.ndarray | None = None,
    seed: int = 0,
    chunk: int = 250,
) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo Var[ψ_t] over trajectories of g_t ~ N(μ, 1) i.i.d., for each μ (App. F, Fig. 9).

    Returns ``(recorded steps, variance[len(mus), len(steps)])``. All μ and trajectories advance
    together as one (μ, trajectory) tensor; gradients are drawn ``chunk`` steps at a time.
    """
    record = record_steps(steps) if record is None else np.asarray(record, dtype=int)
    wanted = {int(t): i for i, t in enumerate(record)}
    generator = torch.Generator().manual_seed(seed)
    mu = torch.tensor([float(m) for m in mus])[:, None]
    ema = torch.zeros(len(mus), trajectories)
    variance = np.empty((len(mus), len(record)))
    for start in range(0, steps, chunk):
        n = min(chunk, steps - start)
        weighted_sq = (torch.randn(n, len(mus), trajectories, generator=generator) + mu).square_().mul_(1.0 - beta2)
        for k in range(n):
            t = start + k + 1
            ema.mul_(beta2).add_(weighted_sq[k])
            if t in wanted:
                psi = (ema / (1.0 - beta2**t)).rsqrt_().double()
                variance[:, wanted[t]] = psi.var(dim=1).numpy()
    return record, variance
