"""Logging: local files always (the run folder), W&B in addition when ``logger=wandb``."""

from radam_repro.loggers.sinks import Loggers, Silent

__all__ = ["Loggers", "Silent"]
