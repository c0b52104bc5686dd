"""The training loop: one (optimizer, task, seed) cell, read top to bottom in :meth:`Loop.run`.

batches -> loss -> backward -> clip -> optimizer step -> schedule -> log -> evaluate -> checkpoint.
A run resumes from its folder's latest checkpoint (bit-identical on CPU: model, optimizer,
schedule, RNG, data position and :class:`LoopState` are restored) if the folder's config.yaml
describes the same run; a non-finite loss ends it as ``diverged``.
With ``trainer.devices=N`` (or under torchrun / SLURM tasks) N DDP ranks each train on a shard of
every global batch (:mod:`radam_repro.distributed`); rank 0 alone writes the run folder and evaluates.
"""

from __future__ import annotations

import math
import os
import platform
import random
import re
import socket
import subprocess
import sys
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel

from radam_repro import distributed, optim, tasks
from radam_repro.data.fetch import check_task_data
from radam_repro.distributed import Ranks
from radam_repro.errors import ConfigError, CorruptFile, UserError, kind_of
from radam_repro.loggers import Loggers, Silent
from radam_repro.loggers.diagnostics import UpdateSize, top_hessian_eigenvalue
from radam_repro.loggers.statistics import adaptive_lr_row, histogram_record, is_histogram_step
from radam_repro.optim.schedules import Decay
from radam_repro.preemption import Preemption
from radam_repro.run_dir import RunDir, RunFolderInUse, atomic_write
from radam_repro.run_folder import (
    CONFIG_FILE,
    DONE,
    META_FILE,
    MISSING,
    SUMMARY_FILE,
    Status,
    better,
    flatten,
    is_run_specific,
    parse_config,
    rank_reduction,
)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain containers (what ``torch.load(weights_only=True)`` accepts)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's: each rank owns one
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def run_metadata(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Versions, git commit, host and device: what a reader needs to reproduce the run."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            return None

    versions = {"python": platform.python_version()}
    for package in ("radam_repro", "torch", "torchvision", "numpy", "hydra-core", "omegaconf", "wandb", "submitit"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    status = git("status", "--porcelain")
    return {
        "versions": versions,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "host": socket.gethostname(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector kernels torch picked (AVX2, AVX512...)
        "torch_threads": torch.get_num_threads(),
        "seed": cfg.seed,
        "argv": sys.argv,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        **recipe_choice(),
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else the platform's), to tell why metrics of the same seed differ
    in the last bits on another machine; "cpu" when neither says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def recipe_choice() -> dict[str, str | None]:
    """``{"recipe": name}``: the ``recipe/<task>_<optimizer>.yaml`` Hydra composed into this run, ``None`` when the
    pair has none (the optimizer then runs with its class's defaults and the variant's YAML); ``{}`` outside Hydra."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if not (HydraConfig.initialized() and GlobalHydra.instance().is_initialized()):
        return {}
    name = HydraConfig.get().runtime.choices.get("recipe")  # the interpolated name, whether that file exists or not
    return {"recipe": name if name in GlobalHydra.instance().config_loader().get_group_options("recipe") else None}


def rows_from_eval(step: int, epoch: float, metrics: dict[str, float]) -> list[dict[str, Any]]:
    """``{"valid/loss": .., "test/acc": ..}`` -> one metrics.jsonl row per split."""
    by_split: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        split, _, name = key.rpartition("/")
        by_split.setdefault(split or "valid", {"step": step, "epoch": epoch, "split": split or "valid"})[name] = value
    return list(by_split.values())


class ConfigMismatch(UserError, ValueError):
    """The run folder holds another run than the one asked for."""


def validate(cfg: DictConfig) -> None:
    """Config values that would fail later (or misbehave silently): refused before the run folder is touched.

    ``cfg.task`` is replaced by its resolved, defaulted and checked form (:func:`radam_repro.tasks.config`), so the
    run folder's config.yaml records every value of the task.
    """
    cfg.task = tasks.config(cfg.task)
    t = cfg.trainer
    for key in ("log_every", "checkpoint_every"):
        if t[key] < 1:
            raise ValueError(f"trainer.{key}={t[key]} must be a positive number of steps")
    if t.eval_every is not None and t.eval_every < 1:
        raise ValueError(f"trainer.eval_every={t.eval_every} must be a positive number of steps (null: once per epoch)")
    if t.threads is not None and t.threads < 1:
        raise ValueError(f"trainer.threads={t.threads} must be >= 1 (or null: torch's default)")
    if t.max_steps is not None and t.max_steps <= 0:
        raise ValueError(f"trainer.max_steps={t.max_steps} must be a positive number of updates (null: the recipe's)")
    if t.final_eval_limit is not None and t.final_eval_limit < 0:
        raise ValueError(f"trainer.final_eval_limit={t.final_eval_limit} must be >= 0 (0 skips; null: the full one)")
    if t.keep_checkpoints < 0:
        raise ValueError(f"trainer.keep_checkpoints={t.keep_checkpoints} must be >= 0")
    if t.hessian_power_iters < 0:
        raise ValueError(f"trainer.hessian_power_iters={t.hessian_power_iters} must be >= 0 (0: off)")
    if t.precision not in PRECISIONS:
        raise ValueError(f"unknown trainer.precision={t.precision!r}; choose fp32, bf16 or fp16")
    try:  # the optimizer's and schedule's own checks (lr, betas, eps, threshold, warmup) on a stand-in parameter
        optim.build(cfg.optimizer, [torch.zeros(1, requires_grad=True)])
        optim.build_schedule(cfg.optimizer, Decay(), 1)
    except ValueError as e:
        raise ValueError(re.sub(r"^invalid (?=\w)", "invalid optimizer.", str(e))) from None


def preflight(cfg: DictConfig) -> None:
    """What can be checked before a run folder exists: the config values and the task's data files."""
    try:
        validate(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    check_task_data(cfg)


def check_resume_config(cfg: DictConfig, out_dir: Path) -> None:
    """A resumed run must be the folder's run: its config.yaml may differ only in run-specific keys.

    Where config.yaml was deleted, the config recorded in the checkpoint the run would resume is compared.
    Run-specific keys are those the run name leaves out (paths, device, threads, logging cadence, logger:
    :func:`radam_repro.run_folder.is_run_specific`). Raises :class:`ConfigMismatch` listing every
    other difference, before anything in the folder is written; an unreadable config.yaml is :class:`CorruptFile`.
    """
    path = Path(out_dir) / CONFIG_FILE
    if not cfg.trainer.resume:
        return
    if path.is_file():
        try:
            old = parse_config(path.read_bytes())
        except ValueError as e:  # not YAML, or not UTF-8 text
            raise CorruptFile(path, f"{path} is unreadable ({e}); start afresh with trainer.resume=false") from None
        if not isinstance(old, dict):
            raise CorruptFile(
                path, f"{path} holds {kind_of(old)}, not a config; start afresh with trainer.resume=false"
            )
        old = flatten(old)
    else:
        found = RunDir(out_dir).load_checkpoint()
        if found is None:
            return
        checkpoint, used = found
        if "config" not in checkpoint:
            raise ConfigMismatch(
                f"{path} is missing and {used} records no config (an earlier version wrote it): nothing says which "
                "run the checkpoint belongs to. Put config.yaml back, or start afresh with trainer.resume=false"
            )
        old = flatten(checkpoint["config"])
    new = flatten(OmegaConf.to_container(cfg, resolve=True))
    keys = [k for k in sorted(old.keys() | new.keys()) if not is_run_specific(k)]
    diffs = [
        f"  {k}: {old.get(k, MISSING)!r} (folder) -> {new.get(k, MISSING)!r} (now)"
        for k in keys
        if old.get(k, MISSING) != new.get(k, MISSING)
    ]
    if diffs:
        raise ConfigMismatch(
            f"{path.parent} holds a run with another config; resuming it would mix two runs. Differences:\n"
            + "\n".join(diffs)
            + "\nEither run this config in another folder (other overrides, or hydra.run.dir=...), "
            "or start afresh here with trainer.resume=false (the earlier run's files move to previous-<time>/)."
        )


def train(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run one cell into ``out_dir`` and return its summary (also written to summary.json)."""
    preflight(cfg)
    check_resume_config(cfg, Path(out_dir))
    if recipe_choice() == {"recipe": None}:
        print(
            f"[radam_repro] no recipe for task {cfg.task.name} with optimizer {cfg.optimizer.name}: "
            "the optimizer runs with its class's defaults and its variant's YAML (meta.json: recipe null)"
        )
    if distributed.must_spawn(cfg.trainer.devices):
        return _spawn(cfg, RunDir(out_dir))
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    with distributed.process_group(cfg.trainer.device, cfg.trainer.devices) as ranks:
        run = RunDir(out_dir)
        with run.lock(cfg.trainer.lock_lease_s) if ranks.is_main else nullcontext():
            prior = ranks.broadcast(_claim(cfg, run) if ranks.is_main else None)
            if prior and prior.get("status") in DONE:
                if ranks.is_main:
                    print(f"[radam_repro] {run.path} already {prior['status']}; nothing to do")
                return prior
            if ranks.is_main:
                _save_launch(cfg, run)
            seed_everything(cfg.seed)
            started = time.time()
            preemption = Preemption()  # after submitit installed its handlers: USR2/SIGTERM only set a flag now
            try:
                return Loop(cfg, run, ranks, started).run(preemption)
            except Exception as e:
                if ranks.is_main:
                    _record_failure(run, e, started)
                raise
            finally:
                preemption.restore()


def _claim(cfg: DictConfig, run: RunDir) -> dict[str, Any] | None:
    """Rank 0, holding the lock: tidy the folder; the earlier run's summary when resuming, else move that run aside."""
    run.remove_orphans()
    if cfg.trainer.resume:
        return run.read_summary()
    moved = run.move_aside()
    if moved:
        print(f"[radam_repro] trainer.resume=false: the earlier run's files are now in {moved}")
    return None


def _save_launch(cfg: DictConfig, run: RunDir) -> None:
    """Hydra's record of this launch, ``.hydra/{config,hydra,overrides}.yaml``, written once the run owns its folder.

    ``hydra.output_subdir`` is null, so Hydra itself writes nothing before the checks: a refused launch (another
    config, a live owner) leaves the folder as it was. Without a Hydra context (spawned ranks, the API) nothing.
    """
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg
    for name, node in (("config", cfg), ("hydra", hydra_cfg), ("overrides", hydra_cfg.hydra.overrides.task)):
        atomic_write(run.path / ".hydra" / f"{name}.yaml", OmegaConf.to_yaml(node))


def _record_failure(run: RunDir, error: Exception, started: float) -> None:
    """Write a ``failed`` summary that keeps what the run had reached (step, best, ...)."""
    try:
        last = {
            "step": 0,
            "total_steps": None,
            "final": {},
            "best": {},
            "diverged_step": None,
            **(run.read_summary() or {}),
        }
        run.write_summary(
            **{
                **last,
                "status": Status.FAILED,
                "error": f"{type(error).__name__}: {error}",
                "wall_s": time.time() - started,
            }
        )
    except (OSError, ValueError) as e:
        print(f"[radam_repro] could not record the failure in {run.path / SUMMARY_FILE}: {e}", file=sys.stderr)


def _spawn(cfg: DictConfig, run: RunDir) -> dict[str, Any]:
    """``trainer.devices=N`` outside a launcher: N rank processes run :func:`train`; returns rank 0's summary."""
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # children have no Hydra context
    with run.lock(cfg.trainer.lock_lease_s):  # a folder in use is refused here, before .hydra/ is written
        _save_launch(cfg, run)
    preemption = Preemption()  # SLURM signals the whole step: this parent waits until the ranks have saved
    try:
        distributed.spawn(train, cfg.trainer.devices, cfg.trainer.device, resolved, run.path)
    except Exception as e:  # a rank other than 0 failed: rank 0 was stopped before it could say so
        if preemption.received is not None:  # the ranks saved and left on the signal: requeue / exit here
            preemption.stop()
        with suppress(RunFolderInUse), run.lock(cfg.trainer.lock_lease_s):  # unless another live run owns it
            prior = run.read_summary() or {}
            if prior.get("status") in (None, Status.RUNNING):
                run.write_summary(**{**prior, "status": Status.FAILED, "error": str(e).strip().splitlines()[-1]})
        raise
    finally:
        preemption.restore()
    return run.read_summary()


@dataclass
class LoopState:
    """Where the loop is: what a checkpoint carries besides the model, optimizer, schedule and scaler."""

    step: int = 0
    best: dict[str, float] = field(default_factory=dict)  # the best value of each score so far
    wall_s: float = 0.0  # training time of the sessions before this one
    # the current logging interval, this rank's: checkpointed so that a resumed run logs the same rows
    pending: list[torch.Tensor] = field(default_factory=list)  # losses
    extras: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # the task's per-batch metrics
    grad_norms: list[torch.Tensor] = field(default_factory=list)

    def interval(self) -> dict[str, Any]:
        """This rank's logging interval as plain floats."""
        return dict(
            pending=[float(x) for x in self.pending],
            grad_norms=[float(x) for x in self.grad_norms],
            extras={k: [float(x) for x in v] for k, v in self.extras.items()},
        )

    @classmethod
    def restore(cls, checkpoint: dict[str, Any], own: dict[str, Any], device: torch.device) -> LoopState:
        def tensors(values: list[float]) -> list[torch.Tensor]:
            return [torch.tensor(x, device=device) for x in values]

        return cls(
            checkpoint["step"],
            checkpoint["best"],
            checkpoint["wall_s"],
            tensors(own["pending"]),
            {k: tensors(v) for k, v in own["extras"].items()},
            tensors(own["grad_norms"]),
        )


class Loop:
    """One run: the task, model, optimizer, schedule and :class:`LoopState`; :meth:`run` is the loop."""

    def __init__(self, cfg: DictConfig, run: RunDir, ranks: Ranks, started: float) -> None:
        self.cfg, self.folder, self.ranks, self.started, self.device = cfg, run, ranks, started, ranks.device
        if ranks.is_main:
            run.write_config(cfg)  # first, so that a run failing while it builds is still readable and groupable
        self.task = tasks.build(cfg.task, seed=cfg.seed, device=self.device)
        self.model = self.task.model.to(self.device)
        if ranks.rank:
            seed_everything(distributed.rank_seed(cfg.seed, ranks.rank))
        self.optimizer = optim.build(cfg.optimizer, self.model.parameters())
        schedule = optim.build_schedule(cfg.optimizer, self.task.decay, self.task.total_steps)
        self.scheduler = optim.lambda_lr(self.optimizer, schedule)
        amp_dtype = PRECISIONS[cfg.trainer.precision]
        self.autocast = torch.autocast(self.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
        self.max_steps = min(self.task.total_steps, cfg.trainer.max_steps or self.task.total_steps)
        self.eval_every = cfg.trainer.eval_every or self.task.steps_per_epoch
        self.keep = max(cfg.trainer.keep_checkpoints, self.task.checkpoints_needed)
        self.names = {p: n for n, p in self.model.named_parameters()}
        update_size = cfg.trainer.update_stats and ranks.is_main
        self.update_size = UpdateSize(dict(self.model.named_parameters())) if update_size else None
        self.update_stats: dict[str, torch.Tensor] = {}  # the last logging step's, read by log_interval
        self.state = LoopState()
        self.logs: Loggers | Silent = Silent()
        self.tick = (time.time(), 0)  # time and step of the last logged training row

    def run(self, preemption: Preemption) -> dict[str, Any]:
        cfg, task, ranks, state = self.cfg, self.task, self.ranks, self.restore()
        if ranks.is_main:
            self.folder.write_json(
                META_FILE,
                {**run_metadata(cfg, self.device), "world_size": ranks.world, "resumed_from_step": state.step or None},
            )
            self.logs = Loggers(cfg, self.folder)
        self.summary(Status.RUNNING)
        train_model = ranks.wrap(self.model)  # DDP over the ranks, or the model itself
        train_model = torch.compile(train_model) if cfg.trainer.compile else train_model
        progress = _progress(cfg, state.step, self.max_steps) if ranks.is_main else None
        self.tick = (time.time(), state.step)
        self.model.train()
        while state.step < self.max_steps:
            epoch = state.step // task.steps_per_epoch
            for batch in task.train_batches(epoch, state.step % task.steps_per_epoch):
                self.train_step(train_model, batch)
                step, last = state.step, state.step == self.max_steps
                if step % cfg.trainer.log_every == 0 or last:
                    if (diverged := self.log_interval(progress)) is not None:
                        return diverged
                if step % self.eval_every == 0 and not last:
                    if (diverged := self.evaluate()) is not None:
                        return diverged
                if step % cfg.trainer.checkpoint_every == 0 or last:
                    self.save()
                # SLURM's USR2 (time limit, scancel --signal=USR2) or SIGTERM: checkpoint, then requeue or exit;
                # with several ranks the flag is all-reduced at logging steps so that every rank stops together
                if not last and (ranks.world == 1 or step % cfg.trainer.log_every == 0) and preemption.requested():
                    self.save()
                    preemption.stop()
                if last:
                    break
        if progress is not None:
            progress.close()
        return self.finish(preemption)

    def train_step(self, train_model: torch.nn.Module, batch: Any) -> None:
        """One update: forward, backward, clip, optimizer and schedule step; the losses wait for the logging step."""
        state, ranks, optimizer = self.state, self.ranks, self.optimizer
        batch = self.task.shard(batch, ranks.rank, ranks.world) if ranks.world > 1 else batch
        state.step += 1
        log_step = state.step % self.cfg.trainer.log_every == 0 or state.step == self.max_steps
        diagnose = ranks.is_main and is_histogram_step(state.step)
        hessian = self.hessian_eigenvalue(batch) if diagnose and self.cfg.trainer.hessian_power_iters else None
        with self.autocast:
            loss, metrics = self.task.loss(train_model, batch)
        self.scaler.scale(loss).backward()
        if self.task.clip_norm > 0:
            self.scaler.unscale_(optimizer)
            state.grad_norms.append(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.task.clip_norm))
        if self.update_size is not None and log_step:
            self.update_size.before()
        self.scaler.step(optimizer)
        if self.update_size is not None and log_step:
            self.update_stats = self.update_size.after()
        self.scaler.update()
        self.scheduler.step()
        state.pending.append(loss.detach().float())
        for key, value in metrics.items():
            state.extras.setdefault(key, []).append(value.detach().float())
        row = {}
        if diagnose and self.cfg.trainer.histograms:
            record = histogram_record(state.step, optimizer, self.names)
            self.logs.histogram(state.step, record)
            row = {"multiplier": _multiplier(optimizer), **adaptive_lr_row(record)}
        if hessian is not None:
            row["hessian/top_eigenvalue"] = hessian.item()
        if row:
            self.logs.log([{**self.position(), "split": "train", **row}])
        optimizer.zero_grad(set_to_none=True)

    def hessian_eigenvalue(self, batch: Any) -> torch.Tensor:
        """``hessian/top_eigenvalue`` of the training loss on ``batch`` at the current parameters, in fp32, by
        ``trainer.hessian_power_iters`` power-iteration steps. The run's RNGs and the model's buffers (BatchNorm's
        running statistics) are left as they were: training goes on as without it."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        buffers = [b.clone() for b in self.model.buffers()]
        start = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.state.step)
        rngs = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])
        with rngs, sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no double backward
            eigenvalue = top_hessian_eigenvalue(
                lambda: self.task.loss(self.model, batch)[0], params, self.cfg.trainer.hessian_power_iters, start
            )
        for buffer, saved in zip(self.model.buffers(), buffers):
            buffer.copy_(saved)
        return eigenvalue.detach()

    def log_interval(self, progress: Any) -> dict[str, Any] | None:
        """The logging block: one training row averaged over the interval and the ranks.

        A non-finite loss ends the run as ``diverged`` (its summary is returned).
        """
        state, ranks = self.state, self.ranks
        losses = ranks.mean(torch.stack([torch.as_tensor(x, device=self.device) for x in state.pending])).tolist()
        bad = next((i for i, x in enumerate(losses) if not math.isfinite(x)), None)
        if bad is not None:
            step, loss = state.step - len(losses) + bad + 1, losses[bad]
            self.logs.log([{"step": step, "epoch": step / self.task.steps_per_epoch, "split": "train", "loss": loss}])
            return self.diverge(step, "loss", {"train/loss": loss})
        now, (tick, tick_step) = time.time(), self.tick
        row = {
            **self.position(),
            "split": "train",
            "loss": sum(losses) / len(losses),
            "lr": self.optimizer.param_groups[0]["lr"],
            "multiplier": _multiplier(self.optimizer),
            "steps_per_s": (state.step - tick_step) / max(now - tick, 1e-9),
        }
        reduce = {k: ranks.sum if rank_reduction(k) == "sum" else ranks.mean for k in state.extras}
        row.update({k: reduce[k](torch.stack(v)).mean().item() for k, v in state.extras.items()})
        if state.grad_norms:
            row["grad_norm"] = torch.stack(state.grad_norms).mean().item()
        if self.update_stats:
            row.update(zip(self.update_stats, torch.stack(list(self.update_stats.values())).tolist()))
            self.update_stats = {}
        self.logs.log([row])
        if progress is not None:
            progress.update(state.step - progress.n)
            progress.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.3g}", it_s=f"{row['steps_per_s']:.1f}")
        state.pending, state.extras, state.grad_norms, self.tick = [], {}, [], (now, state.step)
        return None

    def diverge(self, step: int, what: str, final: dict[str, float]) -> dict[str, Any]:
        """End the run as ``diverged`` at ``step``: ``what`` (the loss, an evaluation) was not finite."""
        if self.ranks.is_main:
            print(f"[radam_repro] diverged: non-finite {what} at step {step}")
        result = self.summary(Status.DIVERGED, diverged_step=step, final=final)
        self.logs.finish(result)
        return result

    def evaluate(self) -> dict[str, Any] | None:
        """The evaluation block: rank 0 evaluates and logs; the other ranks wait.

        A non-finite metric (a blown-up model's loss or perplexity) ends the run as ``diverged`` (its summary is returned).
        """
        metrics = None
        if self.ranks.is_main:
            self.model.eval()
            metrics = self.task.evaluate(self.model)
            self.model.train()
            self.log_eval(metrics)
        metrics = self.ranks.broadcast(metrics)
        return None if _finite(metrics) else self.diverge(self.state.step, "evaluation", metrics)

    def finish(self, preemption: Preemption) -> dict[str, Any]:
        """The task's final evaluation on the kept checkpoints, then the ``completed`` (or ``diverged``) summary.

        The last checkpoint is saved: a stop signal here ends the run at once, and a resumed run evaluates again.
        """
        if not self.ranks.is_main:
            return self.summary(Status.COMPLETED)  # rank 0 alone runs the final evaluation and writes the result
        self.model.eval()
        limit = self.cfg.trainer.final_eval_limit
        how = {None: "full", 0: "skipped: the regular evaluation instead (trainer.final_eval_limit=0)"}.get(
            limit, f"bounded: at most {limit} test items (trainer.final_eval_limit={limit}), not the real one"
        )
        print(f"[radam_repro] final evaluation ({how})", flush=True)
        with preemption.immediate():
            if limit == 0:
                final = self.task.evaluate(self.model)
            else:
                final = self.task.final_evaluation(self.model, self.folder.path, self.folder.step_checkpoints(), limit)
        self.log_eval(final)
        if not _finite(final):
            return self.diverge(self.state.step, "final evaluation", final)
        result = self.summary(Status.COMPLETED, final=final, final_eval=how)
        self.logs.finish(result)
        return result

    def log_eval(self, metrics: dict[str, float]) -> None:
        state = self.state
        self.logs.log(rows_from_eval(state.step, state.step / self.task.steps_per_epoch, metrics))
        state.best.update({k: v for k, v in metrics.items() if better(k, v, state.best.get(k))})

    def save(self) -> None:
        """Rank 0 saves the shared state and each rank's own (RNG, task stream, logging interval), and the summary."""
        own = self.ranks.gather(dict(rng=rng_state(), task=self.task.state_dict(), **self.state.interval()))
        if self.ranks.is_main:
            state = self.state
            self.folder.save_checkpoint(
                dict(
                    step=state.step,
                    best=state.best,
                    wall_s=self.wall_s(),
                    metrics_bytes=self.folder.metrics_size(),
                    config=OmegaConf.to_container(
                        self.cfg, resolve=True, enum_to_str=True
                    ),  # what a resume is compared with
                    model=self.model.state_dict(),
                    optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler_state(),
                    scaler=self.scaler.state_dict(),
                    ranks=own,
                ),
                state.step,
                self.keep,
            )
            self.summary(Status.RUNNING)

    def scheduler_state(self) -> dict[str, Any]:
        """LambdaLR's state without the multiplier objects: the schedule is a pure function of the (checked) config."""
        state = self.scheduler.state_dict()
        return {**state, "lr_lambdas": [None] * len(state["lr_lambdas"])}

    def restore(self) -> LoopState:
        """Continue from the folder's newest loadable checkpoint; without one, start at step 0 with no earlier rows."""
        found = self.folder.load_checkpoint(map_location=self.device) if self.cfg.trainer.resume else None
        if found is None:
            if self.ranks.is_main:
                for stale in (self.folder.metrics_path, *self.folder.histograms.glob("*.json")):
                    stale.unlink(missing_ok=True)
            return self.state
        checkpoint, path = found
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        own = _rank_state(checkpoint, self.ranks, self.folder)
        self.task.load_state_dict(own["task"])
        set_rng_state(own["rng"])
        self.state = LoopState.restore(checkpoint, own, self.device)
        if self.ranks.is_main:
            self.folder.truncate_metrics(checkpoint["metrics_bytes"])
            used = path.relative_to(self.folder.path)
            print(f"[radam_repro] resuming {self.folder.path} from step {self.state.step} ({used})")
        return self.state

    def summary(self, status: str, **extra: Any) -> dict[str, Any]:
        out = dict(
            status=status,
            step=self.state.step,
            total_steps=self.task.total_steps,
            max_steps=self.max_steps,
            best=self.state.best,
            wall_s=self.wall_s(),
            error=None,
            diverged_step=None,
            final={},
        )
        out.update(extra)
        if self.ranks.is_main:
            self.folder.write_summary(**out)
        return out

    def position(self) -> dict[str, float]:
        return {"step": self.state.step, "epoch": self.state.step / self.task.steps_per_epoch}

    def wall_s(self) -> float:
        return self.state.wall_s + time.time() - self.started


def _rank_state(checkpoint: dict[str, Any], ranks: Ranks, run: RunDir) -> dict[str, Any]:
    """This rank's RNG, task-stream state and unlogged losses from a checkpoint written by as many ranks."""
    saved = checkpoint["ranks"]
    if len(saved) != ranks.world:
        raise ValueError(
            f"{run.checkpoints} was written by {len(saved)} DDP process(es), this run has {ranks.world}; "
            f"resume it with trainer.devices={len(saved)}, or start afresh with trainer.resume=false"
        )
    return saved[ranks.rank]


def _finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values() if isinstance(v, (int, float)))


def _multiplier(optimizer: torch.optim.Optimizer) -> float:
    """The step multiplier of the first group (RAdam's r_t, Hilton's factor; 0 when frozen/skipped)."""
    stats = getattr(optimizer, "group_stats", None)
    value = stats[0]["multiplier"] if stats else 1.0
    return float(value) if value is not None else float("nan")


def _progress(cfg: DictConfig, step: int, max_steps: int):
    if not cfg.trainer.progress:
        return None
    from tqdm.auto import tqdm

    desc = f"{cfg.task.name}/{cfg.optimizer.name}/s{cfg.seed}"
    return tqdm(total=max_steps, initial=step, desc=desc, dynamic_ncols=True)
