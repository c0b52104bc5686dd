"""What the paper looks at inside the optimizer, computed on the device.

* Histograms of log|g|, log|m|, log|v| over all parameters (Liu et al. Fig. 2-3; the official
  code's commented-out TensorBoard logging used log(|x| + 1e-9)) at steps
  1, 5, 10, 25, 50, 75, 100, 150, 200 and then every 300.
* The spread of the adaptive learning rate psi = 1 / (sqrt(v_hat) + eps) across the coordinates
  of each parameter tensor that have seen a gradient (Sec. 3: its variance is what warmup and rectification tame).
* The fraction of those coordinates where eps outweighs the square root it is added to (sqrt(v_t) with
  ``eps_placement="sqrt_v"``, i.e. sqrt(v_hat_t) < eps / sqrt(1 - beta2^t); sqrt(v_hat_t) with ``"sqrt_vhat"``):
  where it is near 0, Adam-eps is plain Adam and eps cannot damp the early adaptive lr (Sec. 3.2).
"""

from __future__ import annotations

import math
from typing import Any

import torch

HISTOGRAM_STEPS = (1, 5, 10, 25, 50, 75, 100, 150, 200)
HISTOGRAM_EVERY = 300
LOG_FLOOR = 1e-9
# natural-log ranges: |g|, |m| down to the 1e-9 floor; v = g^2 spans twice the exponent range
RANGES = {"log_abs_grad": (-21.0, 5.0), "log_abs_exp_avg": (-21.0, 5.0), "log_abs_exp_avg_sq": (-21.0, 10.0)}
BINS = 104


def is_histogram_step(step: int) -> bool:
    return step in HISTOGRAM_STEPS or step % HISTOGRAM_EVERY == 0


def _histogram(tensors: list[torch.Tensor], low: float, high: float) -> dict[str, list[float]]:
    counts = None
    for t in tensors:
        h = torch.histc(torch.log(t.detach().abs().float() + LOG_FLOOR).clamp_(low, high), bins=BINS, min=low, max=high)
        counts = h if counts is None else counts + h
    edges = torch.linspace(low, high, BINS + 1).tolist()
    return {"edges": edges, "counts": [] if counts is None else counts.tolist()}


def optimizer_histograms(optimizer: torch.optim.Optimizer) -> dict[str, dict[str, list[float]]]:
    """Histograms of log|g| and, for Adam-family states, log|m| and log|v| (one host transfer each)."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    out = {"log_abs_grad": _histogram([p.grad for p in params], *RANGES["log_abs_grad"])}
    states = [optimizer.state[p] for p in params if "exp_avg_sq" in optimizer.state.get(p, {})]
    if states:
        out["log_abs_exp_avg"] = _histogram([s["exp_avg"] for s in states], *RANGES["log_abs_exp_avg"])
        out["log_abs_exp_avg_sq"] = _histogram([s["exp_avg_sq"] for s in states], *RANGES["log_abs_exp_avg_sq"])
    return out


def _step(state: dict[str, Any], device: torch.device) -> torch.Tensor:
    """A parameter's step count as a float64 0-d tensor on ``device`` (a device tensor is not read on the host)."""
    return torch.as_tensor(state["step"], dtype=torch.float64, device=device)


def adaptive_lr_variance(optimizer: torch.optim.Optimizer, names: dict[torch.Tensor, str]) -> dict[str, float]:
    """Per parameter tensor, Var over coordinates of psi = 1 / (sqrt(v_t / (1 - beta2^t)) + eps).

    Coordinates that never received a gradient (v = 0, e.g. padding embeddings) have no adaptive
    learning rate yet and are left out (masked sums, no host sync).
    """
    keys, values = [], []
    for group in optimizer.param_groups:
        beta2, eps = group.get("betas", (0.0, 0.999))[1], group.get("eps", 1e-8)
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" not in state or p.numel() < 2:
                continue
            v = state["exp_avg_sq"].float()
            seen = (v > 0).float()
            psi = 1.0 / ((v / (1.0 - beta2 ** _step(state, v.device))).sqrt() + eps)
            n = seen.sum()
            mean = (psi * seen).sum() / n.clamp_min(1)
            keys.append(names.get(p, f"param{len(keys)}"))
            values.append((((psi - mean) ** 2) * seen).sum() / (n - 1).clamp_min(1))
    if not values:
        return {}
    return dict(zip(keys, torch.stack(values).tolist()))


def eps_dominated(optimizer: torch.optim.Optimizer, eps: float | None = None) -> torch.Tensor | None:
    """The fraction of seen coordinates (v > 0) of all Adam-family parameters where eps (the group's, or ``eps``)
    outweighs the square root it is added to: sqrt(v_t) with ``eps_placement="sqrt_v"`` (fairseq), sqrt(v_hat_t)
    with ``"sqrt_vhat"`` (torch's Adam). A 0-d tensor on the device (no host sync); None without Adam-family state.
    """
    below, seen = [], []
    for group in optimizer.param_groups:
        beta2, group_eps = group.get("betas", (0.0, 0.999))[1], group.get("eps", 1e-8)
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" not in state:
                continue
            v = state["exp_avg_sq"].float()
            if group.get("eps_placement", "sqrt_v") == "sqrt_vhat":
                v = v / (1.0 - beta2 ** _step(state, v.device))
            below.append(((v > 0) & (v.sqrt() < (group_eps if eps is None else eps))).sum())
            seen.append((v > 0).sum())
    if not seen:
        return None
    return torch.stack(below).sum() / torch.stack(seen).sum().clamp_min(1)


def eps_dominated_fraction(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``adaptive_lr/eps_dominated``: :func:`eps_dominated` with each group's eps, read on the host."""
    fraction = eps_dominated(optimizer)
    return {} if fraction is None else {"adaptive_lr/eps_dominated": fraction.item()}


def summarize_variance(per_layer: dict[str, float]) -> dict[str, float]:
    """Scalars for curves: mean / max of the per-layer variances and their mean log10."""
    if not per_layer:
        return {}
    values = [v for v in per_layer.values() if math.isfinite(v)]
    if not values:
        return {"adaptive_lr/var_mean": float("nan")}
    return {
        "adaptive_lr/var_mean": sum(values) / len(values),
        "adaptive_lr/var_max": max(values),
        "adaptive_lr/log10_var_mean": sum(math.log10(max(v, 1e-300)) for v in values) / len(values),
    }


def histogram_record(step: int, optimizer: torch.optim.Optimizer, names: dict[torch.Tensor, str]) -> dict[str, Any]:
    """The ``histograms/step_XXXXXXX.json`` record of the run folder contract."""
    return {
        "step": step,
        "hist": optimizer_histograms(optimizer),
        "adaptive_lr_var": adaptive_lr_variance(optimizer, names),
        **eps_dominated_fraction(optimizer),
    }


def adaptive_lr_row(record: dict[str, Any]) -> dict[str, float]:
    """The scalars of a histogram record for the metrics rows (and W&B): variance summary and eps fraction."""
    return {
        **summarize_variance(record["adaptive_lr_var"]),
        **{k: v for k, v in record.items() if k.startswith("adaptive_lr/")},
    }
