"""``python -m radam_repro.analysis [--out DIR]``: the paper's analytic figures, without training.

Writes ``rectification.png`` (r_t vs t for several β2, beside Hilton's multiplier and the untuned
warmups), ``variance_simulation.png`` (Fig. 9: Var[ψ_t] and Var[r_t ψ_t] for g ~ N(μ, 1)),
``variance_analytic.png`` (Fig. 8: the exact Var[ψ] against its first-order approximation and the
simulation) and ``analysis.json`` (the numbers behind them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from radam_repro.analysis import variance as V  # noqa: E402
from radam_repro.optim.rectification import (  # noqa: E402
    hilton_multiplier,
    untuned_exponential_warmup,
    untuned_linear_warmup,
)

MUS = (0.0, 0.001, 0.01, 0.1, 1.0, 10.0)
BETA2S = (0.9, 0.98, 0.99, 0.999, 0.9995, 0.9999)


def plot_rectification(out: Path, beta2: float = 0.999) -> dict:
    """r_t for several β2 (left); at one β2, RAdam's r_t against warmups with the same role (right)."""
    steps = np.unique(np.geomspace(1, 100_000, 2000).astype(int))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for b2 in BETA2S:
        left.plot(steps, V.rectification_curve(b2, steps), label=f"β2 = {b2:g}")
    left.set(xscale="log", xlabel="step t", ylabel="r_t", title="RAdam rectification r_t (defined for ρ_t > 4)")
    left.legend()
    horizon = np.arange(1, int(50 / (1 - beta2)) + 1)  # long enough for every ω_t to reach 1
    schedules = {
        "RAdam r_t": V.rectification_curve(beta2, horizon),
        "Hilton sqrt(2/(1+β2^t) - 1)": np.array([hilton_multiplier(beta2, t) for t in horizon]),
        "untuned linear min(1, t(1-β2)/2)": np.array([untuned_linear_warmup(beta2, t) for t in horizon]),
        "untuned exponential 1-exp(-(1-β2)t)": np.array([untuned_exponential_warmup(beta2, t) for t in horizon]),
    }
    shown = horizon <= 8 / (1 - beta2)
    periods = {}
    for name, omega in schedules.items():
        periods[name] = V.effective_warmup_period(omega)
        right.plot(horizon[shown], omega[shown], label=f"{name}  (Σ(1-ω) = {periods[name]:.0f})")
    right.set(xlabel="step t", ylabel="lr multiplier ω_t", title=f"Warmup-like multipliers at β2 = {beta2:g}")
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "rectification.png", dpi=120)
    plt.close(fig)
    return {"beta2": beta2, "effective_warmup_period": periods}


def plot_simulation(out: Path, steps_sim: np.ndarray, var: np.ndarray, beta2: float) -> None:
    """Fig. 9: one panel per μ, Var[ψ_t] with and without the rectification r_t (threshold 4)."""
    r = V.rectification_curve(beta2, steps_sim)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    for ax, mu, v in zip(axes.flat, MUS, var):
        ax.plot(steps_sim, v, label="Var[ψ_t]  (Adam)")
        ax.plot(steps_sim, r**2 * v, label="Var[r_t ψ_t]  (RAdam, where ρ_t > 4)")
        ax.set(xscale="log", yscale="log", title=f"g ~ N({mu:g}, 1)")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step t")
    for ax in axes[:, 0]:
        ax.set_ylabel("variance over trajectories")
    axes[0, 0].legend()
    fig.suptitle(f"Variance of the adaptive learning rate ψ_t = 1/sqrt(v̂_t), β2 = {beta2:g} (paper Fig. 9)")
    fig.tight_layout()
    fig.savefig(out / "variance_simulation.png", dpi=120)
    plt.close(fig)


def plot_analytic(out: Path, steps_sim: np.ndarray, var_mu0: np.ndarray, beta2: float) -> dict:
    """Fig. 8: exact Var[ψ] vs ρ, its first-order approximation, and the EMA simulation at ρ_t (σ = 1)."""
    rho = np.linspace(5, 500, 2000)
    exact, first = V.variance_psi(rho), V.variance_psi_first_order(rho)
    rho_sim = V.rho_curve(beta2, steps_sim)
    keep = (rho_sim >= 5) & (rho_sim <= 500)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot(rho, exact, label="exact Var[ψ] (scaled inverse χ²)")
    left.plot(rho, first, "--", label="first order ρ/(2(ρ-2)(ρ-4))")
    left.plot(rho_sim[keep], var_mu0[keep], ".", ms=3, label="simulated EMA, g ~ N(0,1), at ρ_t")
    left.set(xscale="log", yscale="log", xlabel="ρ", ylabel="Var[ψ]·σ²", title="Analytic variance (paper Fig. 8)")
    left.legend()
    right.plot(rho, first / exact, "--", label="first order / exact")
    right.plot(rho_sim[keep], var_mu0[keep] / V.variance_psi(rho_sim[keep]), ".", ms=3, label="simulated / exact(ρ_t)")
    n_eff = V.effective_sample_size(beta2, steps_sim)
    right.plot(
        rho_sim[keep], var_mu0[keep] / V.variance_psi(n_eff[keep]), ".", ms=3, label="simulated / exact(Kish n_eff)"
    )
    right.axhline(1.0, color="grey", lw=0.8)
    right.set(xscale="log", xlabel="ρ", ylabel="ratio", title="Ratios to the exact form")
    right.legend()
    fig.tight_layout()
    fig.savefig(out / "variance_analytic.png", dpi=120)
    plt.close(fig)
    early = (rho_sim >= 20) & (rho_sim <= 200)
    later = rho_sim >= 20
    return {
        "var_ratio_rho5_over_rho500": float(V.variance_psi(5.0) / V.variance_psi(500.0)),
        "max_rel_dev_sim_vs_exact_rho_20_200": float(
            np.max(np.abs(var_mu0[early] / V.variance_psi(rho_sim[early]) - 1))
        ),
        "max_rel_dev_sim_vs_exact_rho_ge_20": float(
            np.max(np.abs(var_mu0[later] / V.variance_psi(rho_sim[later]) - 1))
        ),
        "max_rel_dev_sim_vs_exact_neff_rho_ge_20": float(
            np.max(np.abs(var_mu0[later] / V.variance_psi(n_eff[later]) - 1))
        ),
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m radam_repro.analysis", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/analysis"), help="output folder")
    parser.add_argument("--trajectories", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--beta2", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    steps_sim, var = V.simulate_psi_variance(
        MUS, beta2=args.beta2, trajectories=args.trajectories, steps=args.steps, seed=args.seed
    )
    summary = {
        "simulation": {
            "mus": MUS,
            "trajectories": args.trajectories,
            "steps": args.steps,
            "seconds": round(time.perf_counter() - started, 2),
        }
    }
    summary["rectification"] = plot_rectification(args.out, args.beta2)
    plot_simulation(args.out, steps_sim, var, args.beta2)
    summary["variance"] = plot_analytic(args.out, steps_sim, var[0], args.beta2)
    (args.out / "analysis.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"figures written to {args.out}/")
    return args.out


if __name__ == "__main__":
    main()
