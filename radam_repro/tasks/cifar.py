"""Task ``cifar10``: ResNet-20 on CIFAR-10 with the official recipe (RAdam repository, cifar_imagenet/recipes.md and cifar.py).

Batch 128 (last partial batch kept, 391 updates per epoch on the full set), 164 epochs with
lr x0.1 at the start of epochs 81 and 122, test accuracy after every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import MISSING, DictConfig, OmegaConf

from radam_repro import tasks
from radam_repro.data.cifar import augment, load_cifar10, normalize
from radam_repro.models.resnet_cifar import CifarResNet
from radam_repro.tasks.base import Decay, Task, bounded


@dataclass
class CifarConfig:
    name: str = "cifar10"
    data_dir: str = MISSING  # the folder holding cifar-10-batches-py (task/cifar10.yaml: under data_root)
    download: bool = False
    check_integrity: bool = True  # false accepts md5-different files (e.g. the staged partial set)
    depth: int = 20
    epochs: int = bounded(164, 1)
    decay_epochs: list[int] = field(default_factory=lambda: [81, 122])  # 0-based: lr x decay_gamma from these epochs on
    decay_gamma: float = bounded(0.1, 0.0)
    batch_size: int = bounded(128, 1)
    eval_batch_size: int = bounded(100, 1)
    train_subset: Optional[int] = bounded(None, 1)  # keep only the first N training images (small CPU variants)
    clip_norm: float = bounded(0.0, 0.0)


class CifarTask(Task):
    def __init__(self, cfg: CifarConfig, seed: int, device: torch.device) -> None:
        self.cfg, self.seed, self.device = cfg, seed, device
        kwargs = dict(download=cfg.download, check_integrity=cfg.check_integrity)
        train_x, train_y = load_cifar10(cfg.data_dir, True, **kwargs)
        if cfg.train_subset:
            train_x, train_y = train_x[: cfg.train_subset], train_y[: cfg.train_subset]
        self.train_x, self.train_y = train_x.to(device), train_y.to(device)
        test_x, test_y = load_cifar10(cfg.data_dir, False, **kwargs)
        self.test_x, self.test_y = normalize(test_x.to(device)), test_y.to(device)
        self.model = CifarResNet(cfg.depth).to(device)
        self.steps_per_epoch = math.ceil(len(self.train_x) / cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.clip_norm = cfg.clip_norm
        self.decay = Decay(
            kind="step", milestones=[e * self.steps_per_epoch for e in cfg.decay_epochs], gamma=cfg.decay_gamma
        )

    def _generator(self, *key: int) -> torch.Generator:
        return torch.Generator().manual_seed(hash((self.seed, *key)) % 2**63)

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.train_x), generator=self._generator(epoch)).to(self.device)
        bs = self.cfg.batch_size
        for i in range(start, self.steps_per_epoch):
            idx = order[i * bs : (i + 1) * bs]
            images = augment(self.train_x[idx], self._generator(epoch, i))
            yield normalize(images), self.train_y[idx]

    def loss(self, model, batch):
        images, labels = batch
        logits = model(images)
        return F.cross_entropy(logits, labels), {"acc": (logits.argmax(1) == labels).float().mean() * 100}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        total_loss, correct = 0.0, 0
        for i in range(0, len(self.test_x), self.cfg.eval_batch_size):
            logits = model(self.test_x[i : i + self.cfg.eval_batch_size])
            labels = self.test_y[i : i + self.cfg.eval_batch_size]
            total_loss += F.cross_entropy(logits.float(), labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
        n = len(self.test_x)
        return {"test/loss": total_loss / n, "test/acc": 100.0 * correct / n}


def build(cfg: DictConfig, *, seed: int, device: torch.device) -> CifarTask:
    """``task=cifar10``; the config goes through :func:`radam_repro.tasks.config` (resolved, defaulted, checked)."""
    return CifarTask(OmegaConf.to_object(tasks.config(cfg)), seed, device)
