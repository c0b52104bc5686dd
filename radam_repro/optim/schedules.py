"""Learning-rate schedules as LambdaLR-style multipliers of the base lr.

``k`` is the number of completed updates (LambdaLR's ``last_epoch``), so update t = k + 1 uses
``multiplier(k)``; this is fairseq's convention (``lr_scheduler.step_update(num_updates)``).
A run's multiplier is ``warmup(k) * decay(k)``: the optimizer config owns the warmup, the task
owns the decay, so the paper's warmups compose with CIFAR's step decay or NMT's linear decay.

Warmups:
  linear       fairseq: lr_k = init_lr + k (lr - init_lr) / W for k < W (``--warmup-init-lr``)
  exponential  1 - exp(-(k + 1) / tau)                       (pytorch_warmup ExponentialWarmup)
  untuned_linear       min(1, (k + 1) (1 - beta2) / 2)       (Ma & Yarats 2019: linear over 2/(1-beta2))
  untuned_exponential  1 - exp(-(1 - beta2)(k + 1))          (Ma & Yarats 2019)
Decays (:class:`Decay`, described by the task):
  constant, step (x gamma at each milestone), linear (fairseq ``linear``: from 1 at ``start``
  to min_lr_ratio at ``total_steps``; ``start`` defaults to the end of a linear warmup),
  inverse_sqrt (fairseq: sqrt(W / k) after a warmup of W updates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from radam_repro.optim.rectification import untuned_exponential_warmup, untuned_linear_warmup

WARMUPS = ("none", "linear", "exponential", "untuned_linear", "untuned_exponential")
DECAYS = ("constant", "step", "linear", "inverse_sqrt")


@dataclass
class Decay:
    """The task's learning-rate decay, in optimizer steps (composed with the optimizer's warmup).

    kind: ``constant`` | ``step`` (×gamma at each milestone step) | ``linear`` (fairseq ``linear``:
    from lr down to ``min_lr_ratio``·lr at ``total_steps``, starting after a linear warmup)
    | ``inverse_sqrt`` (fairseq: lr·sqrt(W/k) after a warmup of W steps). ``start`` lets a
    linear decay begin later (e.g. the last 30 % of a run).
    """

    kind: str = "constant"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    min_lr: float | None = None  # linear: an absolute floor (fairseq --min-lr); build_schedule turns it into the ratio
    start: int | None = None  # linear: first decaying update (None: after a linear warmup, as fairseq)


def linear_warmup(k: int, steps: int, init_ratio: float = 0.0) -> float:
    """fairseq linear warmup: init + k (1 - init) / W for k < W, then 1."""
    if k >= steps:
        return 1.0
    return init_ratio + k * (1.0 - init_ratio) / steps


def exponential_warmup(k: int, tau: float) -> float:
    """1 - exp(-(k + 1) / tau) (pytorch_warmup's ExponentialWarmup)."""
    return 1.0 - math.exp(-(k + 1) / tau)


def step_decay(k: int, milestones: list[int], gamma: float) -> float:
    """gamma ** (number of milestones already reached); a milestone m applies from update m + 1 on."""
    return gamma ** sum(k >= m for m in milestones)


def linear_decay(k: int, start: int, total: int, min_ratio: float = 0.0) -> float:
    """fairseq ``linear``: (1 - min)(1 - (k - start)/(total - start)) + min for k >= start."""
    if k < start:
        return 1.0
    frac = min(1.0, (k - start) / max(1, total - start))
    return (1.0 - min_ratio) * (1.0 - frac) + min_ratio


def inverse_sqrt_decay(k: int, warmup_steps: int) -> float:
    """fairseq ``inverse_sqrt``: sqrt(W / k) once k >= W."""
    return 1.0 if k < max(1, warmup_steps) else math.sqrt(max(1, warmup_steps) / k)


@dataclass
class Schedule:
    """The multiplier of one run: ``Schedule(...)(k) = warmup(k) * decay(k)``. Picklable."""

    warmup: str = "none"
    warmup_steps: int = 0
    warmup_init_ratio: float = 0.0
    beta2: float = 0.999
    decay: Decay = field(default_factory=Decay)
    total_steps: int = 1

    def __post_init__(self) -> None:
        if self.warmup not in WARMUPS:
            raise ValueError(f"unknown warmup kind {self.warmup!r}; choose one of {', '.join(WARMUPS)}")
        if self.decay.kind not in DECAYS:
            raise ValueError(f"unknown decay kind {self.decay.kind!r}; choose one of {', '.join(DECAYS)}")
        if self.warmup in ("linear", "exponential") and self.warmup_steps <= 0:
            raise ValueError(
                f"warmup kind {self.warmup!r} needs optimizer.warmup.steps > 0 (got {self.warmup_steps})"
            )
        if not 0.0 <= self.warmup_init_ratio <= 1.0:
            raise ValueError(
                f"warmup init_lr must lie between 0 and the base lr (ratio {self.warmup_init_ratio:g})"
            )

    def warmup_factor(self, k: int) -> float:
        if self.warmup == "linear":
            return linear_warmup(k, self.warmup_steps, self.warmup_init_ratio)
        if self.warmup == "exponential":
            return exponential_warmup(k, self.warmup_steps)
        if self.warmup == "untuned_linear":
            return untuned_linear_warmup(self.beta2, k + 1)
        if self.warmup == "untuned_exponential":
            return untuned_exponential_warmup(self.beta2, k + 1)
        return 1.0

    def decay_factor(self, k: int) -> float:
        d = self.decay
        if d.kind == "step":
            return step_decay(k, d.milestones, d.gamma)
        if d.kind == "linear":
            start = d.start if d.start is not None else (self.warmup_steps if self.warmup == "linear" else 0)
            return linear_decay(k, start, self.total_steps, d.min_lr_ratio)
        if d.kind == "inverse_sqrt":
            return inverse_sqrt_decay(k, self.warmup_steps)
        return 1.0

    def __call__(self, k: int) -> float:
        return self.warmup_factor(k) * self.decay_factor(k)


def build_schedule(optimizer_cfg, decay: Decay, total_steps: int) -> Schedule:
    """The run's multiplier from ``optimizer.warmup`` (kind, steps, init_lr) and the task's decay."""
    warmup = optimizer_cfg.get("warmup") or {}
    lr = float(optimizer_cfg["lr"])
    if decay.min_lr is not None:
        decay = replace(decay, min_lr_ratio=decay.min_lr / lr if lr > 0 else 0.0, min_lr=None)
    init_lr = float(warmup.get("init_lr", 0.0) or 0.0)
    return Schedule(
        warmup=str(warmup.get("kind", "none")),
        warmup_steps=int(warmup.get("steps", 0) or 0),
        warmup_init_ratio=init_lr / lr if lr > 0 else 0.0,
        beta2=float(optimizer_cfg.get("betas", (0.9, 0.999))[1]),
        decay=decay,
        total_steps=int(total_steps),
    )


def lambda_lr(optimizer: torch.optim.Optimizer, multiplier: Callable[[int], float]) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR driving every param group's lr with ``multiplier``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
