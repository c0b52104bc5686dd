"""PNG figures from run folders (matplotlib, Agg), one file per (figure, task).

* ``train_loss_<task>``: training loss vs step per group (Fig. 1; Adam-2k drawn from -K, i.e.
  x = step - freeze_steps, as the paper indexes it from -1999), one panel per lr when lr varies.
* ``eval_curves_<task>``: the task's headline metric vs step, one panel per lr (Fig. 6/7's curves).
* ``lr_robustness_<task>``: final and best headline metric vs lr per optimizer (Fig. 6).
* ``warmup_length_<task>``: headline metric vs linear-warmup length per lr, RAdam dashed (Fig. 7).
* ``grad_hist_<task>``: heat maps of the log|g| histograms over steps per group (Fig. 2/3).
* ``adaptive_lr_<task>``: ``multiplier`` and every logged ``adaptive_lr/*`` statistic vs step.
* ``robustness_<task>_<variant>`` (with a ``solved`` criterion): over a grid of lr (else depth) x one other key of the
  variant (its warmup horizon: warmup steps, RAdam's beta2 read as nu = 2 / (1 - beta2), Adam-2k's K,
  Adam-eps's eps), heat maps of the fraction of seeds solved and of the mean final metric (Fig. 6/7 as a map).

Curves are means over a group's seeds with a min-max band.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from radam_repro.report.aggregate import (  # noqa: E402
    Aggregate,
    Group,
    format_value,
    hashable,
    short_key,
    sort_key,
)
from radam_repro.report.runs import Run  # noqa: E402
from radam_repro.report.tables import Solved  # noqa: E402
from radam_repro.run_folder import Status, higher_is_better  # noqa: E402

LR = "optimizer.lr"
HEATMAP_X = {LR: "learning rate", "task.model.layers": "encoder = decoder layers"}  # the first one swept
MAX_HISTOGRAM_PANELS = 12
HISTOGRAM_LABELS = {"log_abs_grad": "ln|g|", "log_abs_exp_avg": "ln|m|", "log_abs_exp_avg_sq": "ln|v|"}
DPI = 110


def write_figures(agg: Aggregate, out: Path, solved: Solved | None = None) -> list[Path]:
    """Every figure the runs have data for; a figure that fails is reported and skipped."""
    out.mkdir(parents=True, exist_ok=True)

    def robustness(agg: Aggregate, task: str, out: Path) -> list[Path]:
        return robustness_heatmaps(agg, task, out, solved)

    makers: list[Callable[[Aggregate, str, Path], Path | list[Path] | None]] = [
        train_loss,
        eval_curves,
        lr_robustness,
        warmup_length,
        gradient_histograms,
        adaptive_lr_statistics,
        robustness,
    ]
    written = []
    for task in agg.tasks():
        for make in makers:
            try:
                paths = make(agg, task, out)
            except Exception as e:  # noqa: BLE001 - one bad figure must not cost the whole report
                print(f"[report] figure {make.__name__} for {task} skipped: {type(e).__name__}: {e}")
                continue
            written += paths if isinstance(paths, list) else [paths] if paths is not None else []
    return written


# -- curves ---------------------------------------------------------------------------------------
def mean_curve(runs: list[Run], split: str, key: str, shift: int = 0) -> tuple[np.ndarray, ...] | None:
    """(steps + shift, mean, min, max) of ``key`` over the runs' ``split`` rows, per logged step."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for row in run.rows:
            value = row.get(key)
            if row.get("split") == split and isinstance(value, (int, float)) and math.isfinite(value):
                by_step[row["step"]].append(value)
    if not by_step:
        return None
    steps = np.array(sorted(by_step))
    values = [by_step[s] for s in steps]
    mean, low, high = (np.array([f(v) for v in values]) for f in (np.mean, min, max))
    return steps + shift, mean, low, high


def freeze_shift(group: Group) -> int:
    """Adam-2k is indexed from -K + 1 (the paper's -1999): x = step - freeze_steps."""
    return -int((group.runs[0].config.get("optimizer") or {}).get("freeze_steps") or 0)


def train_loss(agg: Aggregate, task: str, out: Path) -> Path | None:
    return _curves(agg, task, out, "train", "loss", "train_loss", "training loss", "Training loss (paper Fig. 1)")


