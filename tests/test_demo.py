"""The README's main job through the real CLI: the demo recipe (task/nmt_synthetic.yaml, the paper's IWSLT
recipe scaled down by rules R1-R7) separates the variants as the paper does on seeds the committed reference
(results/demo_ablation, seeds 1-5) did not use; the robustness map's report renders from a tiny grid."""

from __future__ import annotations

import csv
import json
import re

import matplotlib.image
import pytest
import yaml

from radam_repro.report.runs import Run
from radam_repro.report.tables import Solved

SOLVED = 0.1  # nats: the demo's solved threshold (final valid loss)
SEEDS = (6, 7, 8)  # not the reference's 1-5
VARIANTS = ("adam", "adam_warmup", "radam", "adam_2k")


def final_losses(sweep):
    out = {}
    for summary_path in sweep.rglob("summary.json"):
        config = yaml.safe_load((summary_path.parent / "config.yaml").read_text())
        summary = json.loads(summary_path.read_text())
        assert summary["status"] == "completed", summary_path
        out[config["optimizer"]["name"], config["seed"]] = summary["final"]["valid/loss"]
    return out


@pytest.fixture(scope="module")
def demo_sweep(tmp_path_factory):
    from conftest import run_cli

    runs = tmp_path_factory.mktemp("demo") / "runs"
    proc = run_cli(
        "experiment=demo",
        "ablation=" + ",".join(VARIANTS),
        "seed=" + ",".join(map(str, SEEDS)),
        runs=runs,
        timeout=2400,
    )
    return runs / "demo", proc


FIXES = ("adam_warmup", "radam", "adam_2k")
VERDICT = re.compile(  # Adam-vanilla may solve on any number of seeds: where it lands is not asserted
    r"chance = ln 32 = 3\.47; solved \(valid/loss<0\.1\) on every run: (adam \(3/3\), )?adam_2k \(3/3\), "
    r"adam_warmup \(3/3\), radam \(3/3\)[;.]"
)


@pytest.mark.slow
def test_demo_recipe_reproduces_the_papers_outcome_on_fresh_seeds(demo_sweep):
    """What the recipe guarantees with margin, on seeds the reference did not use: the linear warmup, RAdam with
    nu = W and Adam-2k solve on every seed, and Adam-vanilla ends far above each of them on average.

    Whether vanilla solves a given seed is not asserted: at the recipe's lr it sits at the edge of stability and
    solved on 2 of the 8 seeds run here, and on a seed (7) that failed here on another CPU (README "What the demo
    shows"). Vanilla's solved runs still end 3-30x above the fixes' mean, its failed runs ~1000x."""
    sweep, _ = demo_sweep
    loss = final_losses(sweep)
    assert set(loss) == {(v, s) for v in VARIANTS for s in SEEDS}
    vanilla = sum(loss["adam", s] for s in SEEDS) / len(SEEDS)
    for variant in FIXES:
        assert all(loss[variant, s] < SOLVED for s in SEEDS), f"{variant} should solve on every seed: {loss}"
        fix = sum(loss[variant, s] for s in SEEDS) / len(SEEDS)
        assert vanilla > 3 * fix, f"Adam-vanilla (mean {vanilla:.3g}) should end far above {variant} ({fix:.3g})"


@pytest.mark.slow
def test_demo_prints_the_verdict_and_the_table_and_writes_the_report(demo_sweep):
    sweep, proc = demo_sweep
    assert VERDICT.search(proc.stdout), proc.stdout[-3000:]
    assert "| variant | seed | status |" in proc.stdout and "| radam | 6 | completed |" in proc.stdout
    assert (sweep / "table.md").read_text().count("| completed |") == 12
    report = sweep / "report"
    text = (report / "report.md").read_text()
    assert "solved (valid/loss<0.1)" in text and "| 3/3 |" in text
    with (report / "runs.csv").open() as f:
        assert sum(1 for row in csv.DictReader(f) if row["status"] == "completed") == 12
    figure = report / "figures" / "train_loss_nmt_synthetic.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(figure)
    assert pixels.shape[0] > 200 and pixels.std() > 0.05


