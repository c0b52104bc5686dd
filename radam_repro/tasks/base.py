"""The contract between a paper task and the training loop.

A task owns its model, data, loss and evaluation; the loop in ``radam_repro/train.py`` only
sees this interface. Everything a task returns is deterministic given ``(seed, epoch, batch
index)``, so a run resumed from a checkpoint replays exactly the batches an uninterrupted
run would have seen.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from radam_repro.distributed import shard_rows
from radam_repro.optim.schedules import Decay


def perplexity(nll: float) -> float:
    """exp(nll); inf where it overflows (a blown-up model: the loop then ends the run as ``diverged``)."""
    try:
        return math.exp(nll)
    except OverflowError:
        return math.inf


def bounded(default: Any, low: float, high: float | None = None) -> Any:
    """A config field whose value (unless null) must lie in [low, high]; :func:`check_bounds` enforces it."""
    return dataclasses.field(default=default, metadata={"bounds": (low, high)})


def check_bounds(cfg: DictConfig, prefix: str = "task") -> None:
    """Raise ValueError naming the key (``task.batch_size=0 must be >= 1``) for a value outside its field's bounds."""
    for f in dataclasses.fields(OmegaConf.get_type(cfg)):
        value, key = cfg[f.name], f"{prefix}.{f.name}"
        if isinstance(value, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(value)):
            check_bounds(value, key)
        low, high = f.metadata.get("bounds", (None, None))
        if value is None or low is None:
            continue
        if value < low or (high is not None and value > high):
            allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ValueError(f"{key}={value} must be {allowed}")


class Task:
    """One (model, data, loss, evaluation) cell of the paper's grid.

    Subclasses set ``model``, ``steps_per_epoch`` and ``total_steps`` in ``__init__`` and
    implement :meth:`train_batches`, :meth:`loss` and :meth:`evaluate`.
    """

    model: nn.Module
    steps_per_epoch: int
    total_steps: int
    clip_norm: float = 0.0  # 0 disables gradient-norm clipping
    decay: Decay = Decay()
    checkpoints_needed: int = 0  # step checkpoints final_evaluation reads (the loop keeps at least this many)

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Yield the training batches of ``epoch`` (0-based), skipping the first ``start``.

        Must be a pure function of (task seed, epoch, batch index): skipping ``start`` batches
        yields exactly what a full pass would have yielded from index ``start`` on, without
        paying for the skipped ones where possible. Batches are already on the task's device.
        """
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar loss to back-propagate and extra per-batch metrics as 0-d tensors.

        ``model`` may be the task's model wrapped (DDP, torch.compile): always call it, never
        ``self.model``, inside this method. Metrics stay on the device (no ``.item()``); the
        loop averages them over its logging interval.
        """
        raise NotImplementedError

    def shard(self, batch: Any, rank: int, world: int) -> Any:
        """Rank ``rank``'s part of the global ``batch`` when ``world`` DDP processes train together.

        Default: slice ``rank`` of ``world`` equal slices along dim 0 of every tensor (tuple, list
        or dict batches); a batch size not divisible by ``world`` is an error. With equal shards a
        per-shard mean loss keeps DDP's averaged gradient (1/W)·Σ_r ∇mean_r equal to ∇mean of the
        global batch. Override where the batch has another layout or carries totals (token counts).
        Layers that mix samples (BatchNorm) see only the shard's statistics: there it is approximate.
        """
        return shard_rows(batch, rank, world, dim=0)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation/test metrics, keys prefixed by split, e.g. ``{"valid/loss": .., "test/acc": ..}``."""
        raise NotImplementedError

    def final_evaluation(self, model: nn.Module, run_dir: Path, checkpoints: list[Path]) -> dict[str, float]:
        """Extra evaluation at the end of training (e.g. checkpoint averaging and beam search).

        ``checkpoints``: the kept step checkpoints, oldest first (the last :attr:`checkpoints_needed` at
        least); ``run_dir`` takes any output files. Default: :meth:`evaluate`.
        """
        return self.evaluate(model)

    def state_dict(self) -> dict[str, Any]:
        """Data-stream state that a checkpoint must carry besides the step (e.g. an LSTM's hidden state)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