def eval_curves(agg: Aggregate, task: str, out: Path) -> Path | None:
    metric = agg.headline(task)
    if metric is None:
        return None
    split, key = metric.split("/", 1)
    return _curves(agg, task, out, split, key, "eval_curves", metric, f"{metric} during training (paper Fig. 6/7)")


def _curves(
    agg: Aggregate, task: str, out: Path, split: str, key: str, stem: str, ylabel: str, title: str
) -> Path | None:
    groups = agg.of_task(task)
    curves = {id(g): mean_curve(g.runs, split, key, freeze_shift(g)) for g in groups}
    if sum(c is not None and len(c[0]) > 1 for c in curves.values()) == 0:
        return None
    panels = _panels(agg, task, groups)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.5 * len(panels) + 3, 4.8), sharey=True, squeeze=False, layout="constrained"
    )
    colors = _colors(agg, groups, panel_key=LR if len(panels) > 1 else None)
    for ax, (panel, members) in zip(axes[0], panels.items()):
        for g in members:
            curve = curves[id(g)]
            if curve is None:
                continue
            x, mean, low, high = curve
            shift = freeze_shift(g)
            label = _series_label(agg, g, drop=LR if len(panels) > 1 else None) + (
                f" (x = step − {-shift})" if shift else ""
            )
            ax.plot(x, mean, color=colors[id(g)], label=f"{label}, n={len(g.runs)}", lw=1.4)
            if len(g.runs) > 1:
                ax.fill_between(x, low, high, color=colors[id(g)], alpha=0.2, lw=0)
        ax.set(xlabel=_step_label(members), title=panel)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    if _spans_decades(axes[0]):
        for ax in axes[0]:
            ax.set_yscale("log")
    fig.suptitle(f"{task}: {title}")
    _legend(fig, axes[0])
    return _save(fig, out / f"{stem}_{task}.png")


# -- robustness ----------------------------------------------------------------------------------
def lr_robustness(agg: Aggregate, task: str, out: Path) -> Path | None:
    """Fig. 6: final and best headline metric vs lr, one line per group without its lr."""
    metric = agg.headline(task)
    groups = [g for g in agg.of_task(task) if isinstance(g.key.get(LR), (int, float))]
    if metric is None or not _lr_varies(groups):
        return None
    series = _series(agg, groups, drop=LR)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8), sharey=True, layout="constrained")
    for ax, kind in zip(axes, ("final", "best")):
        for i, (label, members) in enumerate(series.items()):
            _errorbar(ax, [(g.key[LR], getattr(g, kind).get(metric)) for g in members], label, f"C{i % 10}", "o-")
        ax.set(xscale="log", xlabel="learning rate", title=f"{kind} {metric}")
        _value_ticks(ax, [g.key[LR] for g in groups])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{metric} ({'higher' if higher_is_better(metric) else 'lower'} is better)")
    _legend(fig, axes)
    fig.suptitle(f"{task}: robustness to the learning rate (paper Fig. 6); mean ± std over seeds")
    return _save(fig, out / f"lr_robustness_{task}.png")


DASHES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))


def warmup_length(agg: Aggregate, task: str, out: Path) -> Path | None:
    """Fig. 7: headline metric vs linear warmup length, one line per lr; RAdam at that lr dashed (one dash style
    per RAdam group when several share the lr, e.g. a sweep over beta2, each labelled with what tells it apart)."""
    metric = agg.headline(task)
    warm = [g for g in agg.of_task(task) if _config(g, "optimizer", "warmup", "kind") == "linear"]
    lengths = {_config(g, "optimizer", "warmup", "steps") for g in warm}
    if metric is None or len(lengths) < 2:
        return None
    # one line per lr and task setting (e.g. the depth axis's task.model.layers), RAdam's groups beside theirs
    task_keys = sorted({k for g in warm for k in g.key if k.startswith("task.")})
    task_keys = [k for k in task_keys if len({hashable(g.key.get(k)) for g in warm}) > 1]

    def line(g: Group) -> tuple:
        return (sort_key(_config(g, "optimizer", "lr")), *(sort_key(g.key.get(k)) for k in task_keys))

    by_line: dict[tuple, list[Group]] = defaultdict(list)
    for g in warm:
        by_line[line(g)].append(g)
    radam: dict[tuple, list[Group]] = defaultdict(list)  # several per line when RAdam's beta2 is swept too
    for g in agg.of_task(task):
        if g.variant == "radam":
            radam[line(g)].append(g)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8), sharey=True, layout="constrained")
    for ax, kind in zip(axes, ("final", "best")):
        for i, key in enumerate(sorted(by_line)):
            color = f"C{i % 10}"
            first = by_line[key][0]
            where = ", ".join(
                f"{short_key(k)}={format_value(v)}"
                for k, v in [(LR, _config(first, "optimizer", "lr"))] + [(k, first.key.get(k)) for k in task_keys]
            )
            points = [(_config(g, "optimizer", "warmup", "steps"), getattr(g, kind).get(metric)) for g in by_line[key]]
            _errorbar(ax, points, f"Adam + linear warmup, {where}", color, "o-")
            for n, g in enumerate(radam.get(key, [])):
                stat = getattr(g, kind).get(metric)
                if stat is not None:
                    label = f"{agg.label(g, omit=(LR, *task_keys))}, {where}"
                    ax.axhline(stat.mean, color=color, ls=DASHES[n % len(DASHES)], lw=1.2, label=label)
        ax.set(xscale="log", xlabel="linear warmup steps", title=f"{kind} {metric}")
        _value_ticks(ax, lengths)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    _legend(fig, axes)
    fig.suptitle(f"{task}: warmup length vs RAdam (paper Fig. 7); mean ± std over seeds")
    return _save(fig, out / f"warmup_length_{task}.png")


