"""The run folder's contract, shared by training, the loggers, the report and the dashboard."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

STATUSES = ("completed", "diverged", "failed", "running", "interrupted", "incomplete")
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

# The run-specific keys: what configs/radam_repro.yaml leaves out of run-folder names (paths, device, threads,
# logging cadence, logger); a resumed run may change them (train.check_resume_config). Grouping also ignores the seed.
_PRIMARY_CONFIG = Path(__file__).resolve().parent / "configs" / "radam_repro.yaml"
_HYDRA_JOB = yaml.safe_load(_PRIMARY_CONFIG.read_text())["hydra"]["job"]
RUN_SPECIFIC_KEYS = set(_HYDRA_JOB["config"]["override_dirname"]["exclude_keys"])
IGNORED_PREFIXES = ("logger.", "hydra.")
PATH_LIKE = re.compile(r"(^|[._])(dir|path|root|file|folder)$")
MISSING = "<missing>"

HIGHER_IS_BETTER = ("acc", "bleu")
SCORES = ("loss", "nll_loss", "ppl", "acc", "bleu")  # metrics tracked in summary["best"]
COUNTS = ("ntokens",)  # per-step metrics that add up over DDP ranks; the others are averaged
HEADLINE_METRICS = (
    "test/acc",
    "test/bleu",
    "test/ppl",
    "valid/acc",
    "valid/bleu",
    "valid/ppl",
    "test/loss",
    "valid/loss",
)
COLUMNS = ("train/loss", "valid/loss", "valid/acc", "test/acc", "test/bleu", "valid/ppl", "test/ppl")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def strict_json(obj: Any, **kwargs: Any) -> str:
    """JSON without bare NaN/Infinity: non-finite floats become the strings "NaN", "Infinity", "-Infinity"."""
    return json.dumps(_finite(obj), allow_nan=False, default=str, **kwargs)


def _decode(obj: dict[str, Any]) -> dict[str, Any]:
    """JSON object hook: the strict-JSON spellings of non-finite numbers back to floats."""
    return {k: NON_FINITE[v] if isinstance(v, str) and v in NON_FINITE else v for k, v in obj.items()}


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 1e-3}}`` -> ``{"optimizer.lr": 1e-3}``; lists become tuples (hashable)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def is_run_specific(key: str) -> bool:
    """A flattened config key that describes where and how a run runs, not what it computes."""
    return key in RUN_SPECIFIC_KEYS or key.startswith(IGNORED_PREFIXES) or bool(PATH_LIKE.search(key))


def higher_is_better(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1].startswith(HIGHER_IS_BETTER)


def better(key: str, new: float, old: float | None) -> bool:
    if not key.split("/")[-1].startswith(SCORES):
        return False
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    return new > old if key.split("/")[-1].startswith(HIGHER_IS_BETTER) else new < old
