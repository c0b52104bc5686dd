"""Markdown and CSV tables: our mean ± std over seeds beside the paper's numbers (radam_repro/report/paper.yaml)."""

from __future__ import annotations

import csv
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from radam_repro.report.aggregate import Aggregate, Group, Stat, format_value, short_key
from radam_repro.report.runs import Run
from radam_repro.run_folder import ENDED, STATUSES, Status, flatten, higher_is_better

PAPER_YAML = Path(__file__).resolve().parent / "paper.yaml"
COMPARISONS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
EXTRA_METRICS = 4  # final metrics shown per task table besides the headline and train/loss


@dataclass(frozen=True)
class Solved:
    """A run counts as solved when its final ``metric`` passes ``op threshold``, e.g. ``valid/loss<0.1``.

    Only completed runs can be solved; diverged, failed and unfinished runs count as not solved.
    """

    metric: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Solved:
        match = re.fullmatch(rf"\s*([\w/.-]+)\s*(<=|>=|<|>)\s*({NUMBER})\s*", text or "")
        if not match:
            raise ValueError(
                f"cannot read the solved criterion {text!r}: write METRIC<VALUE, e.g. 'valid/loss<0.1' "
                "(operators <, <=, >, >=; METRIC a final metric such as valid/loss or test/acc)"
            )
        return cls(match[1], match[2], float(match[3]))

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"

    def __call__(self, run: Run) -> bool:
        value = run.final().get(self.metric) if run.status == Status.COMPLETED else None
        return isinstance(value, (int, float)) and math.isfinite(value) and COMPARISONS[self.op](value, self.threshold)

    def count(self, group: Group) -> tuple[int, int]:
        """(solved runs, all runs) of a group."""
        return sum(self(r) for r in group.runs), len(group.runs)


@dataclass
class PaperEntry:
    source: str
    task: str
    variant: str
    metric: str
    kind: str
    value: float
    std: float | None = None
    seeds: int | None = None
    unit: str | None = None
    where: dict[str, Any] = field(default_factory=dict)
    approx: bool = False
    note: str = ""

    def matches(self, group: Group) -> bool:
        if (group.task, group.variant) != (self.task, self.variant):
            return False
        config = flatten(group.runs[0].config)
        return all(_same(config.get(k), v) for k, v in self.where.items())

    def ours(self, group: Group) -> Stat | None:
        """Our statistic for this entry (accuracies are logged in percent, as the paper reports them)."""
        return (group.best if self.kind == "best" else group.final).get(self.metric)

    def condition(self) -> str:
        return ", ".join(f"{k.removeprefix('optimizer.')}={v}" for k, v in self.where.items())

    def describe(self) -> str:
        return "; ".join(x for x in (self.condition(), self.note) if x)


def load_paper(path: Path = PAPER_YAML) -> list[PaperEntry]:
    """The paper's numbers; a malformed entry raises ValueError naming it and the expected fields."""
    if not path.is_file():
        raise FileNotFoundError(
            f"no paper numbers at {path}; pass --paper PATH (the package ships radam_repro/report/paper.yaml)"
        )
    entries = []
    for i, raw in enumerate(yaml.safe_load(path.read_text()).get("entries", [])):
        try:
            entry = PaperEntry(**raw)
        except TypeError as e:
            raise ValueError(
                f"{path}: entry {i} ({raw}) is malformed: {e}; see the field list at the top of the file"
            ) from e
        if entry.kind not in ("final", "best"):
            raise ValueError(f"{path}: entry {i} has kind={entry.kind!r}; use final or best")
        entries.append(entry)
    return entries


def comparison_rows(agg: Aggregate, paper: list[PaperEntry]) -> list[dict[str, Any]]:
    """One row per paper entry for the tasks we ran; entries without a matching group say so.

    Where several of our groups match an entry (it does not pin a key our grid varies, as Table 1 leaves our lr axis
    open), the row is the best of them by the entry's metric: the paper reports each optimizer at its best setting.
    ``of`` holds every matching group; the task tables show them all.
    """
    ran = set(agg.tasks())
    rows = []
    for entry in paper:
        if entry.task not in ran:
            continue
        groups = [g for g in agg.groups if entry.matches(g)]
        if not groups:
            rows.append({"entry": entry, "group": None, "stat": None, "of": []})
            continue
        best = max(groups, key=lambda g: _goodness(entry, g))  # the first of equals, in the aggregate's order
        rows.append({"entry": entry, "group": best, "stat": entry.ours(best), "of": groups})
    return rows


def _goodness(entry: PaperEntry, group: Group) -> float:
    """Our mean for the entry's metric, signed so that higher is better; a group without it ranks last."""
    stat = entry.ours(group)
    if stat is None or math.isnan(stat.mean):
        return -math.inf
    return stat.mean if higher_is_better(entry.metric) else -stat.mean


