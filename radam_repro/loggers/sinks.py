"""Where logged points go: the run folder always, W&B (online / offline / disabled) optionally.

W&B only mirrors the run folder: if it cannot start (an unreachable server is given
``logger.init_timeout`` seconds, plus about 2 s to import W&B and start its service) or fails mid-run, a
warning is printed and training goes on with local files intact. W&B's own SDK telemetry is turned off: it
would probe the server once more at exit with a fixed 10 s timeout, past ``logger.init_timeout``. Names match the TensorBoard dashboard (``python -m radam_repro.dashboard``):
``<split>/<metric>`` scalars and ``hist/<name>`` histograms against the optimizer step ``step``,
``final/<metric>`` and ``best/<metric>`` in the summary.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from contextlib import suppress
from typing import Any

from omegaconf import DictConfig, OmegaConf

from radam_repro.run_dir import RunDir
from radam_repro.run_folder import DONE, flatten, has_best, higher_is_better

STEP = "step"  # every chart's x-axis: the optimizer step


def wandb_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config flattened to ``optimizer.name``, ``task.name``, ``seed``, ... (W&B's group-by keys)."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}


def wandb_mode(cfg: DictConfig) -> str:
    """``logger.mode`` as a string (the schema holds it as :class:`radam_repro.config.WandbMode`)."""
    return getattr(cfg.logger.mode, "value", cfg.logger.mode)


class WandbSink:
    """A W&B run grouped by experiment, tagged by task / variant / seed, resumable by id."""

    def __init__(self, cfg: DictConfig, run: RunDir) -> None:
        import wandb

        with suppress(ImportError):  # wandb >= 0.31: its telemetry would hold the process 10 s at exit
            from wandb.analytics.opentelemetry.opentelemetry_proxy import disable as disable_wandb_telemetry

            disable_wandb_telemetry()
        self.wandb = wandb
        run_id = hashlib.sha1(str(run.path.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            mode=wandb_mode(cfg),
            dir=os.environ.get("WANDB_DIR") or str(run.path),  # WANDB_DIR, when set, wins
            id=run_id,
            resume="allow",
            group=cfg.group,
            job_type=cfg.task.name,
            name=run.path.name,
            tags=[cfg.task.name, cfg.optimizer.name, f"seed{cfg.seed}", *cfg.logger.tags],
            config=wandb_config(cfg),
            settings=wandb.Settings(init_timeout=float(cfg.logger.init_timeout)),
        )
        self.run.define_metric(STEP)
        self.run.define_metric("*", step_metric=STEP)
        self.defined: set[str] = set()

    def _define(self, keys: list[str]) -> None:
        """Scores and losses (radam_repro.run_folder.METRICS) keep their best value as the summary: max or min."""
        for key in keys:
            if key not in self.defined and has_best(key):
                self.run.define_metric(key, step_metric=STEP, summary="max" if higher_is_better(key) else "min")
            self.defined.add(key)

    def log(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            split = row.get("split", "train")
            payload = {f"{split}/{k}": v for k, v in row.items() if k not in ("step", "split")}
            self._define(list(payload))
            self.run.log({STEP: row["step"], **payload})

    def histogram(self, step: int, record: dict[str, Any]) -> None:
        payload = {
            f"hist/{name}": self.wandb.Histogram(np_histogram=(h["counts"], h["edges"]))
            for name, h in record["hist"].items()
            if h["counts"]
        }
        self.run.log({STEP: step, **payload})

    def finish(self, summary: dict[str, Any]) -> None:
        for kind in ("final", "best"):
            for key, value in (summary.get(kind) or {}).items():
                self.run.summary[f"{kind}/{key}"] = value
        self.run.summary["status"] = summary["status"]
        self.run.finish(exit_code=0 if summary["status"] in DONE else 1)


class Loggers:
    """Fan-out to the run folder and, if configured, W&B."""

    def __init__(self, cfg: DictConfig, run: RunDir) -> None:
        self.run = run
        self.wandb: WandbSink | None = None
        if cfg.logger.kind == "wandb" and wandb_mode(cfg) != "disabled":
            started = time.monotonic()
            try:
                self.wandb = WandbSink(cfg, run)
            except Exception as e:  # noqa: BLE001 - W&B must never cost a run
                warnings.warn(
                    f"W&B could not start within {time.monotonic() - started:.1f} s "
                    f"(logger.init_timeout={cfg.logger.init_timeout}; {type(e).__name__}: {e}); "
                    f"logging to {run.path} only",
                    stacklevel=2,
                )
        elif cfg.logger.kind not in ("local", "wandb"):
            raise ValueError(f"unknown logger.kind={cfg.logger.kind!r}; choose local or wandb")

    def _mirror(self, method: str, *args: Any) -> None:
        if self.wandb is None:
            return
        try:
            getattr(self.wandb, method)(*args)
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"W&B {method} failed ({type(e).__name__}: {e}); W&B disabled for this run", stacklevel=2)
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
