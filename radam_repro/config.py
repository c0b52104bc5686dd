"""Structured configs: the schema Hydra validates every composed config against.

``configs/radam_repro.yaml`` (the primary config; not named ``config``, which fairseq stores in Hydra's
ConfigStore when imported) starts from ``_config_schema`` (stored here in Hydra's ConfigStore), so a
typo or a wrong type (``optimizer.lr=abc``, ``trainer.max_stepz=3``) fails before any work with
the offending key; an unknown group choice (``optimizer=radm``) fails with Hydra's list of the
valid choices. Each task's config dataclass (its defaults) is stored as ``task/_<task name>``: a task YAML starts
from it (``defaults: [_nmt, _self_]``) and holds only what differs; :func:`radam_repro.tasks.config` resolves
and checks a composed task config.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from radam_repro import tasks
from radam_repro.optim.registry import OPTIMIZERS, OptimInfo


@dataclass
class WarmupConfig:
    kind: str = "none"  # none | linear | exponential | untuned_linear | untuned_exponential
    steps: int = 0  # W for linear, tau for exponential
    init_lr: float = 0.0  # fairseq --warmup-init-lr (absolute lr at update 0)


@dataclass
class TrainerConfig:
    max_steps: Optional[int] = None  # a budget that cuts any recipe short (schedules keep the recipe's length)
    device: str = "auto"  # auto (cuda if present) | cpu | cuda | cuda:N
    devices: int = (
        1  # N > 1: DDP over N processes (nccl on GPU, gloo on CPU), same global batch (radam_repro/distributed.py)
    )
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with a GradScaler)
    compile: bool = False  # torch.compile the model
    eval_every: Optional[int] = None  # steps between evaluations; None: once per epoch
    log_every: int = 20  # steps between logged training points
    checkpoint_every: int = 1000  # steps between checkpoints (and one at the end)
    keep_checkpoints: int = (
        1  # step checkpoints kept besides latest.pt, at least what the task's final evaluation needs
    )
    histograms: bool = True  # log|g|, log|m|, log|v| histograms at the paper's steps
    update_stats: bool = True  # update/*: relative, angular and RMS update size at the logging steps
    hessian_power_iters: int = 0  # > 0: hessian/top_eigenvalue at the histogram steps by this many power iterations
    threads: Optional[int] = None  # torch CPU threads; None: torch's default
    resume: bool = True  # resume from the run folder's latest checkpoint; false moves an earlier run aside
    lock_lease_s: float = 300.0  # the folder lock is stale once untouched this long (its owner refreshes it)
    progress: bool = True  # tqdm progress bar
    # smoke runs: at most N test items in the final evaluation (NMT: sentences decoded); 0: the regular evaluation
    # instead. summary.json's final_eval says which ran, so a bounded result is never taken for the real one.
    final_eval_limit: Optional[int] = None


class WandbMode(Enum):
    """``logger.mode``: an Enum, so that a typo fails while Hydra composes, naming the key and the valid values."""

    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class LoggerConfig:
    kind: str = "local"  # local | wandb (local files are always written)
    mode: WandbMode = WandbMode.offline  # wandb: online | offline | disabled
    project: str = "radam_repro"
    entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 30.0  # s wandb.init may wait for a server (+ ~2 s to start W&B); then local files only


@dataclass
class Config:
    optimizer: Any = MISSING  # typed by its algorithm's schema (optimizer_schema), chosen in the variant's defaults
    task: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 1
    group: str = "adhoc"  # names the sweep folder and the W&B group (experiment configs set it)
    data_root: str = "data"
    run_root: str = "runs"


def optimizer_schema(info: OptimInfo) -> type:
    """The structured config of one algorithm: name, algorithm, warmup and the hyperparameters that apply.

    Stored as ``optimizer/_<algorithm>``; a variant's YAML starts from it (``defaults: [_radam, _self_]``) and
    holds only what differs, so a key that does not apply (``momentum`` for Adam) or a wrong type fails early.
    """
    fields = [("name", str, MISSING), ("algorithm", str, info.name)]
    fields += [
        (
            hp.name,
            hp.type,
            field(default_factory=lambda d=hp.default: list(d)) if isinstance(hp.default, list) else hp.default,
        )
        for hp in info.hyperparameters
    ]
    fields.append(("warmup", WarmupConfig, field(default_factory=WarmupConfig)))
    return make_dataclass(f"{info.cls.__name__}Config", fields)


def register() -> None:
    store = ConfigStore.instance()
    store.store(name="_config_schema", node=Config)
    for info in OPTIMIZERS.values():
        store.store(group="optimizer", name=f"_{info.name}", node=optimizer_schema(info))
    for name in tasks.BUILDERS:
        store.store(group="task", name=f"_{name}", node=tasks.schema(name), package="task")


@contextmanager
def without_foreign_optimizer_schemas() -> Iterator[None]:
    """Hide what fairseq stores in Hydra's global ConfigStore while composing in-process.

    fairseq registers ``optimizer/adam``, ``optimizer/sgd``, ... schemas when imported; Hydra would merge them with
    our YAMLs of the same name and fail. The CLI never imports fairseq; in-process composition (tests, benchmarks)
    must not depend on what else the process imported.
    """
    optimizers = ConfigStore.instance().repo.get("optimizer", {})
    foreign = {name: node for name, node in optimizers.items() if not name.startswith("_")}
    for name in foreign:
        del optimizers[name]
    try:
        yield
    finally:
        optimizers.update(foreign)