def write_tables(
    agg: Aggregate,
    paper: list[PaperEntry],
    out: Path,
    *,
    command: str,
    figures: list[Path],
    solved: Solved | None = None,
    cells: int | None = None,
) -> Path:
    """Write report.md, summary.csv (one row per group × metric) and runs.csv (every run) into ``out``.

    With ``cells`` (the sweep's size) and fewer ended runs, report.md says the study is partial.

    With ``solved``, the task tables get a "solved" column (k/n runs), summary.csv a ``kind=solved`` row per
    group (mean = k/n) and runs.csv a ``solved`` column.
    """
    out.mkdir(parents=True, exist_ok=True)
    _write_summary_csv(agg, paper, out / "summary.csv", solved)
    _write_runs_csv(agg, out / "runs.csv", solved)
    (out / "report.md").write_text(
        markdown(agg, paper, out, command=command, figures=figures, solved=solved, cells=cells)
    )
    return out / "report.md"


def markdown(
    agg: Aggregate,
    paper: list[PaperEntry],
    out: Path,
    *,
    command: str,
    figures: list[Path],
    solved: Solved | None = None,
    cells: int | None = None,
) -> str:
    runs = [r for g in agg.groups for r in g.runs] + agg.ungroupable
    counts = ", ".join(f"{sum(r.status == s for r in runs)} {s}" for s in _statuses(runs))
    ended = sum(r.status in ENDED for r in runs)
    lines = [
        f"# Report: {out.name}",
        "",
        f"Generated by `{command}` from {len(runs)} run folders ({counts}).",
        "",
    ]
    if cells and ended < cells:
        lines += [
            f"**Partial: {ended} of the sweep's {cells} cells have ended.** Every table, figure and verdict below is "
            "on those alone; relaunching the sweep trains only the other cells (ended ones are skipped).",
            "",
        ]
    lines += [
        "Runs are averaged over seeds only within a group whose configs agree on every key except the seed "
        "and run-specific ones (paths, device, threads, logging cadence). Grouping keys: "
        + ", ".join(f"`{k}`" for k in agg.keys)
        + ".",
        "",
        "Cells read mean ± sample std over the completed seeds (n/a for a single seed); diverged, failed and "
        "unfinished runs are counted, never averaged. `train/*` values are the mean of a run's last 10 logged "
        "training values."
        + (
            f" A run is solved when its final `{solved.metric}` {solved.op} {solved.threshold:g}; the solved column "
            "counts solved runs over all runs of the group (diverged, failed and unfinished ones count as not solved)."
            if solved
            else ""
        ),
        "",
    ]
    lines += _paper_section(agg, paper)
    for task in agg.tasks():
        lines += _task_section(agg, task, solved)
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in figures]
        lines.append("")
    lines += _problem_section(runs)
    return "\n".join(lines) + "\n"


