"""Which early signal predicts failure: every numeric training metric, averaged over a run's first 10 % of updates,
ranked by how well it separates failed from solved runs (ROC AUC with a bootstrap interval).

A signal is any numeric field of metrics.jsonl's train rows (Var[psi] as ``adaptive_lr/*``, the eps-dominated
fraction, ``grad_norm``, ``loss``, ...; a newly logged diagnostic joins by itself) except bookkeeping, timing, counts
and what the config sets (:data:`NOT_SIGNALS`: lr and the schedule's multiplier are the intervention, not a
measurement). Only ended runs with a result enter: completed (solved or not, by the report's criterion) and diverged
(failed); crashed and unfinished runs have no outcome.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radam_repro.report.runs import Run
from radam_repro.report.tables import Solved
from radam_repro.run_folder import DONE, metric

EARLY_FRACTION = 0.1
NOT_SIGNALS = {"step", "epoch", "split", "steps_per_s", "lr", "multiplier"}
# per-layer values (update/relative/<parameter>, ...) enter through their summaries (update/relative_max, ...)
PER_LAYER = ("update/relative/", "update/angle/")
RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def early_window(run: Run) -> int:
    """The last update of the early window: 10 % of the run's planned updates (summary's total_steps), at least 1."""
    total = (run.summary or {}).get("total_steps")
    total = total if isinstance(total, int) and total > 0 else run.step or 0
    return max(1, math.ceil(EARLY_FRACTION * total))


def early_values(run: Run) -> dict[str, float]:
    """Per signal, the mean of its finite values in the run's train rows at steps 1..early_window(run)."""
    window = early_window(run)
    values: dict[str, list[float]] = {}
    for row in run.train_rows():
        step = row.get("step")
        if not isinstance(step, int) or step > window:
            continue
        for key, value in row.items():
            if (
                key in NOT_SIGNALS
                or key.startswith(PER_LAYER)
                or isinstance(value, bool)
                or not isinstance(value, (int, float))
            ):
                continue
            if (row_metric := metric(key)) is not None and row_metric.kind == "count":
                continue
            if math.isfinite(value):
                values.setdefault(key, []).append(float(value))
    return {key: sum(v) / len(v) for key, v in values.items()}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(X > Y) + P(X = Y)/2 for X from ``positive``, Y from ``negative``: Mann-Whitney's U / (n_x n_y), by midranks."""
    positive, negative = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    both = np.concatenate([positive, negative])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    midranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # ranks from 1; tied values share their mean rank
    n_x, n_y = len(positive), len(negative)
    return float((midranks[:n_x].sum() - n_x * (n_x + 1) / 2) / (n_x * n_y))


@dataclass
class SignalRank:
    """One signal: AUC = P(a failed run's value > a solved run's) (+ ties / 2) with its bootstrap 95 % interval."""

    signal: str
    failed: int
    solved: int
    auc: float
    low: float
    high: float

    @property
    def separation(self) -> float:
        """max(AUC, 1 - AUC): 0.5 is chance, 1 a perfect split, whichever side fails."""
        return max(self.auc, 1 - self.auc)

    @property
    def direction(self) -> str:
        return "higher in failed" if self.auc > 0.5 else "lower in failed" if self.auc < 0.5 else "—"


def rank_signals(
    runs: list[Run], solved: Solved, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> list[SignalRank]:
    """Every signal measured in both failed and solved runs, best separation first.

    The interval is the 2.5-97.5 percentile of the AUC over ``resamples`` resamples of the runs, drawn with
    replacement within the failed and within the solved runs (numpy's generator at ``seed``: a table that
    regenerates bit-identically).
    """
    labelled = [(early_values(r), not solved(r)) for r in runs if r.status in DONE]
    names = sorted({name for values, _ in labelled for name in values})
    ranked = []
    for name in names:
        failed = np.array([v[name] for v, fails in labelled if fails and name in v])
        passed = np.array([v[name] for v, fails in labelled if not fails and name in v])
        if not len(failed) or not len(passed):
            continue
        rng = np.random.default_rng(seed)
        draws = [
            auc(failed[rng.integers(0, len(failed), len(failed))], passed[rng.integers(0, len(passed), len(passed))])
            for _ in range(resamples)
        ]
        low, high = np.percentile(draws, [2.5, 97.5])
        ranked.append(SignalRank(name, len(failed), len(passed), auc(failed, passed), float(low), float(high)))
    return sorted(ranked, key=lambda s: (-s.separation, s.signal))


def write_signals(ranked: list[SignalRank], out: Path, solved: Solved) -> list[Path]:
    """``early_signals.md`` and ``early_signals.csv`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    header = ["signal", "failed runs", "solved runs", "AUC (failed > solved)", "95% CI", "separation", "direction"]
    cells = [
        [
            s.signal,
            s.failed,
            s.solved,
            f"{s.auc:.3f}",
            f"[{s.low:.3f}, {s.high:.3f}]",
            f"{s.separation:.3f}",
            s.direction,
        ]
        for s in ranked
    ]
    lines = [
        "# Which early signal predicts failure",
        "",
        f"Each numeric training metric, averaged over a run's first {EARLY_FRACTION:.0%} of updates, against the "
        f"outcome (solved: final `{solved}`; diverged runs count as failed). AUC = P(a failed run's value > a solved "
        f"run's), ties counting 1/2 (Mann-Whitney); 95 % CI: percentile bootstrap, {RESAMPLES} resamples within each "
        "class, seed 0. Separation = max(AUC, 1 − AUC): 0.5 is chance.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(map(str, row)) + " |" for row in cells),
    ]
    if not ranked:
        lines.append("\nNo signal was measured in both failed and solved runs.")
    (out / "early_signals.md").write_text("\n".join(lines) + "\n")
    with (out / "early_signals.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["signal", "failed", "solved", "auc", "ci_low", "ci_high", "separation", "direction"])
        writer.writerows(
            [s.signal, s.failed, s.solved, s.auc, s.low, s.high, s.separation, s.direction] for s in ranked
        )
    return [out / "early_signals.md", out / "early_signals.csv"]


def signals_figure(ranked: list[SignalRank], path: Path) -> Path | None:
    """AUC per signal with its 95 % interval, best separation at the top; chance (0.5) dashed."""
    if not ranked:
        return None
    from radam_repro.report.figures import _save, plt

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(ranked) + 1.5))
    y = np.arange(len(ranked))[::-1]
    aucs = np.array([s.auc for s in ranked])
    errors = np.array([[s.auc - s.low for s in ranked], [s.high - s.auc for s in ranked]])
    ax.errorbar(aucs, y, xerr=errors, fmt="o", capsize=3)
    ax.axvline(0.5, color="gray", linestyle="--", linewidth=1)
    ax.set_yticks(y, [f"{s.signal} ({s.failed} failed / {s.solved} solved)" for s in ranked])
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"AUC: P(failed > solved), first {EARLY_FRACTION:.0%} of updates")
    ax.set_title("Which early signal predicts failure")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)
