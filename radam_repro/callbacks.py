"""Hydra callbacks: after a sweep, a table of every cell and the report's figures in the sweep folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from radam_repro.report.runs import load_runs

COLUMNS = ("train/loss", "valid/loss", "valid/acc", "test/acc", "test/bleu", "valid/ppl", "test/ppl")


def sweep_table(sweep_dir: Path) -> str:
    """One Markdown row per run folder under ``sweep_dir``: variant, seed, status, final metrics."""
    runs = sorted(load_runs([sweep_dir]), key=lambda r: (str(r.variant), str(r.seed)))
    finals = [run.final() for run in runs]
    columns = [c for c in COLUMNS if any(f.get(c) is not None for f in finals)]
    lines = ["| variant | seed | status | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for run, final in zip(runs, finals):
        status = f"diverged@{run.summary.get('diverged_step')}" if run.status == "diverged" else run.status
        cells = [f"{final[c]:.4g}" if isinstance(final.get(c), (int, float)) else "" for c in columns]
        lines.append(f"| {run.variant} | {run.seed} | {status} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class SweepReport(Callback):
    """Print the sweep's table and write ``<sweep dir>/report`` (tables and figures) when a multirun ends."""

    def __init__(self, figures: bool = True) -> None:
        self.figures = figures

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = sweep_table(sweep_dir)
        (sweep_dir / "table.md").write_text(table + "\n")
        print(f"\n{table}\n")
        from radam_repro.report.__main__ import main as report

        args = [str(sweep_dir), "--out", str(sweep_dir / "report")] + ([] if self.figures else ["--no-figures"])
        out = report(args)
        print(f"[radam_repro] sweep table: {sweep_dir / 'table.md'}; report and figures: {out}")
