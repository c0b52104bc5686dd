"""The run folder's contract: what training writes and the loggers, the report and the dashboard read.

::

    <run>/config.yaml     resolved config            <run>/meta.json     versions, git commit, seed, host
    <run>/metrics.jsonl   one JSON object per point  <run>/histograms/   step_*.json: log|g|, log|m|, log|v|
    <run>/checkpoints/    latest.pt + step_*.pt      <run>/summary.json  status, step, final/best metrics
    <run>/.lock           its owner (host, pid) and lease while a process runs it (radam_repro/folder_lock.py)
    <run>/previous-<time>/  an earlier run's files, moved aside by trainer.resume=false

JSON is strict (RFC 8259): a non-finite number is written as the string ``"NaN"``, ``"Infinity"`` or
``"-Infinity"`` and read back as a float (:func:`strict_json`, :func:`parse_strict_json`). ``summary.json``'s
``status`` is a :class:`Status`; ``best`` holds the best value of every score and loss of :data:`METRICS`.
This module imports neither torch nor the report: :mod:`radam_repro.run_dir` writes the folder for training,
:mod:`radam_repro.report.runs` reads it for the report and the dashboard.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# -- layout ----------------------------------------------------------------------------------------
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
HISTOGRAM_DIR = "histograms"
CHECKPOINT_DIR = "checkpoints"
LATEST_CHECKPOINT = "latest.pt"
LOCK_FILE = ".lock"
PREVIOUS_PREFIX = "previous-"
STEP_PREFIX = "step_"  # histograms/step_0000300.json, checkpoints/step_0000300.pt


def step_file(step: int, suffix: str) -> str:
    """The name of a per-step file: ``step_file(300, ".pt")`` is ``step_0000300.pt``."""
    return f"{STEP_PREFIX}{step:07d}{suffix}"


def step_of(path: Path) -> int:
    """The step in a :func:`step_file` name."""
    return int(path.stem.removeprefix(STEP_PREFIX))


# -- status ----------------------------------------------------------------------------------------
class Status:
    """``summary.json``'s status names (plain strings: JSON, W&B and pickles keep them as they are).

    The last two are never written, only read from what a folder holds.
    """

    COMPLETED = "completed"
    DIVERGED = "diverged"  # a non-finite loss or evaluation ended it: a result, not a crash
    FAILED = "failed"
    RUNNING = "running"
    INTERRUPTED = "interrupted"  # "running", but its process is gone (a dead pid, an expired lease)
    INCOMPLETE = "incomplete"  # no summary.json


STATUSES = (Status.COMPLETED, Status.DIVERGED, Status.FAILED, Status.RUNNING, Status.INTERRUPTED, Status.INCOMPLETE)
DONE = (Status.COMPLETED, Status.DIVERGED)  # a rerun has nothing to do
ENDED = (*DONE, Status.FAILED)  # the run's process has ended


# -- strict JSON -----------------------------------------------------------------------------------
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


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


def _revive(value: Any) -> Any:
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


def _revive_object(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: _revive(v) if isinstance(v, (str, list)) else v for k, v in obj.items()}


def parse_strict_json(text: str | bytes) -> Any:
    """The inverse of :func:`strict_json`: the strings "NaN", "Infinity", "-Infinity" read back as floats.

    Raises ValueError (json.JSONDecodeError) on malformed text.
    """
    return _revive(json.loads(text, object_hook=_revive_object))


# -- configs: reading config.yaml, run-specific keys ------------------------------------------------
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_config(text: str | bytes) -> Any:
    """config.yaml's content (YAML's safe loader, in C where available); ValueError when the text is not YAML."""
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as e:
        raise ValueError(f"{type(e).__name__}: {e}") from e


# The run-specific keys: what configs/radam_repro.yaml leaves out of run-folder names (paths, device, threads,
# logging cadence, logger); a resumed run may change them (train.check_resume_config). Grouping also ignores the seed.
_PRIMARY_CONFIG = Path(__file__).resolve().parent / "configs" / "radam_repro.yaml"
_HYDRA_JOB = yaml.safe_load(_PRIMARY_CONFIG.read_text())["hydra"]["job"]
RUN_SPECIFIC_KEYS = set(_HYDRA_JOB["config"]["override_dirname"]["exclude_keys"])
IGNORED_PREFIXES = ("logger.", "hydra.")
PATH_LIKE = re.compile(r"(^|[._])(dir|path|root|file|folder)$")
MISSING = "<missing>"


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


# -- metrics ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """What a logged value means.

    ``kind``: ``"score"`` (higher is better), ``"loss"`` (lower is better) or ``"count"``. Scores and losses
    have a best value (summary.json's ``best``, W&B's max / min summary). ``ranks``: how DDP ranks combine
    a per-step training value, ``"mean"`` or ``"sum"``. ``headline``: the metric's tier as a task's headline
    (the report's main column, the sweep table's columns): lower tiers first, then ``test`` before ``valid``,
    then the table's order; None: never the headline.
    """

    kind: str
    ranks: str = "mean"
    headline: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("score", "loss", "count"):
            raise ValueError(f"Metric kind={self.kind!r}: use score (higher is better), loss (lower) or count")
        if self.ranks not in ("mean", "sum"):
            raise ValueError(f"Metric ranks={self.ranks!r}: DDP ranks combine a value by mean or sum")


# name (the last part of a logged key: "valid/acc" -> "acc") -> what it means. A logged value without a row
# (lr, grad_norm, multiplier, adaptive_lr/*, ...) is plotted and averaged over ranks, and has no best value.
METRICS: dict[str, Metric] = {
    "acc": Metric("score", headline=1),  # accuracy in percent
    "bleu": Metric("score", headline=1),
    "ppl": Metric("loss", headline=1),
    "loss": Metric("loss", headline=2),
    "nll_loss": Metric("loss"),
    "ntokens": Metric("count", ranks="sum"),
}
EVAL_SPLITS = ("test", "valid")  # in the order a headline metric is looked for


def metric(key: str) -> Metric | None:
    """The table's row for a logged key (``valid/acc``, ``acc``), or None."""
    return METRICS.get(key.rsplit("/", 1)[-1])


def has_best(key: str) -> bool:
    """A score or a loss: a metric with a best value."""
    row = metric(key)
    return row is not None and row.kind in ("score", "loss")


def higher_is_better(key: str) -> bool:
    row = metric(key)
    return row is not None and row.kind == "score"


def rank_reduction(key: str) -> str:
    """How DDP ranks combine a per-step value of ``key``: "mean" (the default) or "sum"."""
    row = metric(key)
    return row.ranks if row is not None else "mean"


def better(key: str, new: float, old: float | None) -> bool:
    """Whether ``new`` replaces ``old`` as the best value of ``key`` (only scores and losses have one)."""
    if not has_best(key):
        return False
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    return new > old if higher_is_better(key) else new < old


def names_with_best() -> list[str]:
    """The names of every score and loss, in the table's order."""
    return [name for name in METRICS if has_best(name)]


def headline_metrics() -> list[str]:
    """``<split>/<name>`` keys in the order a task's headline metric is chosen (the first one it reports)."""
    rows = [
        (row.headline, s, i, f"{split}/{name}")
        for i, (name, row) in enumerate(METRICS.items())
        if row.headline is not None
        for s, split in enumerate(EVAL_SPLITS)
    ]
    return [key for *_, key in sorted(rows)]
