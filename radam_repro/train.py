"""The training loop: one (optimizer, task, seed) cell, read top to bottom.

batches -> loss -> backward -> clip -> optimizer step -> schedule -> log -> evaluate -> checkpoint.
A run resumes from its folder's latest checkpoint (bit-identical on CPU: model, optimizer,
schedule, RNG and data position are restored); a non-finite loss ends it as ``diverged``.
With ``trainer.devices=N`` (or under torchrun / SLURM tasks) N DDP ranks each train on a shard of
every global batch (:mod:`radam_repro.distributed`); rank 0 alone writes the run folder and evaluates.
"""

from __future__ import annotations

import math
import os
import platform
import random
import socket
import subprocess
import sys
import time
from contextlib import nullcontext, suppress
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from radam_repro import distributed, optim, tasks
from radam_repro.distributed import Ranks
from radam_repro.loggers import Loggers, Silent
from radam_repro.loggers.statistics import adaptive_lr_row, histogram_record, is_histogram_step
from radam_repro.preemption import Preemption
from radam_repro.run_dir import RunDir, RunFolderInUse

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
HIGHER_IS_BETTER = ("acc", "bleu")
SCORES = ("loss", "nll_loss", "ppl", "acc", "bleu")  # metrics tracked in summary["best"]
COUNTS = ("ntokens",)  # per-step metrics that add up over DDP ranks; the others are averaged


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's: each rank owns one
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "seed": cfg.seed,
        "argv": sys.argv,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def better(key: str, new: float, old: float | None) -> bool:
    if not key.split("/")[-1].startswith(SCORES):
        return False
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    return new > old if key.split("/")[-1].startswith(HIGHER_IS_BETTER) else new < old


def rows_from_eval(step: int, epoch: float, metrics: dict[str, float]) -> list[dict[str, Any]]:
    """``{"valid/loss": .., "test/acc": ..}`` -> one metrics.jsonl row per split."""
    by_split: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        split, _, name = key.rpartition("/")
        by_split.setdefault(split or "valid", {"step": step, "epoch": epoch, "split": split or "valid"})[name] = value
    return list(by_split.values())


