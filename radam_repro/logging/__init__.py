"""Logging: local files always (the run folder), W&B in addition when ``logger=wandb``."""

from radam_repro.logging.sinks import Loggers

__all__ = ["Loggers"]
