"""The paper's optimizer family, usable without the rest of the harness.

>>> from radam_repro.optim import RAdam, SimplifiedRAdam, Adam2k
>>> opt = RAdam(model.parameters(), lr=3e-4, betas=(0.9, 0.999), weight_decay=1e-4)

``build(cfg, params)`` turns an optimizer config (``configs/optimizer/*.yaml``) into an optimizer through
the registry (:mod:`radam_repro.optim.registry`; ``python -m radam_repro.optim --list`` prints it);
:mod:`radam_repro.optim.schedules` turns its ``warmup`` and a task's decay into a LambdaLR multiplier.
"""

from __future__ import annotations

from radam_repro.optim.adam_family import AdamFamily
from radam_repro.optim.rectification import (
    hilton_multiplier,
    rectification,
    rho_inf,
    rho_t,
    untuned_exponential_warmup,
    untuned_linear_warmup,
)
from radam_repro.optim.registry import OPTIMIZERS, OptimInfo, build
from radam_repro.optim.schedules import Decay, Schedule, build_schedule, lambda_lr
from radam_repro.optim.variants import Adam, Adam2k, RAdam, SimplifiedRAdam

__all__ = [
    "OPTIMIZERS",
    "Adam",
    "Adam2k",
    "AdamFamily",
    "Decay",
    "OptimInfo",
    "RAdam",
    "Schedule",
    "SimplifiedRAdam",
    "build",
    "build_schedule",
    "hilton_multiplier",
    "lambda_lr",
    "rectification",
    "rho_inf",
    "rho_t",
    "untuned_exponential_warmup",
    "untuned_linear_warmup",
]
