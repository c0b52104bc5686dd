"""The optimizer registry: one :class:`OptimInfo` per algorithm (in the spirit of timm's optimizer factory).

An entry names the class, says in one line what it does, and lists the hyperparameters that apply with
their defaults (read from the class's ``__init__`` signature, so a default lives in one place). The
Hydra schema of each algorithm's configs (:mod:`radam_repro.config`) and :func:`build` are derived from
it, so a new variant is one class + one line here + one YAML in ``configs/optimizer/``.

>>> from radam_repro.optim.registry import build
>>> opt = build({"algorithm": "radam", "lr": 3e-4, "betas": [0.9, 0.999]}, model.parameters())
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

import torch

from radam_repro.optim.variants import Adam, Adam2k, RAdam, SimplifiedRAdam


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: Any  # float, int, bool, str, list[float], or Optional of one of them
    default: Any


@dataclass(frozen=True)
class OptimInfo:
    """An algorithm: its name in configs (``optimizer.algorithm``), class, description and hyperparameters."""

    name: str
    cls: type[torch.optim.Optimizer]
    description: str
    hyperparameters: tuple[Hyperparameter, ...] = field(default=())

    def kwargs(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor's keyword arguments from a config; a missing key takes the registry's default."""
        out = {}
        for hp in self.hyperparameters:
            value = cfg.get(hp.name, hp.default)
            out[hp.name] = tuple(value) if value is not None and _is_list(hp.type) else value
        return out


def _is_list(annotation: Any) -> bool:
    annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)  # Optional[X]
    return typing.get_origin(annotation) in (list, tuple)


def _config_type(annotation: Any) -> Any:
    """A signature annotation as a type OmegaConf accepts: tuples become lists, ``X | None`` Optional[X]."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return Optional[_config_type(inner)]
    if typing.get_origin(annotation) is tuple:
        return list[args[0]]
    return annotation


def from_signature(cls: type, exclude: tuple[str, ...] = ()) -> tuple[Hyperparameter, ...]:
    """Every keyword argument of ``cls.__init__`` that has a default (``params`` and ``**kwargs`` excluded)."""
    hints = typing.get_type_hints(cls.__init__)
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.default is inspect.Parameter.empty or p.kind is p.VAR_KEYWORD or p.name in exclude:
            continue
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        out.append(Hyperparameter(p.name, _config_type(hints[p.name]), default))
    return tuple(out)


OPTIMIZERS: dict[str, OptimInfo] = {
    info.name: info
    for info in (
        OptimInfo("adam", Adam, "Adam (Kingma & Ba); with a warmup schedule: Adam-warmup, with eps 1e-4: Adam-eps",
                  from_signature(Adam)),
        OptimInfo("adam_2k", Adam2k, "Adam whose first freeze_steps updates only accumulate v_t (paper Sec. 3.2)",
                  from_signature(Adam2k)),
        OptimInfo("radam", RAdam, "Rectified Adam (paper Alg. 2): r_t-scaled step once rho_t > threshold, "
                  "SGD-momentum (or no step) before", from_signature(RAdam)),
        OptimInfo("simplified_radam", SimplifiedRAdam,
                  "Adam with lr x sqrt(2/(1+beta2^t) - 1) (J. Hilton 2019): no threshold, no SGD phase",
                  from_signature(SimplifiedRAdam)),
        OptimInfo("sgd", torch.optim.SGD, "SGD with momentum and coupled L2 weight decay (the official CIFAR baseline)",
                  (Hyperparameter("lr", float, 0.1), Hyperparameter("momentum", float, 0.9),
                   Hyperparameter("nesterov", bool, False), Hyperparameter("weight_decay", float, 0.0))),
    )
}


def get(name: str) -> OptimInfo:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer algorithm {name!r}; valid algorithms: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def build(cfg: Mapping[str, Any], params: Iterable) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg["algorithm"]`` with the config's hyperparameters (others: class defaults)."""
    info = get(cfg.get("algorithm"))
    return info.cls(params, **info.kwargs(cfg))
