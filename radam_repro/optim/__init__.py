"""The paper's optimizer family, usable without the rest of the harness.

>>> from radam_repro.optim import RAdam, SimplifiedRAdam, Adam2k
>>> opt = RAdam(model.parameters(), lr=3e-4, betas=(0.9, 0.999), weight_decay=1e-4)

``build(cfg, params)`` turns an optimizer config (``configs/optimizer/*.yaml``) into an optimizer through
the registry (:mod:`radam_repro.optim.registry`; ``python -m radam_repro.optim --list`` prints it);
:mod:`radam_repro.optim.schedules` turns its ``warmup`` and a task's decay into a LambdaLR multiplier.
Every module of this package is imported here, so a class file decorated with ``@register`` is all a new
algorithm needs in Python.
"""

from __future__ import annotations

import importlib
import pkgutil

from radam_repro.optim.adam_family import AdamFamily
from radam_repro.optim.rectification import (
    hilton_multiplier,
    rectification,
    rho_inf,
    rho_t,
    untuned_exponential_warmup,
    untuned_linear_warmup,
)
from radam_repro.optim.registry import OPTIMIZERS, OptimInfo, build, register
from radam_repro.optim.schedules import Decay, Schedule, build_schedule, lambda_lr
from radam_repro.optim.sgd import SGD
from radam_repro.optim.variants import Adam, Adam2k, GIAdam, RAdam, SimplifiedRAdam

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "OPTIMIZERS",
    "Adam",
    "Adam2k",
    "AdamFamily",
    "Decay",
    "GIAdam",
    "OptimInfo",
    "RAdam",
    "SGD",
    "Schedule",
    "SimplifiedRAdam",
    "build",
    "build_schedule",
    "hilton_multiplier",
    "lambda_lr",
    "rectification",
    "register",
    "rho_inf",
    "rho_t",
    "untuned_exponential_warmup",
    "untuned_linear_warmup",
]