def robustness_heatmaps(agg: Aggregate, task: str, out: Path, solved: Solved | None = None) -> list[Path]:
    """Per variant whose groups span >= 2 lrs (else depths: ``task.model.layers``) x >= 2 values of one other key
    (keys that move with it, such as Adam-2k's run length with its K, ride along): heat maps over the grid of the
    fraction of seeds solved (with ``solved``) and of the mean final metric over completed seeds. Drawn only with
    a ``solved`` criterion."""
    if solved is None:
        return []
    metric = solved.metric
    written = []
    for (task_name, variant), keys in agg.label_keys.items():
        x_key = next((k for k in HEATMAP_X if k in keys), None)
        axes_keys = [k for k in keys if k != x_key]
        groups = [g for g in agg.of_task(task) if g.variant == variant]
        if task_name != task or x_key is None or not axes_keys:
            continue
        key = axes_keys[0]
        combinations = {tuple(hashable(g.key[k]) for k in axes_keys) for g in groups}
        if len(combinations) != len({hashable(g.key[key]) for g in groups}):
            continue  # a second independent axis: not a 2-D grid
        xs = sorted({g.key[x_key] for g in groups}, key=sort_key)
        horizons = sorted({hashable(g.key[key]) for g in groups}, key=_horizon_sort)
        cell = {(xs.index(g.key[x_key]), horizons.index(hashable(g.key[key]))): g for g in groups}
        panels = [
            ("solved", f"fraction of seeds solved ({solved})"),
            ("mean", f"mean final {metric} (completed seeds)"),
        ]
        fig, axes = plt.subplots(
            1, len(panels), figsize=(5.2 * len(panels) + 1, 4.2), squeeze=False, layout="constrained"
        )
        for ax, (kind, title) in zip(axes[0], panels):
            grid = np.full((len(horizons), len(xs)), np.nan)
            for (i, j), g in cell.items():
                if kind == "solved":
                    k, n = solved.count(g)
                    grid[j, i], text = k / n, f"{k}/{n}"
                else:
                    stat = g.final.get(metric)
                    grid[j, i] = np.nan if stat is None else stat.mean
                    text = "—" if stat is None else f"{stat.mean:.2g}"
                    text += f"\n{g.count(Status.DIVERGED)} div." if g.count(Status.DIVERGED) else ""
                ax.text(
                    i,
                    j,
                    text,
                    ha="center",
                    va="center",
                    fontsize=9,
                    bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7, "lw": 0},
                )
            if kind == "solved":
                image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, origin="lower", aspect="auto")
            else:
                finite = grid[np.isfinite(grid)]
                wide = finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() > 10  # log scale
                norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if wide else None
                cmap = "viridis" if higher_is_better(metric) else "viridis_r"
                image = ax.imshow(grid, cmap=cmap, norm=norm, origin="lower", aspect="auto")
            fig.colorbar(image, ax=ax, shrink=0.85)
            ax.set_xticks(range(len(xs)), [format_value(v) for v in xs])
            ax.set_yticks(range(len(horizons)), [_horizon_label(key, v) for v in horizons])
            ax.set(xlabel=HEATMAP_X[x_key], ylabel=_horizon_name(key), title=title)
        seeds = sorted({len(g.runs) for g in groups})
        axis = "lr" if x_key == LR else "layers"
        fig.suptitle(f"{task}: {variant}, {axis} x {_horizon_name(key)}; runs per cell: {'/'.join(map(str, seeds))}")
        written.append(_save(fig, out / f"robustness_{task}_{variant}.png"))
    return written


