"""The optimizer registry: ``@register("name")`` next to a class (as fairseq's ``register_optimizer``, timm).

An entry names the class, says in one line what it does (the class docstring's first line) and lists the
hyperparameters that apply with their defaults, read from the signature of the class and of the bases its
``**kwargs`` reach, so a default lives in the class alone. The Hydra schema of each algorithm's configs
(:mod:`radam_repro.config`), the fairseq plugin's options, ``python -m radam_repro.optim --list`` and
:func:`build` are derived from it: a new algorithm is its class file in ``radam_repro/optim/`` (imported by the
package) + one YAML in ``configs/optimizer/``; a new variant of an algorithm is one YAML.

>>> from radam_repro.optim.registry import build
>>> opt = build({"algorithm": "radam", "lr": 3e-4, "betas": [0.9, 0.999]}, model.parameters())
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import torch


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
        """The constructor's keyword arguments from a config; a missing key takes the class's default."""
        out = {}
        for hp in self.hyperparameters:
            value = cfg.get(hp.name, hp.default)
            out[hp.name] = tuple(value) if value is not None and _is_list(hp.type) else value
        return out


OPTIMIZERS: dict[str, OptimInfo] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: register an optimizer class as ``optimizer.algorithm=name``.

    Refuses a name already taken (naming both classes) and a class that is not a ``torch.optim.Optimizer``.
    """

    def decorate(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise TypeError(f"cannot register {cls!r} as optimizer {name!r}: it is not a torch.optim.Optimizer class")
        if name in OPTIMIZERS:
            taken = OPTIMIZERS[name].cls
            raise ValueError(
                f"optimizer name {name!r} is taken by {_qualname(taken)}; cannot register {_qualname(cls)} under it "
                "(choose another name)"
            )
        description = (inspect.getdoc(cls) or cls.__name__).splitlines()[0]
        OPTIMIZERS[name] = OptimInfo(name, cls, description, from_signature(cls))
        return cls

    return decorate


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


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


def _type_of(default: Any) -> Any:
    """The config type of an unannotated keyword, from its default (``None``: any value)."""
    if isinstance(default, tuple):
        return list[type(default[0])] if default else list[Any]
    return Any if default is None else type(default)


def from_signature(cls: type) -> tuple[Hyperparameter, ...]:
    """Every keyword argument with a default of ``cls.__init__`` and, while it passes ``**kwargs`` on, of its bases.

    A base's keywords come first; a subclass's default for the same name wins. An unannotated keyword takes the
    type of its default.
    """
    found: dict[str, Hyperparameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except (NameError, TypeError):  # an annotation that cannot be evaluated: typed by its default instead
            hints = {}
        params = inspect.signature(init).parameters.values()
        own = {
            p.name: Hyperparameter(p.name, _config_type(hints.get(p.name, _type_of(p.default))), _plain(p.default))
            for p in params
            if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
        }
        found = {**own, **found}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return tuple(found.values())


def _plain(default: Any) -> Any:
    return list(default) if isinstance(default, tuple) else default


def get(name: str) -> OptimInfo:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer algorithm {name!r}; valid algorithms: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def build(cfg: Mapping[str, Any], params: Iterable) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg["algorithm"]`` with the config's hyperparameters (others: class defaults)."""
    info = get(cfg.get("algorithm"))
    return info.cls(params, **info.kwargs(cfg))
