"""Paper tasks: ``config(cfg.task)`` resolves and validates a task's config, ``build(...)`` returns its :class:`Task`.

Each entry maps ``task.name`` to ``module:ConfigClass:builder``; the config class (a dataclass) holds the task's
defaults and bounds and is the Hydra schema of ``configs/task/<name>.yaml`` (``task/_<name>``, see
:mod:`radam_repro.config`), which holds only what differs (and the paths under ``data_root``). A new task is one
module (task class, config dataclass, builder) + one line here + one YAML.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from radam_repro.tasks.base import Decay, Task, check_bounds

BUILDERS = {
    "cifar10": "radam_repro.tasks.cifar:CifarConfig:build",
    "nmt": "radam_repro.tasks.translation:NMTConfig:build",
    "nmt_multi30k": "radam_repro.tasks.translation:NMTConfig:build",
    "nmt_synthetic": "radam_repro.tasks.translation:SyntheticConfig:build_synthetic",
    "lm1b": "radam_repro.tasks.language_model:LanguageModelConfig:build",
    "lm1b_small": "radam_repro.tasks.language_model:LanguageModelConfig:build",
}


def _entry(name: str) -> tuple[type, Callable[..., Task]]:
    if name not in BUILDERS:
        raise ValueError(f"unknown task.name={name!r}; valid names: {', '.join(sorted(BUILDERS))}")
    module, schema, builder = BUILDERS[name].split(":")
    module = importlib.import_module(module)
    return getattr(module, schema), getattr(module, builder)


def schema(name: str) -> type:
    """The config dataclass of task ``name``: its keys, types, defaults and bounds."""
    return _entry(name)[0]


def config(cfg: DictConfig) -> DictConfig:
    """The task config, the one place every task's config goes through: interpolations resolved (``data_root``),
    merged into the task's dataclass (its defaults; an unknown key or a wrong type fails by name) and every number
    checked against its bounds (``task.batch_size=0 must be >= 1``)."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    merged = OmegaConf.merge(OmegaConf.structured(schema(cfg.get("name"))), plain)
    check_bounds(merged)
    return merged


def build(cfg: DictConfig, *, seed: int, device: torch.device) -> Task:
    """Build the task named ``cfg.name`` (its builder validates the config through :func:`config`)."""
    _, builder = _entry(cfg.get("name"))
    return builder(cfg, seed=seed, device=device)


__all__ = ["BUILDERS", "Decay", "Task", "build", "config", "schema"]