@pytest.mark.slow  # a longer real run: CI runs it (.ci/run selects every marker)
def test_robustness_map_renders_its_heat_maps_from_a_tiny_grid(cli):
    """2 lrs x 2 horizons x 2 variants, 3 updates per cell of a 1-layer model, in-process (basic launcher)."""
    proc = cli(
        "-m",
        "experiment=warmup_robustness",
        "hydra/launcher=basic",
        "robustness=adam_warmup_W10,adam_warmup_W29,radam_nu10,radam_nu29",
        "optimizer.lr=2e-3,1e-2",
        "seed=1",
        "trainer.max_steps=3",
        "task.model.layers=1",
        "task.valid_batches=1",
        "trainer.log_every=1",
    )
    assert "solved (valid/loss<0.1) on every run: none; on none: adam_warmup (0/4), radam (0/4)." in proc.stdout
    sweep = cli.runs / "warmup_robustness"
    figures = sweep / "report" / "figures"
    for variant in ("adam_warmup", "radam"):
        pixels = matplotlib.image.imread(figures / f"robustness_nmt_synthetic_{variant}.png")
        assert pixels.shape[0] > 300 and pixels.std() > 0.05
    assert not list(figures.glob("robustness_*adam_2k*"))  # only the variants that ran
    text = (sweep / "report" / "report.md").read_text()
    assert "robustness_nmt_synthetic_radam.png" in text and "| 0/1 |" in text
    from radam_repro.report.__main__ import main as report  # the experiment's criterion, read from multirun.yaml

    again = report([str(sweep), "--out", str(cli.runs / "again"), "--no-figures"])
    assert "| solved (valid/loss<0.1) |" in (again / "report.md").read_text()
    rows = [json.loads(line) for line in next(sweep.glob("*radam_nu10*")).joinpath("metrics.jsonl").open()]
    eps_rows = [r for r in rows if "adaptive_lr/eps_dominated" in r]
    assert [r["step"] for r in eps_rows] == [1] and 0.0 <= eps_rows[0]["adaptive_lr/eps_dominated"] <= 1.0


def test_solved_counts_only_completed_runs_below_the_threshold():
    solved = Solved.parse("valid/loss<0.1")
    runs = [
        Run(path=None, config={}, summary={"final": {"valid/loss": loss}}, rows=[], status=status)
        for loss, status in ((0.05, "completed"), (0.2, "completed"), (0.01, "diverged"), (float("nan"), "completed"))
    ]
    assert [solved(r) for r in runs] == [True, False, False, False]
    assert Solved.parse("test/acc >= 0.9")(Run(None, {}, {"final": {"test/acc": 0.9}}, [], "completed"))
    with pytest.raises(ValueError, match="write METRIC<VALUE"):
        Solved.parse("valid/loss=0.1")


def test_heat_map_axis_takes_keys_that_move_with_the_horizon(tmp_path):
    """Adam-2k's run length T + K moves with K: still one map, K on its axis, the solved counts in its cells."""
    from radam_repro.report.aggregate import aggregate
    from radam_repro.report.figures import robustness_heatmaps

    runs = []
    for lr in (1e-3, 1e-2):
        for k in (5, 42):
            for seed in (1, 2):
                config = {
                    "seed": seed,
                    "task": {"name": "toy", "max_update": 500 + k},
                    "optimizer": {"name": "adam_2k", "lr": lr, "freeze_steps": k},
                }
                loss = 0.05 if (lr, k, seed) != (1e-2, 5, 2) else 3.0
                runs.append(
                    Run(tmp_path / f"{lr}-{k}-{seed}", config, {"final": {"valid/loss": loss}}, [], "completed")
                )
    agg = aggregate(runs)
    [path] = robustness_heatmaps(agg, "toy", tmp_path, Solved.parse("valid/loss<0.1"))
    assert path.name == "robustness_toy_adam_2k.png" and matplotlib.image.imread(path).std() > 0.05
    counts = {
        (g.key["optimizer.lr"], g.key["optimizer.freeze_steps"]): Solved.parse("valid/loss<0.1").count(g)
        for g in agg.groups
    }
    assert counts == {(1e-3, 5): (2, 2), (1e-3, 42): (2, 2), (1e-2, 5): (1, 2), (1e-2, 42): (2, 2)}


def test_warmup_length_figure_draws_every_radam_group_at_an_lr(tmp_path, monkeypatch):
    """A map sweeps RAdam's beta2 at each lr: the Fig. 7 panel draws one RAdam line per beta2 with its own value
    and label, not whichever group came last."""
    from radam_repro.report import figures
    from radam_repro.report.aggregate import aggregate

    def run(name, acc, **optimizer):
        config = {"seed": 1, "task": {"name": "toy"}, "optimizer": {"name": name, "lr": 1e-3, **optimizer}}
        return Run(tmp_path / f"{name}-{acc}", config, {"final": {"valid/acc": acc}}, [], "completed")

    runs = [run("adam_warmup", 50.0 + w, warmup={"kind": "linear", "steps": w}) for w in (10, 29)]
    runs += [run("radam", 10.0, betas=[0.9, 0.8]), run("radam", 100.0, betas=[0.9, 0.977])]
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig) or path)
    assert figures.warmup_length(aggregate(runs), "toy", tmp_path).name == "warmup_length_toy.png"
    final_panel = saved[0].axes[0]
    radam_lines = {line.get_label(): line.get_ydata()[0] for line in final_panel.lines if "radam" in line.get_label()}
    assert radam_lines == {"radam betas=(0.9, 0.8), lr=0.001": 10.0, "radam betas=(0.9, 0.977), lr=0.001": 100.0}
