"""Run folders -> TensorBoard event files, incrementally: each pass reads only what was appended.

The run folder stays the single source of truth (finished, running, SLURM and DDP runs alike); the
event files are a cache derived from it. Per cell (one TensorBoard run, named by its variant, the
keys that tell it apart from cells of the same variant, and its seed):

* scalars ``<split>/<metric>`` of every numeric field of metrics.jsonl against the optimizer step,
  and ``final/<metric>``, ``best/<metric>`` from summary.json once the run has ended;
* histograms ``hist/log_abs_grad``, ``hist/log_abs_exp_avg``, ``hist/log_abs_exp_avg_sq`` from
  histograms/step_*.json (the paper's Fig. 2/3, natural log of |x| + 1e-9);
* the HParams plugin's session info: variant, task, seed and every flattened config key that
  :mod:`radam_repro.report.aggregate` does not ignore; TensorBoard marks the ones that differ.

File names, status names and the strict-JSON codec come from :mod:`radam_repro.run_folder`.

A value is written once per (tag, step): a resumed run's replayed rows and the second row that a
histogram step adds to the same step are skipped. A cell is the run folder itself (device and inode): a run
renamed, or reached through a link, stays one cell. A run whose config.yaml is damaged, and a histogram file
that is not a histogram record, are named on stderr and skipped; the other runs keep being served.
"""

from __future__ import annotations

import os
import re
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from torch.utils.tensorboard import SummaryWriter

from radam_repro.report.aggregate import aggregate, format_value, is_ignored
from radam_repro.report.runs import Run, find_run_dirs
from radam_repro.run_folder import (
    CONFIG_FILE,
    ENDED,
    HISTOGRAM_DIR,
    METRICS_FILE,
    STEP_PREFIX,
    SUMMARY_FILE,
    Status,
    flatten,
    parse_config,
    parse_strict_json,
)

NOT_METRICS = ("step", "split", "epoch")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+()\- ]")


@dataclass
class Cell:
    """One run folder and how far it has been converted."""

    path: Path
    name: str
    writer: SummaryWriter
    offset: int = 0  # bytes of metrics.jsonl already read
    inode: int | None = None  # a new inode (resume rewrote the file): read it again from the start
    tail: bytes = b""  # the last bytes read: changed, the file was rewritten in place (a resume): read it again
    last_step: dict[str, int] = field(default_factory=dict)  # tag -> last step written
    histograms: set[str] = field(default_factory=set)  # histogram files already written
    summary_mtime: float | None = None

    def add_scalar(self, tag: str, value: Any, step: int) -> bool:
        number = _number(value)
        if number is None or step <= self.last_step.get(tag, -1):
            return False
        self.writer.add_scalar(tag, number, global_step=step, new_style=True, double_precision=True)
        self.last_step[tag] = step
        return True