def _paper_section(agg: Aggregate, paper: list[PaperEntry]) -> list[str]:
    rows = comparison_rows(agg, paper)
    missing = [row["entry"] for row in rows if row["group"] is None]
    rows = [row for row in rows if row["group"] is not None]
    if not rows and not missing:
        return []
    lines = [
        "## Ours beside the paper",
        "",
        "Where a paper number leaves open a key our grid varies (Table 1 names no lr), its row is our best group by "
        "that metric, as the paper reports each optimizer at its best setting; the task tables below show every group.",
        "",
        "| source | task | group | metric | paper | ours | seeds (ours / paper) | ours − paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        entry, group, stat = row["entry"], row["group"], row["stat"]
        paper_cell = ("≈ " if entry.approx else "") + f"{entry.value:g}" + (f" ± {entry.std:g}" if entry.std else "")
        name = agg.label(group)
        notes = [entry.describe()] if entry.describe() else []
        if len(row["of"]) > 1:
            over = ", ".join(short_key(k) for k in agg.varying_keys(row["of"]))
            notes.append(f"{'best of' if stat else 'none of'} {len(row['of'])} groups over {over}")
        if notes:
            name += f" [{'; '.join(notes)}]"
        ours = "—" if stat is None else stat.format()
        seeds = f"{stat.n if stat else 0} / {entry.seeds or '?'}"
        delta = "—" if stat is None else f"{stat.mean - entry.value:+.4g}"
        cells = [entry.source, entry.task, name, f"{entry.kind} {entry.metric}", paper_cell, ours, seeds, delta]
        lines.append("| " + " | ".join(cells) + " |")
    if missing:
        not_run = sorted(
            {f"{e.source} {e.task}/{e.variant}" + (f" [{e.condition()}]" if e.where else "") for e in missing}
        )
        lines += ["", "Paper numbers for these tasks without a matching run group: " + "; ".join(not_run) + "."]
    return lines + [""]


def _task_section(agg: Aggregate, task: str, solved: Solved | None = None) -> list[str]:
    groups = agg.of_task(task)
    headline = agg.headline(task)
    columns: list[tuple[str, str]] = []
    if headline:
        columns += [("final", headline), ("best", headline)]
    if any("train/loss" in g.final for g in groups):
        columns.append(("final", "train/loss"))
    finals = {m for g in groups for m in g.final}
    # a metric only the run's evaluations during training give (valid/* where the final evaluation is the test set)
    columns += [("best", m) for m in sorted({m for g in groups for m in g.best} - finals - {headline})]
    others = sorted({m for m in finals if m.split("/")[0] in ("valid", "test")} - {headline})
    columns += [("final", m) for m in others[:EXTRA_METRICS]]
    header = ["group", "seeds", *ENDED, "unfinished"]
    header += [f"solved ({solved})"] if solved else []
    header += [f"{k} {m}" for k, m in columns]
    lines = [f"## {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        cells = [
            agg.label(g),
            ", ".join(map(str, g.seeds)),
            *(str(g.count(status)) for status in ENDED),
            str(g.unfinished),
        ]
        if solved:
            cells.append("{}/{}".format(*solved.count(g)))
        for kind, metric in columns:
            stat = (g.best if kind == "best" else g.final).get(metric)
            cells.append("—" if stat is None else stat.format())
        lines.append("| " + " | ".join(cells) + " |")
    if len(others) > EXTRA_METRICS:
        lines += ["", f"More metrics in summary.csv: {', '.join(others[EXTRA_METRICS:])}."]
    return lines + [""]


def _problem_section(runs: list[Run]) -> list[str]:
    flagged = [r for r in runs if r.status != Status.COMPLETED or r.problems]
    if not flagged:
        return []
    lines = ["## Runs that need a look", "", "| run | status | step | problems |", "|---|---|---|---|"]
    for r in flagged:
        error = (r.summary or {}).get("error")
        notes = [*r.problems, *([f"error: {error}"] if error else [])]
        lines.append(
            f"| {_display(r.path)} | {r.status} | {r.step if r.step is not None else '—'} | {'; '.join(notes) or '—'} |"
        )
    return lines + [""]


def _write_summary_csv(agg: Aggregate, paper: list[PaperEntry], path: Path, solved: Solved | None = None) -> None:
    header = [
        "task",
        "variant",
        "group",
        *agg.keys,
        "runs",
        *ENDED,
        "unfinished",
        "kind",
        "metric",
        "mean",
        "std",
        "n",
        "paper",
        "paper_std",
        "paper_source",
    ]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for g in agg.groups:
            head = [
                g.task,
                g.variant,
                agg.label(g),
                *(format_value(g.key[k]) for k in agg.keys),
                len(g.runs),
                *(g.count(status) for status in ENDED),
                g.unfinished,
            ]
            stats = [("final", m, s) for m, s in g.final.items()] + [("best", m, s) for m, s in g.best.items()]
            if solved:
                k, n = solved.count(g)
                stats.append(("solved", str(solved), Stat(k / n, None, n)))
            for kind, metric, stat in stats or [("", "", None)]:
                entry = next((e for e in paper if e.kind == kind and e.metric == metric and e.matches(g)), None)
                writer.writerow(
                    [
                        *head,
                        kind,
                        metric,
                        *(_stat_cells(stat)),
                        *([entry.value, entry.std, entry.source] if entry else ["", "", ""]),
                    ]
                )


def _write_runs_csv(agg: Aggregate, path: Path, solved: Solved | None = None) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["path", "task", "variant", "group", "seed", "status", "step", "total_steps", "problems"]
            + ([f"solved ({solved})"] if solved else [])
        )
        for g in agg.groups:
            for r in g.runs:
                writer.writerow(
                    [
                        r.path,
                        r.task,
                        r.variant,
                        agg.label(g),
                        r.seed,
                        r.status,
                        r.step,
                        (r.summary or {}).get("total_steps"),
                        "; ".join(r.problems),
                    ]
                    + ([solved(r)] if solved else [])
                )
        for r in agg.ungroupable:
            writer.writerow(
                [r.path, "", "", "", "", r.status, r.step, "", "; ".join(r.problems)] + ([False] if solved else [])
            )


def _display(path: Path) -> str:
    """A run's path relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stat_cells(stat: Stat | None) -> list[Any]:
    return ["", "", 0] if stat is None else [stat.mean, "" if stat.std is None else stat.std, stat.n]


def _statuses(runs: list[Run]) -> list[str]:
    return [*STATUSES, *sorted({r.status for r in runs} - set(STATUSES))]


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)):
        return math.isclose(ours, theirs, rel_tol=1e-9)
    return ours == theirs