def train(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run one cell into ``out_dir`` and return its summary (also written to summary.json)."""
    if distributed.must_spawn(cfg.trainer.devices):
        return _spawn(cfg, RunDir(out_dir))
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    with distributed.process_group(cfg.trainer.device, cfg.trainer.devices) as ranks:
        run = RunDir(out_dir)
        with run.lock() if ranks.is_main else nullcontext():
            prior = ranks.broadcast(run.read_summary() if ranks.is_main else None)
            if cfg.trainer.resume and prior and prior.get("status") in ("completed", "diverged"):
                if ranks.is_main:
                    print(f"[radam_repro] {run.path} already {prior['status']}; nothing to do")
                return prior
            if cfg.trainer.max_steps is not None and cfg.trainer.max_steps <= 0:
                raise ValueError(f"trainer.max_steps={cfg.trainer.max_steps} must be a positive number of updates (or null: the recipe's)")
            if cfg.trainer.precision not in PRECISIONS:
                raise ValueError(f"unknown trainer.precision={cfg.trainer.precision!r}; choose fp32, bf16 or fp16")
            seed_everything(cfg.seed)
            started = time.time()
            preemption = Preemption()  # after submitit installed its handlers: USR2/SIGTERM only set a flag now
            try:
                return _train(cfg, run, ranks, started, preemption)
            except Exception as e:
                if ranks.is_main:  # keep what the run had reached (step, best, ...) from its last summary
                    last = {"step": 0, "total_steps": None, "final": {}, "best": {}, "diverged_step": None,
                            **(run.read_summary() or {})}
                    run.write_summary(**{**last, "status": "failed", "error": f"{type(e).__name__}: {e}",
                                         "wall_s": time.time() - started})
                raise
            finally:
                preemption.restore()


def _spawn(cfg: DictConfig, run: RunDir) -> dict[str, Any]:
    """``trainer.devices=N`` outside a launcher: N rank processes run :func:`train`; their result is rank 0's summary."""
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # children have no Hydra context
    preemption = Preemption()  # SLURM signals the whole step: this parent waits until the ranks have saved
    try:
        distributed.spawn(train, cfg.trainer.devices, cfg.trainer.device, resolved, run.path)
    except Exception as e:  # a rank other than 0 failed: rank 0 was stopped before it could say so
        if preemption.received is not None:  # the ranks saved and left on the signal: requeue / exit here
            preemption.stop()
        with suppress(RunFolderInUse), run.lock():  # unless the folder belongs to another live run
            prior = run.read_summary() or {}
            if prior.get("status") in (None, "running"):
                run.write_summary(**{**prior, "status": "failed", "error": str(e).strip().splitlines()[-1]})
        raise
    finally:
        preemption.restore()
    return run.read_summary()


def _train(cfg: DictConfig, run: RunDir, ranks: Ranks, started: float, preemption: Preemption) -> dict[str, Any]:
    device = ranks.device
    if ranks.is_main:
        run.write_config(cfg)  # first, so that a run failing while it builds is still readable and groupable
    task = tasks.build(cfg.task, seed=cfg.seed, device=device)
    model = task.model.to(device)
    if ranks.rank:
        seed_everything(distributed.rank_seed(cfg.seed, ranks.rank))
    optimizer = optim.build(cfg.optimizer, model.parameters())
    total_steps = task.total_steps
    scheduler = optim.lambda_lr(optimizer, optim.build_schedule(cfg.optimizer, task.decay, total_steps))
    max_steps = min(total_steps, cfg.trainer.max_steps or total_steps)
    eval_every = cfg.trainer.eval_every or task.steps_per_epoch
    amp_dtype = PRECISIONS[cfg.trainer.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    names = {p: n for n, p in model.named_parameters()}

    step, best, pending, wall_before = 0, {}, [], 0.0
    # the current logging interval's values, checkpointed so that a resumed run logs the same rows
    extras: dict[str, list[torch.Tensor]] = {}
    grad_norms: list[torch.Tensor] = []
    checkpoint = run.load_checkpoint(map_location=device) if cfg.trainer.resume else None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        own = _rank_state(checkpoint, ranks, run)
        task.load_state_dict(own["task"])
        set_rng_state(own["rng"])
        step, best, pending, wall_before = checkpoint["step"], checkpoint["best"], own["pending"], checkpoint["wall_s"]
        extras = {k: [torch.tensor(x, device=device) for x in v] for k, v in own["extras"].items()}
        grad_norms = [torch.tensor(x, device=device) for x in own["grad_norms"]]
        if ranks.is_main:
            run.truncate_metrics(step)
            print(f"[radam_repro] resuming {run.path} from step {step}")
    elif ranks.is_main:
        for stale in (run.metrics_path, *run.histograms.glob("*.json"), *run.checkpoints.glob("*.pt")):
            stale.unlink(missing_ok=True)
    if ranks.is_main:
        run.write_json("meta.json", {**run_metadata(cfg, device), "resumed_from_step": step or None, "world_size": ranks.world})
    logs = Loggers(cfg, run) if ranks.is_main else Silent()

    def summary(status: str, **extra: Any) -> dict[str, Any]:
        out = dict(status=status, step=step, total_steps=total_steps, max_steps=max_steps, best=best,
                   wall_s=wall_before + time.time() - started, error=None, diverged_step=None, final={})
        out.update(extra)
        if ranks.is_main:
            run.write_summary(**out)
        return out

    def save() -> None:
        """Rank 0 writes the shared state and every rank's own (RNG, task stream, unlogged losses)."""
        own = ranks.gather(dict(rng=rng_state(), task=task.state_dict(), pending=[float(x) for x in pending],
                                extras={k: [float(x) for x in v] for k, v in extras.items()},
                                grad_norms=[float(x) for x in grad_norms]))
        if ranks.is_main:
            state = dict(step=step, model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                         scaler=scaler.state_dict(), ranks=own, best=best, wall_s=wall_before + time.time() - started)
            run.save_checkpoint(state, step, keep=cfg.trainer.keep_checkpoints)

    def evaluate() -> None:
        if ranks.is_main:
            model.eval()
            metrics = task.evaluate(model)
            model.train()
            logs.log(rows_from_eval(step, step / task.steps_per_epoch, metrics))
            best.update({k: v for k, v in metrics.items() if better(k, v, best.get(k))})
        ranks.barrier()

    summary("running")
    train_model = ranks.wrap(model)  # DDP over the ranks, or the model itself
    train_model = torch.compile(train_model) if cfg.trainer.compile else train_model
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    progress = _progress(cfg, step, max_steps) if ranks.is_main else None
    tick, tick_step = time.time(), step
    model.train()
    while step < max_steps:
        epoch = step // task.steps_per_epoch
        for batch in task.train_batches(epoch, step % task.steps_per_epoch):
            batch = task.shard(batch, ranks.rank, ranks.world) if ranks.world > 1 else batch
            step += 1
            with autocast:
                loss, metrics = task.loss(train_model, batch)
            scaler.scale(loss).backward()
            if task.clip_norm > 0:
                scaler.unscale_(optimizer)
                grad_norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), task.clip_norm))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            pending.append(loss.detach().float())
            for key, value in metrics.items():
                extras.setdefault(key, []).append(value.detach().float())
            if ranks.is_main and cfg.trainer.histograms and is_histogram_step(step):
                record = histogram_record(step, optimizer, names)
                logs.histogram(step, record)
                logs.log([{"step": step, "epoch": step / task.steps_per_epoch, "split": "train",
                           "multiplier": _multiplier(optimizer), **adaptive_lr_row(record)}])
            optimizer.zero_grad(set_to_none=True)

            if step % cfg.trainer.log_every == 0 or step == max_steps:
                losses = ranks.mean(torch.stack([torch.as_tensor(x, device=device) for x in pending])).tolist()
                bad = next((i for i, x in enumerate(losses) if not math.isfinite(x)), None)
                if bad is not None:
                    diverged_at = step - len(losses) + bad + 1
                    logs.log([{"step": diverged_at, "epoch": diverged_at / task.steps_per_epoch, "split": "train", "loss": losses[bad]}])
                    if ranks.is_main:
                        print(f"[radam_repro] diverged: non-finite loss at step {diverged_at}")
                    result = summary("diverged", diverged_step=diverged_at, final={"train/loss": losses[bad]})
                    logs.finish(result)
                    return result
                now = time.time()
                row = {"step": step, "epoch": step / task.steps_per_epoch, "split": "train",
                       "loss": sum(losses) / len(losses), "lr": optimizer.param_groups[0]["lr"],
                       "multiplier": _multiplier(optimizer), "steps_per_s": (step - tick_step) / max(now - tick, 1e-9)}
                reduce = {k: ranks.sum if k in COUNTS else ranks.mean for k in extras}
                row.update({k: reduce[k](torch.stack(v)).mean().item() for k, v in extras.items()})
                if grad_norms:
                    row["grad_norm"] = torch.stack(grad_norms).mean().item()
                logs.log([row])
                if progress is not None:
                    progress.update(step - progress.n)
                    progress.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.3g}", it_s=f"{row['steps_per_s']:.1f}")
                pending, extras, grad_norms, tick, tick_step = [], {}, [], now, step
            if step % eval_every == 0 and step < max_steps:
                evaluate()
            if step % cfg.trainer.checkpoint_every == 0 or step == max_steps:
                save()
            # SLURM's USR2 (time limit, scancel --signal=USR2) or SIGTERM: checkpoint, then requeue or exit;
            # with several ranks the flag is all-reduced at logging steps so that every rank stops together
            if step < max_steps and (ranks.world == 1 or step % cfg.trainer.log_every == 0) and preemption.requested():
                save()
                preemption.stop()
            if step >= max_steps:
                break
    if progress is not None:
        progress.close()
    if not ranks.is_main:
        return summary("completed")  # rank 0 alone runs the final evaluation and writes the result
    model.eval()
    final = task.final_evaluation(model, run.path)
    logs.log(rows_from_eval(step, step / task.steps_per_epoch, final))
    best.update({k: v for k, v in final.items() if better(k, v, best.get(k))})
    result = summary("completed", final=final)
    logs.finish(result)
    return result


def _rank_state(checkpoint: dict[str, Any], ranks: Ranks, run: RunDir) -> dict[str, Any]:
    """This rank's RNG, task-stream state and unlogged losses from a checkpoint written by as many ranks."""
    saved = checkpoint["ranks"]
    if len(saved) != ranks.world:
        raise ValueError(f"{run.checkpoints} was written by {len(saved)} DDP process(es), this run has {ranks.world}; "
                         f"resume it with trainer.devices={len(saved)}, or start afresh with trainer.resume=false")
    return saved[ranks.rank]


def _multiplier(optimizer: torch.optim.Optimizer) -> float:
    """The step multiplier of the first group (RAdam's r_t, Hilton's factor; 0 when frozen/skipped)."""
    stats = getattr(optimizer, "group_stats", None)
    value = stats[0]["multiplier"] if stats else 1.0
    return float(value) if value is not None else float("nan")


def _progress(cfg: DictConfig, step: int, max_steps: int):
    if not cfg.trainer.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=max_steps, initial=step, desc=f"{cfg.task.name}/{cfg.optimizer.name}/s{cfg.seed}", dynamic_ncols=True)