class Converter:
    """Mirrors the run folders under ``roots`` into ``logdir/<cell name>/`` event files; call :meth:`update` often."""

    def __init__(self, roots: list[Path], logdir: Path) -> None:
        self.roots = [Path(r) for r in roots]
        self.logdir = Path(logdir)
        self.cells: dict[tuple[int, int], Cell] = {}  # by the run folder's (device, inode)
        self.flagged: dict[Path, str] = {}  # damaged files, each named once per problem

    def update(self) -> int:
        """One pass: new cells, new rows, new histograms, ended runs. Returns the number of points written."""
        new: dict[tuple[int, int], Path] = {}
        for path in find_run_dirs(self.roots):
            try:
                stat = path.stat()
            except FileNotFoundError:  # gone since the walk
                continue
            key = (stat.st_dev, stat.st_ino)
            if key in self.cells:
                self.cells[key].path = path  # renamed while served: the same cell
            else:
                new[key] = path
        if new:
            self._add(new)
        written = 0
        for cell in self.cells.values():
            n = self._metrics(cell) + self._histograms(cell) + self._summary(cell)
            if n:
                cell.writer.flush()
            written += n
        return written

    def close(self) -> None:
        for cell in self.cells.values():
            cell.writer.close()

    # -- cells ------------------------------------------------------------------------------
    def flag(self, path: Path, problem: str) -> None:
        """Say once on stderr that ``path`` is skipped and why."""
        if self.flagged.get(path) != problem:
            self.flagged[path] = problem
            print(f"warning: skipping {path}: {problem}", file=sys.stderr, flush=True)

    def _add(self, new: dict[tuple[int, int], Path]) -> None:
        """Name the new cells from the keys that differ between all cells seen so far; names never change.

        A run whose config.yaml is damaged is flagged and left out (until it is repaired).
        """
        configs, paths = {}, []
        for cell in self.cells.values():
            with suppress(ValueError):  # damaged since it was added: named by its first config
                configs[cell.path] = _config(cell.path)
        for key, path in new.items():
            try:
                configs[path] = _config(path)
                paths.append((key, path))
            except ValueError as e:
                self.flag(path / CONFIG_FILE, str(e))
        runs = [Run(path=p, config=c, summary=None, rows=[], status=Status.INCOMPLETE) for p, c in configs.items()]
        agg = aggregate(runs)
        labels = {run.path: agg.label(g) for g in agg.groups for run in g.runs}
        several_tasks = len(agg.tasks()) > 1
        taken = {c.name for c in self.cells.values()}
        for key, path in paths:
            config = configs[path]
            if path in labels:
                task = f"{(config.get('task') or {}).get('name')} " if several_tasks else ""
                name = _UNSAFE.sub("_", f"{task}{labels[path]} seed={config.get('seed')}")
            else:  # no readable config yet
                name = _UNSAFE.sub("_", path.name)
            if name in taken:
                name = _UNSAFE.sub("_", f"{name} ({path.name})")
            taken.add(name)
            cell = Cell(
                path=path, name=name, writer=SummaryWriter(str(self.logdir / name), max_queue=10_000, flush_secs=3600)
            )
            if config:
                cell.writer.file_writer.add_summary(hparams_summary.hparams_pb(_hparams(config), trial_id=name))
            self.cells[key] = cell

    # -- sources ----------------------------------------------------------------------------
    def _metrics(self, cell: Cell) -> int:
        """Rows appended to metrics.jsonl since the last pass (a torn last line waits for the next)."""
        path = cell.path / METRICS_FILE
        try:
            stat = path.stat()
        except FileNotFoundError:
            return 0
        if stat.st_ino != cell.inode or stat.st_size < cell.offset:
            cell.inode, cell.offset, cell.tail = stat.st_ino, 0, b""
        with path.open("rb") as f:
            f.seek(cell.offset - len(cell.tail))
            data = f.read()
            if not data.startswith(cell.tail):  # rewritten in place since the last pass: read it all again
                cell.offset, cell.tail = 0, b""
                f.seek(0)
                data = f.read()
        complete = data[len(cell.tail) : data.rfind(b"\n") + 1]
        cell.offset += len(complete)
        cell.tail = (cell.tail + complete)[-256:]
        written = 0
        for line in complete.splitlines():
            try:
                row = parse_strict_json(line)
            except ValueError:
                continue
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                continue
            split = row.get("split", "train")
            for key, value in row.items():
                if key not in NOT_METRICS:
                    written += cell.add_scalar(f"{split}/{key}", value, row["step"])
        return written

    def _histograms(self, cell: Cell) -> int:
        folder = cell.path / HISTOGRAM_DIR
        if not folder.is_dir():
            return 0
        written = 0
        for path in sorted(folder.glob(f"{STEP_PREFIX}*.json")):
            if path.name in cell.histograms:
                continue
            try:
                record = parse_strict_json(path.read_text())
            except (OSError, ValueError):
                continue  # written atomically, so only a foreign or damaged file; skipped for good
            finally:
                cell.histograms.add(path.name)
            step, hists = (record.get("step"), record.get("hist")) if isinstance(record, dict) else (None, None)
            if not isinstance(step, int) or not isinstance(hists, dict):
                self.flag(path, 'not a histogram record ({"step": <int>, "hist": {...}})')
                continue
            for name, hist in hists.items():
                tag = f"hist/{name}"
                if step > cell.last_step.get(tag, -1) and _add_histogram(cell.writer, tag, hist, step):
                    cell.last_step[tag] = step
                    written += 1
        return written

    def _summary(self, cell: Cell) -> int:
        """``final/<m>`` and ``best/<m>`` at the run's last step, once summary.json says it ended."""
        path = cell.path / SUMMARY_FILE
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return 0
        if mtime == cell.summary_mtime:
            return 0
        cell.summary_mtime = mtime
        try:
            summary = parse_strict_json(path.read_text())
        except (OSError, ValueError):
            return 0
        if (
            not isinstance(summary, dict)
            or summary.get("status") not in ENDED
            or not isinstance(summary.get("step"), int)
        ):
            return 0
        written = 0
        for kind in ("final", "best"):
            values = summary.get(kind)
            for key, value in values.items() if isinstance(values, dict) else []:
                written += cell.add_scalar(f"{kind}/{key}", value, summary["step"])
        return written


