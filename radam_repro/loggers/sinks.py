"""Where logged points go: the run folder always, W&B (online / offline / disabled) optionally.

W&B only mirrors the run folder: if it cannot start or fails mid-run, a warning is printed and
training goes on with local files intact.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

from omegaconf import DictConfig, OmegaConf

from radam_repro.run_dir import RunDir


class WandbSink:
    """A W&B run grouped by experiment, tagged by task / variant / seed, resumable by id."""

    def __init__(self, cfg: DictConfig, run: RunDir) -> None:
        import wandb

        self.wandb = wandb
        run_id = hashlib.sha1(str(run.path.resolve()).encode()).hexdigest()[:16]
        config = OmegaConf.to_container(cfg, resolve=True)
        config.update(variant=cfg.optimizer.name, task_name=cfg.task.name)
        self.run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            mode=cfg.logger.mode,
            dir=str(run.path),
            id=run_id,
            resume="allow",
            group=cfg.group,
            job_type=cfg.task.name,
            name=run.path.name,
            tags=[cfg.task.name, cfg.optimizer.name, f"seed{cfg.seed}", *cfg.logger.tags],
            config=config,
        )

    def log(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            split = row.get("split", "train")
            payload = {f"{split}/{k}": v for k, v in row.items() if k not in ("step", "split")}
            self.run.log(payload, step=row["step"])

    def histogram(self, step: int, record: dict[str, Any]) -> None:
        payload = {
            f"hist/{name}": self.wandb.Histogram(np_histogram=(h["counts"], h["edges"]))
            for name, h in record["hist"].items()
            if h["counts"]
        }
        self.run.log(payload, step=step)

    def finish(self, summary: dict[str, Any]) -> None:
        for key, value in summary.get("final", {}).items():
            self.run.summary[f"final/{key}"] = value
        self.run.summary["status"] = summary["status"]
        self.run.finish(exit_code=0 if summary["status"] in ("completed", "diverged") else 1)


class Loggers:
    """Fan-out to the run folder and, if configured, W&B."""

    def __init__(self, cfg: DictConfig, run: RunDir) -> None:
        self.run = run
        self.wandb: WandbSink | None = None
        if cfg.logger.kind == "wandb" and cfg.logger.mode != "disabled":
            try:
                self.wandb = WandbSink(cfg, run)
            except Exception as e:  # noqa: BLE001 - W&B must never cost a run
                warnings.warn(f"W&B could not start ({type(e).__name__}: {e}); logging to {run.path} only")
        elif cfg.logger.kind not in ("local", "wandb"):
            raise ValueError(f"unknown logger.kind={cfg.logger.kind!r}; choose local or wandb")

    def _mirror(self, method: str, *args: Any) -> None:
        if self.wandb is None:
            return
        try:
            getattr(self.wandb, method)(*args)
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"W&B {method} failed ({type(e).__name__}: {e}); W&B disabled for this run")
            self.wandb = None

    def log(self, rows: list[dict[str, Any]]) -> None:
        self.run.append_metrics(rows)
        self._mirror("log", rows)

    def histogram(self, step: int, record: dict[str, Any]) -> None:
        self.run.write_histogram(step, record)
        self._mirror("histogram", step, record)

    def finish(self, summary: dict[str, Any]) -> None:
        self._mirror("finish", summary)


class Silent:
    """The loggers of ranks other than 0: rank 0 alone writes the run folder and W&B."""

    def log(self, rows: list[dict[str, Any]]) -> None:
        pass

    def histogram(self, step: int, record: dict[str, Any]) -> None:
        pass

    def finish(self, summary: dict[str, Any]) -> None:
        pass
