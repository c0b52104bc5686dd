"""Paper tasks: ``build(cfg.task, seed=..., device=...)`` returns a :class:`~radam_repro.tasks.base.Task`.

Each entry maps ``task.name`` to ``module:function``; modules are imported lazily so that a
CIFAR run never imports the NMT stack.
"""

from __future__ import annotations

import importlib

import torch
from omegaconf import DictConfig

from radam_repro.tasks.base import Decay, Task

BUILDERS = {
    "cifar10": "radam_repro.tasks.cifar:build",
    "nmt": "radam_repro.tasks.translation:build",
    "nmt_multi30k": "radam_repro.tasks.translation:build",
    "nmt_synthetic": "radam_repro.tasks.translation:build_synthetic",
    "lm1b": "radam_repro.tasks.language_model:build",
    "lm1b_small": "radam_repro.tasks.language_model:build",
    "lm_wikitext2": "radam_repro.tasks.language_model:build",
}


def build(cfg: DictConfig, *, seed: int, device: torch.device) -> Task:
    """Build the task named ``cfg.name`` (validated against the task's structured config)."""
    name = cfg.get("name")
    if name not in BUILDERS:
        raise ValueError(f"unknown task.name={name!r}; valid names: {', '.join(sorted(BUILDERS))}")
    module, function = BUILDERS[name].split(":")
    return getattr(importlib.import_module(module), function)(cfg, seed=seed, device=device)


__all__ = ["BUILDERS", "Decay", "Task", "build"]
