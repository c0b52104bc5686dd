"""One Adam core that every variant of the paper runs on.

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

Parameters are bucketed by (device, dtype, step); complex parameters are stepped as real views, as
torch.optim.Adam does. The adaptive phase of a bucket is one pass of
torch's fused Adam/AdamW kernel (``fused=None``, the default, wherever the device has one) with the
variant folded into its scalar arguments (see :func:`_fused_adam_update`); the rare phases (sgd,
skip, freeze) and ``fused=False`` run ``torch._foreach_*`` kernels. Steps are counted on the host
too, so rho_t, r_t and the bias corrections are Python floats: no host-device sync per step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

EPS_PLACEMENTS = ("sqrt_v", "sqrt_vhat")
FUSED_DEVICES = ("cpu", "cuda")
FUSED_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def check_range(name: str, value: float, low: float, high: float, *, low_open=False, high_open=True) -> None:
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (isinstance(value, (int, float)) and ok_low and ok_high):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"invalid {name}={value!r}: must be in {lo}{low}, {high}{hi}")


def validate_adam_hyperparameters(group: dict[str, Any]) -> None:
    """Raise ValueError naming the argument and its allowed range, as torch.optim does."""
    check_range("lr", group["lr"], 0.0, math.inf)
    betas = group["betas"]
    if len(betas) != 2:
        raise ValueError(f"invalid betas={betas!r}: expected two values (beta1, beta2)")
    check_range("betas[0] (beta1)", betas[0], 0.0, 1.0)
    check_range("betas[1] (beta2)", betas[1], 0.0, 1.0)
    check_range("eps", group["eps"], 0.0, math.inf, low_open=True)
    check_range("weight_decay", group["weight_decay"], 0.0, math.inf)
    if group["eps_placement"] not in EPS_PLACEMENTS:
        raise ValueError(f"invalid eps_placement={group['eps_placement']!r}: choose one of {EPS_PLACEMENTS}")
    if group["fused"] not in (None, True, False):
        raise ValueError(f"invalid fused={group['fused']!r}: choose None (fused where supported), True or False")
    if group["fused"]:
        for p in group["params"]:
            if not _fused_supported(p):
                raise ValueError(
                    f"fused=True needs {'/'.join(FUSED_DEVICES)} parameters of a floating dtype, got one on "
                    f"{p.device} of {p.dtype}; pass fused=None (fused where supported) or fused=False"
                )


def _fused_supported(p: torch.Tensor) -> bool:
    """Whether torch has fused Adam kernels for ``p`` (a complex parameter: for its real view)."""
    return p.device.type in FUSED_DEVICES and p.dtype.to_real() in FUSED_DTYPES


class AdamFamily(Optimizer):
    """Shared core: Adam's moments plus a per-step rule ``(phase, multiplier)``.

    Subclasses override :meth:`rule`. ``group_stats[i]`` holds the phase and multiplier that
    group ``i`` used at its last step (for logging; e.g. RAdam's r_t). ``fused=None`` runs the
    adaptive phase through torch's fused kernels where the device has them, ``False`` on foreach
    kernels only. With ``torch.amp.GradScaler`` the fused kernels unscale the gradients and skip
    the step on inf/NaN themselves (``_step_supports_amp_scaling``, as torch.optim.Adam).
    """

    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = True,
        eps_placement: str = "sqrt_v",
        fused: bool | None = None,
        **extra: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            eps_placement=eps_placement,
            fused=fused,
            **extra,
        )
        self._init_host_state()
        super().__init__(params, defaults)

    def _init_host_state(self) -> None:
        # host copies of each parameter's step count (read from state["step"] once when missing), and the
        # previous step's found_inf when a CUDA GradScaler's skip is resolved one step late (no sync)
        self._steps: dict[torch.Tensor, int] = {}
        self._pending_skip: tuple[torch.Tensor, Any, list[torch.Tensor]] | None = None
        self.group_stats: list[dict[str, Any]] = [
            {"phase": None, "multiplier": None, "step": 0} for _ in getattr(self, "param_groups", [])
        ]

    def __setstate__(self, state: dict[str, Any]) -> None:  # copy.deepcopy / pickle keep only the torch state
        super().__setstate__(state)
        self._init_host_state()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "betas" in param_group:
            param_group["betas"] = tuple(param_group["betas"])
        params = param_group["params"]
        params = [params] if torch.is_tensor(params) else list(params)
        self.validate_group({**self.defaults, **param_group, "params": params})
        super().add_param_group(param_group)
        self.group_stats.append({"phase": None, "multiplier": None, "step": 0})

    def validate_group(self, group: dict[str, Any]) -> None:
        validate_adam_hyperparameters(group)

    def rule(self, group: dict[str, Any], step: int) -> tuple[str, float]:
        """Phase and step multiplier c_t at step ``step`` (1-based). Plain Adam: adaptive, 1."""
        return "adaptive", 1.0

    def initial_exp_avg_sq(
        self, group: dict[str, Any], p: torch.Tensor, grad: torch.Tensor, grad_scale: torch.Tensor | None
    ) -> torch.Tensor:
        """v_0, created at a parameter's first step from its first gradient (``grad``, still multiplied by
        ``grad_scale`` under a GradScaler). Plain Adam: zeros."""
        return torch.zeros_like(p, memory_format=torch.preserve_format)

    @staticmethod
    def _step_device(group: dict[str, Any], p: torch.Tensor) -> torch.device:
        """Where state["step"] lives: on the parameter's device for the fused kernels (as torch's fused Adam)."""
        return p.device if group["fused"] is not False and _fused_supported(p) else torch.device("cpu")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by any Adam-family optimizer (ours, torch Adam/AdamW/RAdam, official RAdam)."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # a state saved by another class lacks this class's keys
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            group["betas"] = tuple(group["betas"])
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    continue
                missing = {"step", "exp_avg", "exp_avg_sq"} - set(state)
                if missing:
                    raise ValueError(
                        f"cannot load optimizer state into {type(self).__name__}: a parameter's state has keys "
                        f"{sorted(state)} but Adam-family state needs 'step', 'exp_avg' and 'exp_avg_sq' "
                        f"(missing {sorted(missing)}). Was it saved by a non-Adam optimizer such as SGD? "
                        "Start this optimizer fresh instead of loading that state."
                    )
                # the official radam.py stores an int; torch's non-fused Adam a CPU tensor
                step = float(state["step"])
                state["step"] = torch.tensor(step, dtype=torch.float32, device=self._step_device(group, p))
        self._init_host_state()

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Gather each group's parameters into buckets, then one :func:`adam_family_update` per bucket."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        self._resolve_pending_skip()
        inf_on_host = functools.cache(lambda: bool(found_inf))  # read once, and only if a foreach bucket needs it
        deferred: list[torch.Tensor] = []  # params whose step the fused kernel may have skipped on found_inf
        for group, stats in zip(self.param_groups, self.group_stats):
            for bucket in self._buckets(group, grad_scale):
                phase, multiplier = self.rule(group, bucket.step)
                path = adam_family_update(bucket, group, phase, multiplier, grad_scale, found_inf, inf_on_host)
                if path == "skipped":
                    continue
                if path == "fused" and found_inf is not None:
                    deferred += bucket.owners
                for p in bucket.owners:
                    self._steps[p] = bucket.step
                stats.update(phase=phase, multiplier=multiplier, step=bucket.step)
        if deferred:
            self._defer_skip(found_inf, deferred)
        return loss

    def _buckets(self, group: dict[str, Any], grad_scale: torch.Tensor | None) -> list[Bucket]:
        """The group's parameters with a gradient, their state created on first use, bucketed by (device, dtype,
        step, fusable); complex parameters as real views (as torch.optim.Adam), so v holds re^2 and im^2."""
        buckets: dict[tuple, Bucket] = {}
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=self._step_device(group, p))
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = self.initial_exp_avg_sq(group, p, grad, grad_scale)
                self._steps[p] = 0
            t = self._steps.get(p)
            if t is None:
                t = self._steps[p] = int(state["step"])
            tensors = [p, grad, state["exp_avg"], state["exp_avg_sq"]]
            if torch.is_complex(p):
                tensors = [torch.view_as_real(x) for x in tensors]
            # the fused kernels walk raw memory: every tensor of a parameter must share its layout
            fusable = _fused_supported(p) and len({x.stride() for x in tensors}) == 1
            key = (p.device, tensors[0].dtype, t + 1, fusable)
            bucket = buckets.setdefault(key, Bucket(step=t + 1, device=p.device, fusable=fusable))
            bucket.owners.append(p)
            for tensor_list, tensor in zip(bucket.tensors(), (*tensors, state["step"])):
                tensor_list.append(tensor)
        return list(buckets.values())

    def _defer_skip(self, found_inf: torch.Tensor, params: list[torch.Tensor]) -> None:
        """Remember found_inf to un-count ``params``' host steps if the kernel skipped them.

        On CUDA it is copied to the host asynchronously and read at the next step (by then long done),
        so a GradScaler costs no sync; elsewhere it is read now.
        """
        if found_inf.device.type == "cuda":
            host = found_inf.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending_skip = (host, event, params)
        else:
            self._pending_skip = (found_inf, None, params)
            self._resolve_pending_skip()

    def _resolve_pending_skip(self) -> None:
        if self._pending_skip is None:
            return
        found_inf, event, params = self._pending_skip
        self._pending_skip = None
        if event is not None:
            event.synchronize()
        if bool(found_inf):
            for p in params:
                self._steps[p] -= 1


@dataclass
class Bucket:
    """Tensors of same-device, same-dtype parameters at the same step ``step`` (1-based), as lists for the kernels."""

    step: int
    device: torch.device
    fusable: bool  # the device and dtype have fused kernels and every tensor shares its parameter's layout
    owners: list[torch.Tensor] = field(default_factory=list)  # the parameters (complex ones: not their real views)
    params: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor] = field(default_factory=list)
    exp_avgs: list[torch.Tensor] = field(default_factory=list)
    exp_avg_sqs: list[torch.Tensor] = field(default_factory=list)
    steps: list[torch.Tensor] = field(default_factory=list)

    def tensors(self) -> tuple[list[torch.Tensor], ...]:
        return self.params, self.grads, self.exp_avgs, self.exp_avg_sqs, self.steps


def adam_family_update(
    bucket: Bucket,
    group: dict[str, Any],
    phase: str,
    multiplier: float,
    grad_scale: torch.Tensor | None,
    found_inf: torch.Tensor | None,
    inf_on_host: Callable[[], bool],
) -> str:
    """One step of a bucket in ``phase`` with multiplier c_t (as torch's functional ``adam``): the adaptive phase on
    torch's fused kernel where the bucket allows it, every other case on foreach kernels.

    Returns the path taken: ``"fused"`` (its skip on found_inf is the kernel's, resolved later on the host),
    ``"foreach"``, or ``"skipped"`` (a GradScaler found inf/NaN: nothing changed).
    """
    scale, inf = (x if x is None else x.to(bucket.device, non_blocking=True) for x in (grad_scale, found_inf))
    if group["fused"] is not False and bucket.fusable and phase == "adaptive" and multiplier > 0:
        torch._foreach_add_(bucket.steps, 1.0)
        _fused_adam_update(bucket, group, multiplier, scale, inf)
        if inf is not None:
            torch._foreach_sub_(bucket.steps, [inf] * len(bucket.steps))
        return "fused"
    if found_inf is not None and inf_on_host():
        return "skipped"
    if scale is not None:
        torch._foreach_div_(bucket.grads, scale)
    torch._foreach_add_(bucket.steps, 1.0)
    _adam_update(bucket, group, phase, multiplier)
    return "foreach"


def _fused_adam_update(
    bucket: Bucket, group: dict[str, Any], multiplier: float, grad_scale: torch.Tensor | None, found_inf: Any
) -> None:
    """The adaptive phase of a bucket as one pass of torch's fused Adam (L2) or AdamW (decoupled) kernel.

    The kernel computes theta <- theta(1 - lr' wd') - lr'/(1 - beta1^t) m / (sqrt(v / (1 - beta2^t)) + eps')
    with t read from ``bucket.steps``; the variant maps onto it with
    lr' = lr c_t (the multiplier scales the adaptive step only), wd' = wd / c_t for decoupled decay
    (so lr' wd' = lr wd, the un-multiplied lr), wd' = wd for L2, and eps' = eps / sqrt(1 - beta2^t)
    for ``sqrt_v`` (sqrt(v_t) + eps = sqrt(1 - beta2^t) (sqrt(v_hat) + eps')), eps' = eps for ``sqrt_vhat``.
    """
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    if group["eps_placement"] == "sqrt_v":
        eps = eps / math.sqrt(1.0 - beta2**bucket.step)
    decoupled = wd != 0 and group["decoupled_weight_decay"]
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    kernel(
        *(bucket.params, bucket.grads, bucket.exp_avgs, bucket.exp_avg_sqs, [], bucket.steps),
        lr=lr * multiplier,
        beta1=beta1,
        beta2=beta2,
        weight_decay=wd / multiplier if decoupled else wd,
        eps=eps,
        amsgrad=False,
        maximize=False,
        grad_scale=grad_scale,
        found_inf=found_inf,
    )


def _adam_update(bucket: Bucket, group: dict[str, Any], phase: str, multiplier: float) -> None:
    """One step of the core in ``phase`` for a bucket, on foreach kernels."""
    params, grads, exp_avgs, exp_avg_sqs, _ = bucket.tensors()
    step = bucket.step
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
