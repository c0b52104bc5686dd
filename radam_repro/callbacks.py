"""Hydra callbacks: after a sweep, a table of every cell and the report's figures in the sweep folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

COLUMNS = ("train/loss", "valid/loss", "valid/acc", "test/acc", "test/bleu", "valid/ppl", "test/ppl")


def sweep_table(sweep_dir: Path) -> str:
    """One Markdown row per run folder under ``sweep_dir``: variant, seed, status, final metrics."""
    rows = []
    for summary_path in sorted(sweep_dir.rglob("summary.json")):
        run = summary_path.parent
        summary = json.loads(summary_path.read_text())
        config = OmegaConf.load(run / "config.yaml") if (run / "config.yaml").exists() else OmegaConf.create()
        train_losses = [json.loads(line).get("loss") for line in (run / "metrics.jsonl").read_text().splitlines()
                        if '"split": "train"' in line and '"loss"' in line] if (run / "metrics.jsonl").exists() else []
        final = {"train/loss": train_losses[-1] if train_losses else None, **summary.get("final", {})}
        rows.append((OmegaConf.select(config, "optimizer.name", default="?"), OmegaConf.select(config, "seed", default="?"),
                     summary.get("status"), summary.get("diverged_step"), final))
    columns = [c for c in COLUMNS if any(r[4].get(c) is not None for r in rows)]
    lines = ["| variant | seed | status | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for variant, seed, status, diverged_step, final in sorted(rows, key=lambda r: (str(r[0]), str(r[1]))):
        status = f"diverged@{diverged_step}" if status == "diverged" else status
        cells = [f"{final[c]:.4g}" if isinstance(final.get(c), (int, float)) else "" for c in columns]
        lines.append(f"| {variant} | {seed} | {status} | " + " | ".join(cells) + " |")
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
