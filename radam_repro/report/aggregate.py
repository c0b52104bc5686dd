"""Group runs over seeds and summarise them: mean ± sample std (ddof = 1) of each metric.

Runs are averaged together only when their configs are equal except for the seed and run-specific
keys (paths, device, threads, logging cadence: :data:`IGNORED_KEYS`). The grouping keys are the
flattened config keys whose values differ between runs, minus those; they are printed by the CLI.
Only ``completed`` runs with a finite value enter a mean; the other statuses are counted.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from radam_repro.report.runs import Run
from radam_repro.run_folder import ENDED, MISSING, RUN_SPECIFIC_KEYS, Status, flatten, headline_metrics, is_run_specific

IGNORED_KEYS = {"seed", "group", *RUN_SPECIFIC_KEYS}
# Grouping keys come in this order (the paper's axes), then alphabetically.
KEY_ORDER = (
    "task.name",
    "optimizer.name",
    "optimizer.lr",
    "optimizer.warmup.kind",
    "optimizer.warmup.steps",
    "optimizer.betas",
    "optimizer.eps",
    "optimizer.freeze_steps",
    "optimizer.threshold",
)


def is_ignored(key: str, extra: tuple[str, ...] = ()) -> bool:
    return key in IGNORED_KEYS or is_run_specific(key) or any(key == e or key.startswith(e + ".") for e in extra)


@dataclass
class Stat:
    """mean ± sample std over n finite values; std is None for a single value."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if not values:
            return None
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))

    def format(self, digits: int = 4) -> str:
        spread = "n/a" if self.std is None else f"{self.std:.{digits}g}"
        return f"{self.mean:.{digits}g} ± {spread}"


@dataclass
class Group:
    """Runs whose configs differ only in seed (and ignored keys)."""

    key: dict[str, Any]
    runs: list[Run]
    final: dict[str, Stat] = field(default_factory=dict)
    best: dict[str, Stat] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.key.get("task.name", MISSING)

    @property
    def variant(self) -> str:
        return self.key.get("optimizer.name", MISSING)

    def count(self, status: str) -> int:
        return sum(run.status == status for run in self.runs)

    @property
    def unfinished(self) -> int:
        return sum(run.status not in ENDED for run in self.runs)

    @property
    def seeds(self) -> list[Any]:
        return sorted((run.seed for run in self.runs), key=str)


@dataclass
class Aggregate:
    keys: list[str]  # grouping keys (config keys that differ between runs)
    groups: list[Group]
    ungroupable: list[Run]  # runs without a readable config
    label_keys: dict[tuple[str, str], list[str]]  # (task, variant) -> keys that tell its groups apart

    def tasks(self) -> list[str]:
        return sorted({g.task for g in self.groups}, key=str)

    def of_task(self, task: str) -> list[Group]:
        return [g for g in self.groups if g.task == task]

    def task_keys(self, task: str) -> list[str]:
        """Grouping keys that vary within one task (columns of its table)."""
        return self.varying_keys(self.of_task(task))

    def varying_keys(self, groups: list[Group]) -> list[str]:
        """Grouping keys other than the task whose value differs between these groups, in the grouping order."""
        return [k for k in self.keys if k != "task.name" and len({hashable(g.key.get(k)) for g in groups}) > 1]

    def label(self, group: Group, omit: tuple[str, ...] = ()) -> str:
        """The variant and the keys that tell its groups apart (``omit``: keys the caller shows otherwise)."""
        keys = [k for k in self.label_keys[group.task, group.variant] if k not in omit]
        return " ".join([str(group.variant), *(f"{short_key(k)}={format_value(group.key.get(k))}" for k in keys)])

    def headline(self, task: str) -> str | None:
        """The task's main metric: the first of :func:`radam_repro.run_folder.headline_metrics` its groups report."""
        present = {m for g in self.of_task(task) for m in (*g.final, *g.best)}
        return next((m for m in headline_metrics() if m in present), None)


def grouping_keys(configs: list[dict[str, Any]], ignore: tuple[str, ...] = ()) -> list[str]:
    """Flattened keys whose value differs between configs (missing counts as a value), minus ignored ones."""
    keys = {k for c in configs for k in c}
    varying = {k for k in keys if not is_ignored(k, ignore) and len({hashable(c.get(k, MISSING)) for c in configs}) > 1}
    varying.update(k for k in ("task.name", "optimizer.name") if k in keys)
    return sorted(varying, key=lambda k: (KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER), k))


def aggregate(runs: list[Run], ignore: tuple[str, ...] = ()) -> Aggregate:
    grouped, ungroupable = [r for r in runs if r.config], [r for r in runs if not r.config]
    flats = [flatten(r.config) for r in grouped]
    keys = grouping_keys(flats, ignore)
    by_key: dict[tuple, Group] = {}
    for run, flat in zip(grouped, flats):
        key = {k: flat.get(k, MISSING) for k in keys}
        group = by_key.setdefault(tuple(hashable(v) for v in key.values()), Group(key=key, runs=[]))
        group.runs.append(run)
    groups = sorted(by_key.values(), key=lambda g: tuple(sort_key(g.key[k]) for k in keys))
    for group in groups:
        completed = [r for r in group.runs if r.status == Status.COMPLETED]
        group.final = _stats([r.final() for r in completed])
        group.best = _stats([r.best() for r in completed])
    return Aggregate(keys=keys, groups=groups, ungroupable=ungroupable, label_keys=_label_keys(keys, groups))


def _stats(metric_dicts: list[dict[str, float]]) -> dict[str, Stat]:
    names = sorted({m for d in metric_dicts for m in d})
    stats = {m: Stat.of([d[m] for d in metric_dicts if m in d]) for m in names}
    return {m: s for m, s in stats.items() if s is not None}


def _label_keys(keys: list[str], groups: list[Group]) -> dict[tuple[str, str], list[str]]:
    """Per (task, variant): the grouping keys that differ among its groups (the variant implies the rest)."""
    members: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        members.setdefault((g.task, g.variant), []).append(g)
    return {
        tv: [k for k in keys if k not in ("task.name", "optimizer.name") and len({hashable(g.key[k]) for g in gs}) > 1]
        for tv, gs in members.items()
    }


def short_key(key: str) -> str:
    return key.removeprefix("optimizer.")


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    return str(value)


def hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def sort_key(value: Any) -> tuple:
    """Numbers before strings, numbers numerically (so lr 0.003 < 0.01 < 0.1)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))
