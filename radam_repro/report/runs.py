"""Reading run folders (the run-folder contract in README.md) robustly: a broken run is listed, never fatal.

A folder is a run if it holds ``config.yaml`` or ``summary.json``; other folders are walked
recursively (hidden ones such as Hydra's ``.hydra/`` are skipped, and a run's own subfolders are
not searched). Status comes from ``summary.json``; without one, a run is ``incomplete``; a ``running``
summary whose lock owner is gone (a dead pid on this host, or an expired lease) is ``interrupted``.
Non-finite numbers, written as the strings "NaN", "Infinity", "-Infinity" (strict JSON), read back as floats
(the layout, status names and codec: :mod:`radam_repro.run_folder`).
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radam_repro.errors import kind_of
from radam_repro.folder_lock import lock_state
from radam_repro.run_folder import (
    CONFIG_FILE,
    HISTOGRAM_DIR,
    METRICS_FILE,
    STEP_PREFIX,
    SUMMARY_FILE,
    Status,
    names_with_best,
    parse_config,
    parse_strict_json,
)

TRAIN_WINDOW = 10  # final "train/<m>" of every score and loss: the mean of its last TRAIN_WINDOW logged values


@dataclass
class Run:
    """One run folder: its config, summary, metric rows and what was wrong reading them."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None
    rows: list[dict[str, Any]]
    status: str
    problems: list[str] = field(default_factory=list)

    @property
    def task(self) -> str | None:
        return _name(self.config, "task")

    @property
    def variant(self) -> str | None:
        return _name(self.config, "optimizer")

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def step(self) -> int | None:
        """The last step the run reached: its summary's (advanced at each checkpoint) or its last logged row's."""
        steps = [r["step"] for r in self.rows if isinstance(r.get("step"), int)]
        if self.summary and isinstance(self.summary.get("step"), int):
            steps.append(self.summary["step"])
        return max(steps, default=None)

    def final(self) -> dict[str, float]:
        """Final metrics: the summary's ``final`` plus ``train/<m>``, the mean of the last logged values."""
        out = dict((self.summary or {}).get("final") or {})
        train = self.train_rows()
        for metric in names_with_best():
            values = [r[metric] for r in train if isinstance(r.get(metric), (int, float))][-TRAIN_WINDOW:]
            if values and f"train/{metric}" not in out:
                out[f"train/{metric}"] = sum(values) / len(values)
        return out

    def best(self) -> dict[str, float]:
        return dict((self.summary or {}).get("best") or {})

    def train_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("split") == "train"]

    def histograms(self) -> list[dict[str, Any]]:
        """``histograms/step_*.json`` records (objects with an integer step) sorted by step; others skipped and noted."""
        records = []
        for path in sorted((self.path / HISTOGRAM_DIR).glob(f"{STEP_PREFIX}*.json")):
            try:
                record = parse_strict_json(path.read_bytes())
            except (OSError, ValueError) as e:
                self.problems.append(f"{path.name} unreadable ({type(e).__name__})")
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
            else:
                self.problems.append(f"{path.name} is not a histogram record (an object with an integer step)")
        return sorted(records, key=lambda r: r["step"])


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / SUMMARY_FILE).is_file()


def find_run_dirs(roots: list[Path]) -> list[Path]:
    """Every run folder at or below ``roots`` (sorted), each once: a run reached through symbolic links too is
    listed under its path with the fewest links; a link back up the tree (a loop) is not followed."""
    found: dict[Path, list[Path]] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"no such folder: {root}. Pass run folders or sweep folders (e.g. runs/<experiment>) "
                "written by `python -m radam_repro`."
            )
        for path in _walk(root, frozenset()):
            found.setdefault(path.resolve(), []).append(path)
    return sorted(min(paths, key=lambda p: (sum(map(Path.is_symlink, (p, *p.parents))), p)) for paths in found.values())


def _walk(folder: Path, above: frozenset[Path]) -> Iterator[Path]:
    """Run folders at or below ``folder``; ``above``: the resolved folders on the way down (a link to one is a loop)."""
    real = folder.resolve()
    if real in above:
        return
    if is_run_dir(folder):
        yield folder
        return
    with os.scandir(folder) as entries:
        subfolders = [Path(e.path) for e in entries if not e.name.startswith(".") and _is_dir(e)]
    for sub in subfolders:
        yield from _walk(sub, above | {real})


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link to itself (ELOOP)
        return False


