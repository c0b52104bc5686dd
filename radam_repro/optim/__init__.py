"""The paper's optimizer family, usable without the rest of the harness.

>>> from radam_repro.optim import RAdam, SimplifiedRAdam, Adam2k
>>> opt = RAdam(model.parameters(), lr=3e-4, betas=(0.9, 0.999), weight_decay=1e-4)

``build(cfg, params)`` turns an optimizer config (``configs/optimizer/*.yaml``) into an optimizer;
:mod:`radam_repro.optim.schedules` turns its ``warmup`` and a task's decay into a LambdaLR multiplier.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from radam_repro.optim.adam_family import AdamFamily
from radam_repro.optim.rectification import (
    hilton_multiplier,
    rectification,
    rho_inf,
    rho_t,
    untuned_exponential_warmup,
    untuned_linear_warmup,
)
from radam_repro.optim.schedules import Schedule, build_schedule, lambda_lr
from radam_repro.optim.variants import Adam, Adam2k, RAdam, SimplifiedRAdam

ALGORITHMS = ("adam", "adam_2k", "radam", "simplified_radam", "sgd")


def build(cfg: Mapping[str, Any], params: Iterable) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg["algorithm"]`` with the config's hyperparameters.

    ``sgd`` is torch.optim.SGD with momentum and coupled L2 weight decay, as the official CIFAR
    baseline; every Adam-family algorithm takes lr, betas, eps, weight_decay,
    decoupled_weight_decay and eps_placement.
    """
    algorithm = cfg.get("algorithm")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown optimizer algorithm {algorithm!r}; valid algorithms: {', '.join(ALGORITHMS)}")
    if algorithm == "sgd":
        if float(cfg["lr"]) < 0:
            raise ValueError(f"invalid lr={cfg['lr']!r}: must be in [0, inf)")
        return torch.optim.SGD(
            params,
            lr=float(cfg["lr"]),
            momentum=float(cfg.get("momentum", 0.9)),
            nesterov=bool(cfg.get("nesterov", False)),
            weight_decay=float(cfg.get("weight_decay", 0.0)),
        )
    common = dict(
        lr=float(cfg["lr"]),
        betas=tuple(float(b) for b in cfg.get("betas", (0.9, 0.999))),
        eps=float(cfg.get("eps", 1e-8)),
        weight_decay=float(cfg.get("weight_decay", 0.0)),
        decoupled_weight_decay=bool(cfg.get("decoupled_weight_decay", True)),
        eps_placement=str(cfg.get("eps_placement", "sqrt_v")),
    )
    if algorithm == "adam":
        return Adam(params, **common)
    if algorithm == "adam_2k":
        return Adam2k(params, freeze_steps=int(cfg.get("freeze_steps", 2000)), **common)
    if algorithm == "radam":
        return RAdam(
            params,
            threshold=float(cfg.get("threshold", 5.0)),
            degenerated_to_sgd=bool(cfg.get("degenerated_to_sgd", True)),
            **common,
        )
    return SimplifiedRAdam(params, **common)


__all__ = [
    "ALGORITHMS",
    "Adam",
    "Adam2k",
    "AdamFamily",
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
