"""The report on synthetic run folders written through the real RunDir (the run-folder contract in README.md).

Edge cases that real tiny runs cannot produce on demand: seeds with known metrics, failed,
diverged, half-written and corrupted runs, configs that differ only in paths.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from radam_repro.report.__main__ import main as report_main
from radam_repro.report.aggregate import aggregate
from radam_repro.report.figures import freeze_shift, mean_curve
from radam_repro.report.runs import find_run_dirs, load_runs
from radam_repro.run_dir import RunDir

torch.set_num_threads(1)
HISTOGRAM_STEPS = (1, 5, 10, 25, 50, 75, 100, 150, 200)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(
    folder: Path,
    *,
    task: str = "cifar10",
    variant: str = "adam",
    lr: float = 1e-3,
    seed: int = 1,
    warmup_steps: int = 0,
    freeze_steps: int = 0,
    status: str | None = "completed",
    final: dict | None = None,
    best: dict | None = None,
    steps: int = 200,
    data_dir: str = "/data/cifar10",
) -> Path:
    """A run folder as train.py writes it; ``status=None`` leaves summary.json out (a killed run)."""
    run = RunDir(folder)
    config = {
        "optimizer": {
            "name": variant,
            "algorithm": "adam_2k" if freeze_steps else variant,
            "lr": lr,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "weight_decay": 0.0,
            "threshold": 5.0,
            "freeze_steps": freeze_steps,
            "warmup": {"kind": "linear" if warmup_steps else "none", "steps": warmup_steps, "init_lr": 0.0},
        },
        "task": {"name": task, "data_dir": data_dir, "batch_size": 128},
        "trainer": {"max_steps": steps, "device": "cpu", "log_every": 10, "threads": 1},
        "logger": {"kind": "local", "mode": "offline"},
        "seed": seed,
        "experiment": "synthetic",
        "data_root": "/data",
        "run_root": str(folder.parent),
    }
    run.write_config(OmegaConf.create(config))
    run.write_json("meta.json", {"seed": seed, "device": "cpu"})
    rng = np.random.default_rng(seed)
    effect = (sum(map(ord, variant)) % 7) / 10 + warmup_steps / 5000  # variants draw apart in the figures
    scale = 1.0 + 10 * lr + effect
    rows = []
    for step in range(10, steps + 1, 10):
        loss = 2.3 * math.exp(-step / (60 * scale)) + 0.3 + effect + 0.02 * rng.standard_normal()
        rows.append(
            {
                "step": step,
                "epoch": step / 100,
                "split": "train",
                "loss": loss,
                "lr": lr,
                "multiplier": min(1.0, step / 100),
                "steps_per_s": 50.0,
                "grad_norm": 1.0,
                "acc": 1 - loss / 3,
            }
        )
    for step in HISTOGRAM_STEPS:
        if step <= steps:
            rows.append(
                {
                    "step": step,
                    "epoch": step / 100,
                    "split": "train",
                    "multiplier": min(1.0, step / 100),
                    "adaptive_lr/var_mean": 1e3 / step**1.5,
                    "adaptive_lr/log10_var_mean": 3 - 1.5 * math.log10(step),
                }
            )
            edges = np.linspace(-21, 5, 105)
            counts = np.histogram(rng.normal(-8 + step / 50 - 5 * effect, 1.5 + 3 / step + effect, 5000), bins=edges)[0]
            run.write_histogram(
                step,
                {
                    "step": step,
                    "hist": {"log_abs_grad": {"edges": edges.tolist(), "counts": counts.tolist()}},
                    "adaptive_lr_var": {"fc.weight": 1e3 / step**1.5},
                },
            )
    for step in range(50, steps + 1, 50):
        acc = 0.9 - 0.3 * math.exp(-step / 80) - abs(math.log10(lr) + 2) * 0.02 - effect / 10
        rows.append({"step": step, "epoch": step / 100, "split": "valid", "loss": 1 - acc, "acc": acc})
        rows.append({"step": step, "epoch": step / 100, "split": "test", "loss": 1 - acc, "acc": acc - 0.01})
    run.append_metrics(sorted(rows, key=lambda r: r["step"]))
    if status is not None:
        final = final if final is not None else {"test/acc": 0.88, "valid/acc": 0.89}
        run.write_summary(
            status=status,
            step=steps,
            total_steps=steps,
            max_steps=steps,
            final=final,
            best=best if best is not None else dict(final),
            wall_s=1.0,
            error="RuntimeError: out of memory" if status == "failed" else None,
            diverged_step=steps if status == "diverged" else None,
        )
    return folder


def truncate_last_line(run: Path) -> None:
    path = run / "metrics.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) - 25])


def group_of(agg, **key):
    matches = [g for g in agg.groups if all(g.key.get(k) == v for k, v in key.items())]
    assert len(matches) == 1, [g.key for g in agg.groups]
    return matches[0]


def test_mean_and_sample_std_equal_a_hand_computation(tmp_path):
    values = [0.900, 0.910, 0.925]
    for seed, value in enumerate(values, 1):
        write_run(
            tmp_path / f"radam_s{seed}",
            variant="radam",
            seed=seed,
            final={"test/acc": value},
            best={"test/acc": value + 0.01},
        )
    agg = aggregate(load_runs([tmp_path]))
    (group,) = agg.groups
    mean = (0.900 + 0.910 + 0.925) / 3
    std = math.sqrt(((0.900 - mean) ** 2 + (0.910 - mean) ** 2 + (0.925 - mean) ** 2) / (3 - 1))
    assert group.final["test/acc"].mean == pytest.approx(mean, rel=1e-12)
    assert group.final["test/acc"].std == pytest.approx(std, rel=1e-12)
    assert group.final["test/acc"].n == 3
    assert group.best["test/acc"].mean == pytest.approx(mean + 0.01, rel=1e-12)
    assert agg.keys == ["task.name", "optimizer.name"]  # seeds and paths are not grouping keys

    out = report_main([str(tmp_path), "--out", str(tmp_path / "report"), "--no-figures"])
    rows = [
        r for r in csv.DictReader((out / "summary.csv").open()) if r["kind"] == "final" and r["metric"] == "test/acc"
    ]
    assert (
        len(rows) == 1 and float(rows[0]["mean"]) == pytest.approx(mean) and float(rows[0]["std"]) == pytest.approx(std)
    )
    assert f"{mean:.4g} ± {std:.4g}" in (out / "report.md").read_text()


def test_single_seed_has_no_std(tmp_path):
    write_run(tmp_path / "one", final={"test/acc": 0.9})
    out = report_main([str(tmp_path), "--out", str(tmp_path / "report"), "--no-figures"])
    (row,) = [
        r for r in csv.DictReader((out / "summary.csv").open()) if r["kind"] == "final" and r["metric"] == "test/acc"
    ]
    assert row["std"] == "" and row["n"] == "1"
    assert "0.9 ± n/a" in (out / "report.md").read_text()


def test_a_metric_only_evaluated_during_training_gets_its_best_column(tmp_path):
    """An NMT run's final evaluation is the test BLEU; its valid loss exists only as the best of the evaluations
    during training, and the task table shows it (mean ± std over seeds)."""
    for seed, loss in ((1, 3.5), (2, 3.7)):
        write_run(
            tmp_path / f"s{seed}",
            task="nmt_multi30k",
            seed=seed,
            final={"test/bleu": 20.0 + seed},
            best={"valid/loss": loss, "test/bleu": 20.0 + seed},
        )
    out = report_main([str(tmp_path), "--out", str(tmp_path / "report"), "--no-figures"])
    table = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in (out / "report.md").read_text().splitlines()
        if line.startswith("| ")
    ]
    header, row = table[0], table[1]
    assert "best valid/loss" in header and "final valid/loss" not in header
    assert row[header.index("best valid/loss")] == f"3.6 ± {statistics.stdev([3.5, 3.7]):.4g}"


def test_failed_diverged_and_half_written_runs_are_counted_and_listed(tmp_path, capsys):
    write_run(tmp_path / "s1", seed=1, final={"test/acc": 0.80})
    write_run(tmp_path / "s2", seed=2, final={"test/acc": 0.90})
    write_run(tmp_path / "s3", seed=3, status="diverged", final={"train/loss": math.nan})
    write_run(tmp_path / "s4", seed=4, status="failed", final={})
    truncate_last_line(write_run(tmp_path / "s5", seed=5, status=None))  # killed mid-write: no summary, torn line
    write_run(tmp_path / "s6", seed=6, status="running")  # summary says running, but nobody holds the lock: interrupted
    write_run(tmp_path / "s7", seed=7)
    (tmp_path / "s7" / "summary.json").write_text('{"status": "compl')  # corrupted summary
    write_run(tmp_path / "s8", seed=8)
    (tmp_path / "s8" / "config.yaml").write_text("optimizer: [unclosed\n")  # corrupted config

    runs = load_runs([tmp_path])
    status = {r.path.name: r.status for r in runs}
    assert status == {
        "s1": "completed",
        "s2": "completed",
        "s3": "diverged",
        "s4": "failed",
        "s5": "incomplete",
        "s6": "interrupted",
        "s7": "incomplete",
        "s8": "completed",
    }
    s5 = next(r for r in runs if r.path.name == "s5")
    assert any("last line" in p for p in s5.problems) and any("no summary.json" in p for p in s5.problems)
    assert len(s5.rows) > 10  # the readable lines survive

    agg = aggregate(runs)
    (group,) = agg.groups
    assert [r.path.name for r in agg.ungroupable] == ["s8"]
    assert (
        len(group.runs),
        group.count("completed"),
        group.count("diverged"),
        group.count("failed"),
        group.unfinished,
    ) == (7, 2, 1, 1, 3)
    assert group.final["test/acc"].mean == pytest.approx(0.85) and group.final["test/acc"].n == 2

    out = report_main([str(tmp_path), "--out", str(tmp_path / "report")])
    printed = capsys.readouterr().out
    assert "[report] figure" not in printed  # no figure failed on the broken runs
    assert f"incomplete {tmp_path / 's5'}" in printed
    report = (out / "report.md").read_text()
    for name, state in [
        ("s3", "diverged"),
        ("s4", "failed"),
        ("s5", "incomplete"),
        ("s6", "interrupted"),
        ("s7", "incomplete"),
        ("s8", "completed"),
    ]:
        assert any(str(tmp_path / name) in line and f"| {state} |" in line for line in report.splitlines()), name
    assert "out of memory" in report and "no readable config.yaml" in report
    runs_csv = list(csv.DictReader((out / "runs.csv").open()))
    assert sorted(r["status"] for r in runs_csv) == sorted(status.values())


def test_runs_differing_in_lr_are_never_averaged(tmp_path):
    for lr in (1e-3, 3e-3):
        for seed in (1, 2):
            # data folders differ per seed: a path is not a reason to split a group
            write_run(
                tmp_path / f"lr{lr}_s{seed}",
                lr=lr,
                seed=seed,
                data_dir=f"/scratch/{seed}/cifar10",
                final={"test/acc": 0.5 + lr * 100 + seed * 0.01},
            )
    agg = aggregate(load_runs([tmp_path]))
    assert agg.keys == ["task.name", "optimizer.name", "optimizer.lr"]
    assert len(agg.groups) == 2
    for lr in (1e-3, 3e-3):
        group = group_of(agg, **{"optimizer.lr": lr})
        assert {r.config["optimizer"]["lr"] for r in group.runs} == {lr}
        assert group.final["test/acc"].mean == pytest.approx(0.5 + lr * 100 + 0.015)
    assert [agg.label(g) for g in agg.groups] == ["adam lr=0.001", "adam lr=0.003"]


def test_other_config_differences_split_groups_too(tmp_path):
    write_run(tmp_path / "a", seed=1, steps=200)
    write_run(tmp_path / "b", seed=2, steps=100)
    agg = aggregate(load_runs([tmp_path]))
    assert "trainer.max_steps" in agg.keys and len(agg.groups) == 2
    assert len(aggregate(load_runs([tmp_path]), ignore=("trainer.max_steps",)).groups) == 1


def test_runs_are_found_recursively_and_hydra_folders_skipped(tmp_path):
    write_run(tmp_path / "sweep" / "optimizer=adam" / "seed=1")
    write_run(tmp_path / "sweep" / "optimizer=adam" / "seed=2", seed=2)
    hydra = tmp_path / "sweep" / "optimizer=adam" / "seed=2" / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text("seed: 2\n")
    (tmp_path / "sweep" / "empty").mkdir()
    found = find_run_dirs([tmp_path / "sweep"])
    assert [p.name for p in found] == ["seed=1", "seed=2"]


def test_missing_or_empty_folders_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        report_main([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        report_main([str(tmp_path / "empty"), "--out", str(tmp_path / "r")])


def test_adam_2k_curves_start_at_minus_k(tmp_path):
    write_run(tmp_path / "a2k", variant="adam_2k", freeze_steps=2000)
    agg = aggregate(load_runs([tmp_path]))
    (group,) = agg.groups
    x, mean, low, high = mean_curve(group.runs, "train", "loss", freeze_shift(group))
    assert x[0] == 10 - 2000 and x[-1] == 200 - 2000
    assert np.all(low <= mean) and np.all(mean <= high)


def test_paper_numbers_sit_beside_ours(tmp_path):
    for seed, acc in [(1, 90.5), (2, 91.5)]:  # percent, as every task logs accuracy
        write_run(
            tmp_path / f"radam_s{seed}",
            variant="radam",
            lr=0.1,
            seed=seed,
            final={"test/acc": acc},
            best={"test/acc": acc},
        )
    write_run(tmp_path / "sgd", variant="sgd", lr=0.1, final={"test/acc": 90.0}, best={"test/acc": 90.0})
    out = report_main([str(tmp_path), "--out", str(tmp_path / "report"), "--no-figures"])
    report = (out / "report.md").read_text()
    # Table 1 (no condition) and §5.2 / Table 3 (lr = 0.1) all match the RAdam group
    table1 = next(line for line in report.splitlines() if line.startswith("| Table 1 | cifar10 | radam"))
    assert "| 91.38 |" in table1 and f"| {91.0:.4g} ± {math.sqrt(2 * 0.5**2):.4g} |" in table1 and "| 2 / ? |" in table1
    assert "-0.38" in table1
    assert any(line.startswith("| §5.2 | cifar10 | radam") and "91.06" in line for line in report.splitlines())
    not_run = next(line for line in report.splitlines() if line.startswith("Paper numbers for these tasks without"))
    assert "Table 1 cifar10/adam" in not_run and "§5.2 cifar10/adam_warmup" in not_run  # listed, not tabled
    assert "imagenet" not in report  # tasks we did not run are left out
    rows = [
        r
        for r in csv.DictReader((out / "summary.csv").open())
        if r["variant"] == "sgd" and r["metric"] == "test/acc" and r["kind"] == "best"
    ]
    assert rows[0]["paper"] == "91.51" and rows[0]["paper_source"] == "Table 1"


def test_a_paper_number_open_on_our_lr_axis_is_compared_with_our_best_lr(tmp_path):
    # Table 1 names no lr: of our SGD groups at four lrs the row is the best one, not four rows
    for lr, acc, loss in [(0.003, 40.0, 1.6), (0.01, 52.0, 1.2), (0.03, 61.5, 1.3), (0.1, 60.0, 1.1)]:
        final = {"test/acc": acc, "test/loss": loss}
        write_run(tmp_path / f"sgd_{lr}", variant="sgd", lr=lr, final=final, best={"test/acc": acc})
    paper = tmp_path / "paper.yaml"
    paper.write_text(
        "entries:\n"
        "  - {source: Table 1, task: cifar10, variant: sgd, metric: test/acc, kind: best, value: 91.51}\n"
        "  - {source: Table 9, task: cifar10, variant: sgd, metric: test/loss, kind: final, value: 0.3}\n"
        "  - {source: Table 8, task: cifar10, variant: sgd, metric: train/err, kind: final, value: 0.7}\n"
    )
    out = report_main([str(tmp_path), "--out", str(tmp_path / "report"), "--no-figures", "--paper", str(paper)])
    lines = (out / "report.md").read_text().splitlines()
    table1 = [line for line in lines if line.startswith("| Table 1 | cifar10 | sgd")]
    assert len(table1) == 1, table1
    assert "sgd lr=0.03 [best of 4 groups over lr]" in table1[0] and "| 61.5 ± n/a |" in table1[0]
    assert f"| {61.5 - 91.51:+.4g} |" in table1[0]
    # a loss is better lower; a metric no group has is not called anyone's best
    table9 = [line for line in lines if line.startswith("| Table 9 | cifar10 | sgd")]
    assert len(table9) == 1 and "sgd lr=0.1 [best of 4 groups over lr] | final test/loss | 0.3 | 1.1 ± n/a" in table9[0]
    table8 = [line for line in lines if line.startswith("| Table 8 | cifar10 | sgd")]
    assert len(table8) == 1 and "[none of 4 groups over lr]" in table8[0] and table8[0].endswith("| — |"), table8


def assert_real_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    assert path.stat().st_size > 15_000, (path, path.stat().st_size)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 400, path
    rgb = (image[..., :3].reshape(-1, 3) * 255).astype(np.uint32)
    assert rgb.std(axis=0).max() > 10, path  # not a single colour
    colours = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    assert len(colours) > 50, path  # not a blank canvas with a frame


def test_every_figure_is_a_real_png(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for lr in (0.1, 0.01):
        for variant, warmup, seeds in [
            ("adam", 0, (1,)),
            ("radam", 0, (1, 2)),
            ("adam_warmup", 100, (1,)),
            ("adam_warmup", 1000, (1,)),
        ]:
            for seed in seeds:
                acc = 0.9 - (0.05 if variant == "adam" else 0.0) * lr * 10 - 0.01 * seed - warmup / 1e5 - lr / 10
                write_run(
                    sweep / f"{variant}{warmup}_lr{lr}_s{seed}",
                    variant=variant,
                    lr=lr,
                    seed=seed,
                    warmup_steps=warmup,
                    final={"test/acc": acc},
                    best={"test/acc": acc + 0.005},
                )
    write_run(sweep / "adam_2k_s1", variant="adam_2k", lr=0.1, freeze_steps=100)
    out = report_main([str(sweep), "--out", str(tmp_path / "report")])
    assert "[report] figure" not in capsys.readouterr().out
    expected = ["train_loss", "eval_curves", "lr_robustness", "warmup_length", "grad_hist", "adaptive_lr"]
    figures = sorted((out / "figures").glob("*.png"))
    assert [p.name for p in figures] == sorted(f"{kind}_cifar10.png" for kind in expected)
    for path in figures:
        assert_real_png(path)
    report = (out / "report.md").read_text()
    for path in figures:
        assert f"(figures/{path.name})" in report
    assert json.loads((sweep / "adam_2k_s1" / "summary.json").read_text())["status"] == "completed"