def read_metrics(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """metrics.jsonl rows (or those of ``metrics.jsonl.gz``, an archived run's: :mod:`.archive`); a torn last line
    (a run killed mid-write) or a bad line is noted and skipped."""
    packed = path.with_name(path.name + ".gz")
    if path.is_file():
        text = path.read_bytes()
    elif packed.is_file():
        try:
            text = gzip.decompress(packed.read_bytes())
        except (OSError, EOFError) as e:
            problems.append(f"{packed.name} unreadable ({type(e).__name__}: {e}), skipped")
            return []
    else:
        return []
    lines = text.splitlines()
    filled = [line for line in lines if line.strip()]
    try:  # fast path: one parse of the whole file as a JSON array, kept only if each line gave one object
        rows = parse_strict_json(b"[" + b"\n,".join(filled) + b"]")  # \n: no JSON string spans two lines
        if len(rows) == len(filled) and all(isinstance(r, dict) for r in rows):
            return rows
    except ValueError:
        pass
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = parse_strict_json(line)
        except ValueError:
            where = "last line" if number == len(lines) else f"line {number}"
            problems.append(f"{METRICS_FILE} {where} unreadable (half-written?), skipped")
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            problems.append(f"{METRICS_FILE} line {number} holds {kind_of(row)}, not a row; skipped")
    return rows


def _read(path: Path, parse, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return parse(path.read_bytes())
    except ValueError as e:
        problems.append(f"{path.name} unreadable ({type(e).__name__}: {str(e).splitlines()[0][:80]})")
        return None


def load_run(path: Path) -> Run:
    """Read one run folder; never raises for broken content (the problems are recorded on the run)."""
    problems: list[str] = []
    config = _read(path / CONFIG_FILE, parse_config, problems)
    if not isinstance(config, dict):
        problems.append(f"no readable {CONFIG_FILE}: this run cannot be grouped")
        config = {}
    for section in ("task", "optimizer"):
        if "name" in _section(config, section) and _name(config, section) is None:
            problems.append(f"{CONFIG_FILE}: {section}.name is not a name; this run cannot be grouped by it")
    unreadable = len(problems)
    summary = _read(path / SUMMARY_FILE, parse_strict_json, problems)
    if (path / SUMMARY_FILE).is_file() and not isinstance(summary, dict) and len(problems) == unreadable:
        problems.append(f"{SUMMARY_FILE} holds {kind_of(summary)}, not an object; ignored")
    summary = _checked_summary(summary, problems) if isinstance(summary, dict) else None
    rows = read_metrics(path / METRICS_FILE, problems)
    if summary and isinstance(summary.get("status"), str):
        status = summary["status"]
        if status == Status.RUNNING and lock_state(path) is None:
            status = Status.INTERRUPTED
            problems.append("its process is gone (killed, or its node lost): rerun the same command to resume it")
    else:
        status = Status.INCOMPLETE
        if not (path / SUMMARY_FILE).exists():
            problems.append(f"no {SUMMARY_FILE}" if rows else f"no {SUMMARY_FILE} and no metrics")
    if status == Status.COMPLETED and any(not _finite(v) for v in (summary.get("final") or {}).values()):
        problems.append("completed with non-finite final metrics")
    return Run(path=path, config=config, summary=summary, rows=rows, status=status, problems=problems)


def _checked_summary(summary: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The summary with malformed fields (``final``/``best`` not a mapping of numbers, a non-integer step) dropped."""
    summary = dict(summary)
    for key in ("final", "best"):
        value = summary.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(f"{SUMMARY_FILE}: {key} is a {type(value).__name__}, not a mapping of metrics; ignored")
            summary[key] = {}
        elif bad := [k for k, v in value.items() if not isinstance(v, (int, float)) or isinstance(v, bool)]:
            problems.append(f"{SUMMARY_FILE}: {key} has non-numeric values ({', '.join(bad[:3])}); ignored")
            summary[key] = {k: v for k, v in value.items() if k not in bad}
    if "step" in summary and not (isinstance(summary["step"], int) and not isinstance(summary["step"], bool)):
        problems.append(f"{SUMMARY_FILE}: step {summary['step']!r} is not an integer; ignored")
        summary.pop("step")
    if "status" in summary and not isinstance(summary["status"], str):
        problems.append(f"{SUMMARY_FILE}: status {summary['status']!r} is not a string")
    return summary


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


def _name(config: dict[str, Any], section: str) -> str | None:
    """``config[section]["name"]`` if it is a string (a config edited by hand may hold anything there)."""
    name = _section(config, section).get("name")
    return name if isinstance(name, str) else None


def load_runs(roots: list[Path]) -> list[Run]:
    return [load_run(path) for path in find_run_dirs(roots)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
