"""Hydra callbacks: after a sweep, a table of every cell and the report's figures in the sweep folder.

Hydra hands the callback to every job of a sweep, so this module imports the report only inside its functions:
a training process never loads it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from radam_repro.run_folder import Status, headline_metrics

if TYPE_CHECKING:
    from radam_repro.report.runs import Run
    from radam_repro.report.tables import Solved


def sweep_table(sweep_dir: Path, solved: Solved | None = None) -> str:
    """One Markdown row per run folder under ``sweep_dir``: variant, seed, status, final metrics (and solved).

    The metrics: the training loss, then the headline metrics (radam_repro.run_folder.METRICS) the runs report.
    """
    from radam_repro.report.runs import load_runs

    runs = sorted(load_runs([sweep_dir]), key=lambda r: (str(r.variant), str(r.seed)))
    finals = [run.final() for run in runs]
    columns = [c for c in ("train/loss", *headline_metrics()) if any(f.get(c) is not None for f in finals)]
    solved_column = [f"solved ({solved})"] if solved else []
    lines = [
        "| variant | seed | status | " + " | ".join(columns + solved_column) + " |",
        "|---|---|---|" + "---|" * (len(columns) + len(solved_column)),
    ]
    for run, final in zip(runs, finals):
        status = f"diverged@{run.summary.get('diverged_step')}" if run.status == Status.DIVERGED else run.status
        cells = [f"{final[c]:.4g}" if isinstance(final.get(c), (int, float)) else "" for c in columns]
        cells += ["yes" if solved(run) else "no"] if solved else []
        lines.append(f"| {run.variant} | {run.seed} | {status} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def solved_line(runs: list[Run], solved: Solved, legend: str | None = None) -> str:
    """What the table shows in one line: per variant, on how many runs it solved the task."""
    counts: dict[str, list[bool]] = defaultdict(list)
    for run in runs:
        counts[str(run.variant)].append(solved(run))
    every = [f"{v} ({sum(s)}/{len(s)})" for v, s in sorted(counts.items()) if all(s)]
    some = [f"{v} ({sum(s)}/{len(s)})" for v, s in sorted(counts.items()) if any(s) and not all(s)]
    none = [f"{v} (0/{len(s)})" for v, s in sorted(counts.items()) if not any(s)]
    parts = [f"solved ({solved}) on every run: {', '.join(every) or 'none'}"]
    parts += [f"on some: {', '.join(some)}"] if some else []
    parts += [f"on none: {', '.join(none)}"] if none else []
    return (f"{legend}; " if legend else "") + "; ".join(parts) + "."


class SweepReport(Callback):
    """Print the sweep's table and write ``<sweep dir>/report`` (tables and figures) when a multirun ends.

    ``solved`` (e.g. ``valid/loss<0.1``) adds a solved column, a one-line verdict per variant above the table
    and the report's solved counts; ``legend`` (e.g. what chance is) opens that line.
    """

    def __init__(self, figures: bool = True, solved: str | None = None, legend: str | None = None) -> None:
        from radam_repro.report.tables import Solved

        self.figures = figures
        self.solved = str(Solved.parse(solved)) if solved else None  # checked now, kept as text (see the module)
        self.legend = legend

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from radam_repro.report.__main__ import main as report
        from radam_repro.report.runs import load_runs
        from radam_repro.report.tables import Solved

        sweep_dir = Path(config.hydra.sweep.dir)
        solved = Solved.parse(self.solved) if self.solved else None
        table = sweep_table(sweep_dir, solved)
        if solved:
            table = solved_line(load_runs([sweep_dir]), solved, self.legend) + "\n\n" + table
        (sweep_dir / "table.md").write_text(table + "\n")
        print(f"\n{table}\n")
        args = [str(sweep_dir), "--out", str(sweep_dir / "report")] + ([] if self.figures else ["--no-figures"])
        args += ["--solved", str(self.solved)] if self.solved else []
        out = report(args)
        print(f"[radam_repro] sweep table: {sweep_dir / 'table.md'}; report and figures: {out}")
