"""One multi-tensor Adam core that every variant of the paper runs on.

Each step t (1-based, counted per parameter) first updates the moments (Liu et al., Alg. 1-2)::

    g   <- g + wd * theta                      (only with L2, i.e. decoupled_weight_decay=False)
    m_t  = beta1 m + (1 - beta1) g             (skipped in the "freeze" phase)
    v_t  = beta2 v + (1 - beta2) g^2

then a variant-specific rule picks a phase and a multiplier c_t for the step::

    adaptive: theta <- theta(1 - lr wd) - lr c_t m_hat / (denominator)
    sgd:      theta <- theta(1 - lr wd) - lr c_t m_hat          (un-adapted SGD-momentum)
    skip:     theta unchanged (moments still updated)
    freeze:   theta and m unchanged, only v updated (Adam-2k)

where m_hat = m_t / (1 - beta1^t) and the denominator depends on ``eps_placement``:

* ``"sqrt_v"`` (the paper's fairseq Adam, the official radam.py, torch.optim.RAdam):
  sqrt(v_t) + eps, with sqrt(1 - beta2^t) folded into the step size;
* ``"sqrt_vhat"`` (torch.optim.Adam / AdamW): sqrt(v_t / (1 - beta2^t)) + eps.

The two agree up to eps' scale: eps_sqrt_v = eps_sqrt_vhat * sqrt(1 - beta2^t), which matters
for Adam-eps (eps = 1e-4) in the first thousand steps.

The fast path buckets parameters by (device, dtype, step) and runs ``torch._foreach_*`` kernels
per bucket; rho_t, r_t and the bias corrections are Python floats (no host-device sync).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

EPS_PLACEMENTS = ("sqrt_v", "sqrt_vhat")


def _check_range(name: str, value: float, low: float, high: float, *, low_open=False, high_open=True) -> None:
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (isinstance(value, (int, float)) and ok_low and ok_high):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"invalid {name}={value!r}: must be in {lo}{low}, {high}{hi}")


def validate_adam_hyperparameters(group: dict[str, Any]) -> None:
    """Raise ValueError naming the argument and its allowed range, as torch.optim does."""
    _check_range("lr", group["lr"], 0.0, math.inf)
    betas = group["betas"]
    if len(betas) != 2:
        raise ValueError(f"invalid betas={betas!r}: expected two values (beta1, beta2)")
    _check_range("betas[0] (beta1)", betas[0], 0.0, 1.0)
    _check_range("betas[1] (beta2)", betas[1], 0.0, 1.0)
    _check_range("eps", group["eps"], 0.0, math.inf, low_open=True)
    _check_range("weight_decay", group["weight_decay"], 0.0, math.inf)
    if group["eps_placement"] not in EPS_PLACEMENTS:
        raise ValueError(f"invalid eps_placement={group['eps_placement']!r}: choose one of {EPS_PLACEMENTS}")


class AdamFamily(Optimizer):
    """Shared core: Adam's moments plus a per-step rule ``(phase, multiplier)``.

    Subclasses override :meth:`rule`. ``group_stats[i]`` holds the phase and multiplier that
    group ``i`` used at its last step (for logging; e.g. RAdam's r_t).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = True,
        eps_placement: str = "sqrt_v",
        **extra: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            eps_placement=eps_placement,
            **extra,
        )
        self.group_stats: list[dict[str, Any]] = []
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "betas" in param_group:
            param_group["betas"] = tuple(param_group["betas"])
        self.validate_group({**self.defaults, **param_group})
        super().add_param_group(param_group)
        self.group_stats.append({"phase": None, "multiplier": None, "step": 0})

    def validate_group(self, group: dict[str, Any]) -> None:
        validate_adam_hyperparameters(group)

    def rule(self, group: dict[str, Any], step: int) -> tuple[str, float]:
        """Phase and step multiplier c_t at step ``step`` (1-based). Plain Adam: adaptive, 1."""
        return "adaptive", 1.0

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by any Adam-family optimizer (ours, torch Adam/AdamW/RAdam, official RAdam)."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # a state saved by another class lacks this class's keys
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            group["betas"] = tuple(group["betas"])
        for state in self.state.values():
            missing = {"step", "exp_avg", "exp_avg_sq"} - set(state)
            if missing:
                raise ValueError(
                    f"cannot load optimizer state into {type(self).__name__}: a parameter's state has keys "
                    f"{sorted(state)} but Adam-family state needs 'step', 'exp_avg' and 'exp_avg_sq' "
                    f"(missing {sorted(missing)}). Was it saved by a non-Adam optimizer such as SGD? "
                    "Start this optimizer fresh instead of loading that state."
                )
            if not torch.is_tensor(state["step"]):  # the official radam.py stores an int
                state["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
        self.group_stats = [{"phase": None, "multiplier": None, "step": 0} for _ in self.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, stats in zip(self.param_groups, self.group_stats):
            buckets: dict[tuple, list[list[torch.Tensor]]] = defaultdict(lambda: [[], [], [], [], []])
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bucket = buckets[(p.device, p.dtype, int(state["step"]) + 1)]
                for i, tensor in enumerate((p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"])):
                    bucket[i].append(tensor)
            for (_, _, t), (params, grads, exp_avgs, exp_avg_sqs, steps) in buckets.items():
                torch._foreach_add_(steps, 1.0)
                phase, multiplier = self.rule(group, t)
                _adam_update(params, grads, exp_avgs, exp_avg_sqs, group=group, step=t, phase=phase, multiplier=multiplier)
                stats.update(phase=phase, multiplier=multiplier, step=t)
        return loss


def _adam_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    group: dict[str, Any],
    step: int,
    phase: str,
    multiplier: float,
) -> None:
    """One step of the core for a bucket of same-device, same-dtype, same-step tensors."""
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    if wd != 0 and not group["decoupled_weight_decay"]:
        grads = torch._foreach_add(grads, params, alpha=wd)
    if phase != "freeze":
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    if phase in ("freeze", "skip"):
        return
    if wd != 0 and group["decoupled_weight_decay"]:
        torch._foreach_mul_(params, 1.0 - lr * wd)
    bias_correction1 = 1.0 - beta1**step
    if phase == "sgd":
        torch._foreach_add_(params, exp_avgs, alpha=-lr * multiplier / bias_correction1)
        return
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    if group["eps_placement"] == "sqrt_v":
        step_size = lr * multiplier * bias_correction2_sqrt / bias_correction1
    else:
        torch._foreach_div_(denom, bias_correction2_sqrt)
        step_size = lr * multiplier / bias_correction1
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, value=-step_size)