def _config(path: Path) -> dict[str, Any]:
    """The run's config.yaml ({} while it is not written yet); a damaged one is a ValueError saying what is wrong."""
    try:
        config = parse_config((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, not YAML
        raise ValueError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ValueError(f"not a mapping but {type(config).__name__}")
    wrong = [key for key in ("task", "optimizer", "trainer") if not isinstance(config.get(key, {}), dict)]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} should be a mapping")
    return config


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The cell's hyperparameters: variant, task, seed, then every config key a report would group by."""
    flat = flatten(config)
    out: dict[str, Any] = {
        "variant": flat.get("optimizer.name"),
        "task": flat.get("task.name"),
        "seed": flat.get("seed"),
    }
    out.update(
        {k: v for k, v in sorted(flat.items()) if not is_ignored(k) and k not in ("optimizer.name", "task.name")}
    )
    return {k: v if isinstance(v, (bool, int, float, str)) else format_value(v) for k, v in out.items()}


def _number(value: Any) -> float | None:
    """A scalar TensorBoard can plot (NaN and infinities included: the codec reads them back as floats)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _add_histogram(writer: SummaryWriter, tag: str, hist: dict[str, list[float]], step: int) -> bool:
    """A pre-binned histogram (counts over edges) as TensorBoard's HistogramProto, empty outer bins trimmed."""
    counts, edges = (hist.get("counts"), hist.get("edges")) if isinstance(hist, dict) else (None, None)
    if not (isinstance(counts, list) and isinstance(edges, list) and len(edges) == len(counts) + 1):
        return False
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in counts + edges):
        return False
    nonzero = [i for i, c in enumerate(counts) if c > 0]
    if not nonzero:
        return False
    lo, hi = nonzero[0], nonzero[-1] + 1
    centers = [(edges[i] + edges[i + 1]) / 2 for i in range(lo, hi)]
    kept = counts[lo:hi]
    writer.add_histogram_raw(
        tag,
        min=edges[lo],
        max=edges[hi],
        num=sum(kept),
        sum=sum(c * x for c, x in zip(kept, centers)),
        sum_squares=sum(c * x * x for c, x in zip(kept, centers)),
        bucket_limits=edges[lo + 1 : hi + 1],
        bucket_counts=kept,
        global_step=step,
        walltime=time.time(),
    )
    return True


def cache_root() -> Path:
    """``$RADAM_REPRO_CACHE``, else the user's cache folder (``$XDG_CACHE_HOME`` or ~/.cache) / radam_repro."""
    if os.environ.get("RADAM_REPRO_CACHE"):
        return Path(os.environ["RADAM_REPRO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "radam_repro"