def _horizon_sort(value: Any) -> tuple:
    return sort_key(value[-1] if isinstance(value, tuple) and value else value)


def _horizon_name(key: str) -> str:
    return {
        "optimizer.betas": "beta2 (nu = 2 / (1 - beta2))",
        "optimizer.warmup.steps": "linear warmup steps W",
        "optimizer.freeze_steps": "frozen steps K",
        "optimizer.eps": "eps",
    }.get(key, key.removeprefix("optimizer."))


def _horizon_label(key: str, value: Any) -> str:
    if key == "optimizer.betas" and isinstance(value, tuple) and value[-1] < 1:
        return f"{value[-1]:g} (nu = {2 / (1 - value[-1]):.3g})"
    return format_value(value)


# -- optimizer internals -------------------------------------------------------------------------
def gradient_histograms(agg: Aggregate, task: str, out: Path, kind: str = "log_abs_grad") -> Path | None:
    """Fig. 2/3: per group (its first run with histograms), the distribution of log|g| at each logged step."""
    panels = []
    for g in agg.of_task(task):
        records = next((r for r in (run.histograms() for run in g.runs) if r), [])
        records = [rec for rec in records if (rec.get("hist") or {}).get(kind, {}).get("counts")]
        if records:
            panels.append((agg.label(g), records))
    if not panels:
        return None
    panels = panels[:MAX_HISTOGRAM_PANELS]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    matrices = [(label, *_histogram_matrix(records, kind)) for label, records in panels]
    floor = max(1e-6, min(d[d > 0].min() for *_, d in matrices))
    norm = LogNorm(vmin=floor, vmax=max(d.max() for *_, d in matrices))
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.6 * columns + 1, 3.6 * rows), squeeze=False, layout="constrained"
    )
    for ax, (label, steps, edges, density) in zip(axes.flat, matrices):
        mesh = ax.pcolormesh(np.arange(len(steps) + 1), edges, density.T, cmap="viridis", norm=norm)
        ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 10)).astype(int))
        ax.set_xticks(ticks + 0.5, [str(steps[i]) for i in ticks], fontsize=7, rotation=45)
        ax.set(title=label, xlabel="step (logged snapshots)", ylabel=HISTOGRAM_LABELS.get(kind, kind))
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.colorbar(mesh, ax=axes, label="fraction of values in the bin", shrink=0.8)
    fig.suptitle(f"{task}: distribution of {HISTOGRAM_LABELS.get(kind, kind)} over steps (paper Fig. 2/3)")
    return _save(fig, out / f"grad_hist_{task}.png")


def _histogram_matrix(records: list[dict[str, Any]], kind: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Re-bin every snapshot onto one grid spanning its non-empty bins: (steps, edges, fractions[step, bin])."""
    centers, weights = [], []
    for rec in records:
        edges = np.asarray(rec["hist"][kind]["edges"], dtype=float)
        counts = np.asarray(rec["hist"][kind]["counts"], dtype=float)
        centers.append((edges[:-1] + edges[1:]) / 2)
        weights.append(counts / max(counts.sum(), 1.0))
    occupied = np.concatenate([c[w > 0] for c, w in zip(centers, weights)])
    width = np.median(np.concatenate([np.diff(c) for c in centers if len(c) > 1] or [np.array([1.0])]))
    grid = np.arange(occupied.min() - width, occupied.max() + 2 * width, width)
    density = np.stack([np.histogram(c, bins=grid, weights=w)[0] for c, w in zip(centers, weights)])
    return [int(rec.get("step", i)) for i, rec in enumerate(records)], grid, density


def adaptive_lr_statistics(agg: Aggregate, task: str, out: Path) -> Path | None:
    """``multiplier`` and every ``adaptive_lr/*`` key of the train rows, vs step, per group."""
    groups = agg.of_task(task)
    keys = sorted(
        {
            k
            for g in groups
            for run in g.runs
            for row in run.train_rows()
            for k in row
            if k == "multiplier" or k.startswith("adaptive_lr/")
        }
    )
    if not keys:
        return None
    colors = _colors(agg, groups)
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys) + 3, 4.5), squeeze=False, layout="constrained")
    for ax, key in zip(axes[0], keys):
        for g in groups:
            curve = mean_curve(g.runs, "train", key, freeze_shift(g))
            if curve is not None:
                marker = "." if len(curve[0]) < 60 else None  # sparse points (histogram steps) stay visible
                ax.plot(curve[0], curve[1], color=colors[id(g)], label=agg.label(g), lw=1.2, marker=marker)
        ax.set(xlabel=_step_label(groups), title=key)
        ax.grid(alpha=0.3)
        if _spans_decades([ax]):
            ax.set_yscale("log")
    _legend(fig, axes[0])
    fig.suptitle(f"{task}: adaptive learning-rate statistics (mean over seeds)")
    return _save(fig, out / f"adaptive_lr_{task}.png")


# -- helpers -------------------------------------------------------------------------------------
def _config(group: Group, *path: str) -> Any:
    node: Any = group.runs[0].config
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _lr_varies(groups: list[Group]) -> bool:
    """Whether some variant ran at several lrs (one lr per variant, as Adam-2k's own, does not count)."""
    lrs: dict[str, set] = defaultdict(set)
    for g in groups:
        lrs[g.variant].add(hashable(g.key.get(LR)))
    return any(len(v) > 1 for v in lrs.values())


def _panels(agg: Aggregate, task: str, groups: list[Group]) -> dict[str, list[Group]]:
    """One panel per lr when some variant ran at several lrs, else one panel."""
    if LR not in agg.task_keys(task) or not _lr_varies(groups):
        return {"": groups}
    panels: dict[str, list[Group]] = defaultdict(list)
    for g in sorted(groups, key=lambda g: sort_key(g.key.get(LR))):
        panels[f"lr = {format_value(g.key.get(LR))}"].append(g)
    return dict(panels)


def _series(agg: Aggregate, groups: list[Group], drop: str) -> dict[str, list[Group]]:
    series: dict[str, list[Group]] = defaultdict(list)
    for g in sorted(groups, key=lambda g: sort_key(g.key.get(drop))):
        series[_series_label(agg, g, drop)].append(g)
    return dict(series)


def _series_label(agg: Aggregate, group: Group, drop: str | None) -> str:
    label = agg.label(group)
    if drop is None:
        return label
    cut = f" {drop.removeprefix('optimizer.')}={format_value(group.key.get(drop))}"
    return label.replace(cut, "")


def _colors(agg: Aggregate, groups: list[Group], panel_key: str | None = None) -> dict[int, Any]:
    """Same colour for the same series (a group without ``panel_key``) across panels."""
    labels = sorted({_series_label(agg, g, panel_key) for g in groups})
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    index = {label: i for i, label in enumerate(labels)}
    return {id(g): cmap(index[_series_label(agg, g, panel_key)] % cmap.N) for g in groups}


def _errorbar(ax, points: list[tuple[Any, Any]], label: str, color: Any, style: str) -> None:
    points = sorted(((float(x), s) for x, s in points if s is not None), key=lambda p: p[0])
    if points:
        x = [p[0] for p in points]
        ax.errorbar(
            x,
            [s.mean for _, s in points],
            yerr=[s.std or 0.0 for _, s in points],
            fmt=style,
            color=color,
            capsize=3,
            label=label,
        )


def _spans_decades(axes) -> bool:
    """Whether the plotted data are positive and span more than two decades (then a log axis reads better)."""
    values = np.concatenate(
        [np.asarray(line.get_ydata(), dtype=float) for ax in axes for line in ax.get_lines()] or [np.ones(1)]
    )
    values = values[np.isfinite(values)]
    return values.size > 0 and values.min() > 0 and values.max() / values.min() > 100


def _value_ticks(ax, values) -> None:
    """Ticks at the grid's own values (lrs, warmup lengths) rather than at powers of ten."""
    values = sorted({float(v) for v in values})
    ax.set_xticks(values, [format_value(v) for v in values])
    ax.minorticks_off()


def _step_label(groups: list[Group]) -> str:
    return "step" + (" (Adam-2k: step − K, from −K+1)" if any(freeze_shift(g) for g in groups) else "")


def _legend(fig, axes) -> None:
    """One legend for the figure, outside the axes on the right (labels deduplicated across panels)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
