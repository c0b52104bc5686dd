"""`python -m radam_repro.dashboard`: run folders served live by TensorBoard, checked through TensorBoard's
own HTTP API (the JSON its web page reads) and, for the page itself, headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
from pathlib import Path

import matplotlib.image
import pytest
import torch
from omegaconf import OmegaConf

from radam_repro.dashboard.browser import BROWSERS, SCALARS_PAGE, TIMESERIES_PAGE, capture, free_port, get_json, serve
from radam_repro.loggers.statistics import histogram_record, is_histogram_step
from radam_repro.optim import Adam
from radam_repro.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def scalars(url: str, run: str, tag: str) -> list[tuple[int, float]]:
    """The (step, value) points TensorBoard serves; none while the tag does not exist (404)."""
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    try:
        return [(step, value) for _, step, value in get_json(f"{url}/data/plugin/scalars/scalars?{query}")]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise


def expected_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as TensorBoard should serve it: ``<split>/<key>`` per step (the first row of a step wins)."""
    out: dict[str, dict[int, float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key not in ("step", "split", "epoch"):
                out.setdefault(f"{row['split']}/{key}", {}).setdefault(row["step"], value)
    return {tag: sorted(points.items()) for tag, points in out.items()}


def wait_until(predicate, what: str, timeout: float = 60):
    from conftest import wait_for

    return wait_for(predicate, timeout, what)


def hparams(url: str) -> tuple[dict, list[dict]]:
    experiment = get_json(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
    groups = get_json(
        f"{url}/data/plugin/hparams/session_groups",
        {"experimentName": "", "allowedStatuses": STATUSES, "colParams": [], "startIndex": 0, "sliceSize": 100},
    )["sessionGroups"]
    return experiment, groups


# -- fast: run folders written by the run folder's own writers, a real optimizer's histograms ----------------
def write_cell(root: Path, variant: str, seed: int, steps: int = 20) -> RunDir:
    """A run folder as the training loop leaves it at ``steps`` (RunDir's writers, statistics' histograms)."""
    run = RunDir(root / f"optimizer={variant},seed={seed}")
    run.write_config(
        OmegaConf.create(
            {
                "optimizer": {"name": variant, "lr": 1e-3 if variant == "adam" else 2e-3},
                "task": {"name": "toy"},
                "seed": seed,
                "trainer": {"max_steps": 100},
            }
        )
    )
    run.write_summary(status="running", step=0, final={}, best={})
    append_steps(run, seed, 1, steps)
    return run


def append_steps(run: RunDir, seed: int, first: int, last: int) -> None:
    torch.manual_seed(seed * 1000 + first)
    model = torch.nn.Linear(6, 3)
    optimizer = Adam(model.parameters(), lr=1e-3)
    names = {p: n for n, p in model.named_parameters()}
    for step in range(first, last + 1):
        loss = model(torch.randn(8, 6)).pow(2).mean()
        loss.backward()
        optimizer.step()
        if is_histogram_step(step):
            run.write_histogram(step, histogram_record(step, optimizer, names))
        optimizer.zero_grad()
        if step % 10 == 0:
            run.append_metrics(
                [{"step": step, "epoch": step / 100, "split": "train", "loss": 10.0 * seed + step, "lr": 1e-3 * step}]
            )


@pytest.mark.slow  # a longer real run: CI runs it (.ci/run selects every marker)
def test_a_running_cell_updates_live_and_a_resumed_one_is_not_doubled(tmp_path):
    sweep = tmp_path / "sweep"
    cell = write_cell(sweep, "adam", 1, steps=20)
    with serve([sweep], free_port(), tmp_path / "cache", runs=1) as url:
        assert get_json(f"{url}/data/runs") == ["adam seed=1"]
        wait_until(lambda: scalars(url, "adam seed=1", "train/loss") == [(10, 20.0), (20, 30.0)], "the first rows")

        # the loop appends rows (and a half-written one that must wait for its newline)
        append_steps(cell, 1, 21, 40)
        with cell.metrics_path.open("a") as f:
            f.write('{"step": 50, "split": "train", "lo')
        wait_until(
            lambda: [s for s, _ in scalars(url, "adam seed=1", "train/loss")] == [10, 20, 30, 40], "steps 30, 40"
        )
        with cell.metrics_path.open("a") as f:
            f.write('ss": 60.0}\n')
        wait_until(lambda: scalars(url, "adam seed=1", "train/loss")[-1] == (50, 60.0), "the completed line")

        # a resume rewrites metrics.jsonl up to its checkpoint (step 30) and replays: each step stays once
        cell.truncate_metrics(30)
        cell.append_metrics(
            [
                {"step": 40, "split": "train", "loss": 50.0},
                {"step": 50, "split": "train", "loss": 60.0},
                {"step": 60, "split": "train", "loss": 70.0},
            ]
        )
        wait_until(lambda: scalars(url, "adam seed=1", "train/loss")[-1] == (60, 70.0), "step 60 after the resume")
        assert [s for s, _ in scalars(url, "adam seed=1", "train/loss")] == [10, 20, 30, 40, 50, 60]

        # a new cell of the sweep appears, and a cell that ends gets its final/best metrics
        write_cell(sweep, "radam", 2, steps=10)
        wait_until(lambda: "radam seed=2" in get_json(f"{url}/data/runs"), "the new cell")
        cell.write_summary(status="completed", step=60, final={"valid/loss": 0.5}, best={"valid/loss": 0.25})
        wait_until(lambda: scalars(url, "adam seed=1", "final/valid/loss") == [(60, 0.5)], "final/valid/loss")
        assert scalars(url, "adam seed=1", "best/valid/loss") == [(60, 0.25)]
        histograms = get_json(f"{url}/data/plugin/histograms/tags")
        assert set(histograms["adam seed=1"]) == {
            "hist/log_abs_grad",
            "hist/log_abs_exp_avg",
            "hist/log_abs_exp_avg_sq",
        }
        _, groups = hparams(url)
        by_name = {g["name"]: g for g in groups}
        assert by_name["adam seed=1"]["hparams"]["optimizer.lr"] == 1e-3
        assert by_name["radam seed=2"]["hparams"]["variant"] == "radam"
    assert {p.name for p in cell.path.iterdir()} == {"config.yaml", "summary.json", "metrics.jsonl", "histograms"}, (
        "the dashboard writes nothing into a run folder"
    )


def test_a_missing_folder_is_named(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "radam_repro.dashboard", "no/such/sweep", "--cache", str(tmp_path / "cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "no such folder:" in proc.stderr and "no/such/sweep" in proc.stderr
    assert not (tmp_path / "cache").exists(), "nothing is written before the folders are checked"


# -- slow: a real sweep through the CLI, then the dashboard and a browser over it ---------------------------
@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from conftest import run_cli

    runs = tmp_path_factory.mktemp("dash") / "runs"
    run_cli(
        "-m",
        "hydra/launcher=joblib",
        "optimizer=adam,adam_warmup",
        "seed=1,2",
        "task=nmt_synthetic",
        "trainer.max_steps=30",
        "trainer.log_every=10",
        "trainer.eval_every=10",
        "group=dash",
        runs=runs,
        timeout=1200,
    )
    return runs / "dash"


@pytest.mark.slow
def test_the_sweep_is_served_scalars_histograms_hparams(sweep, tmp_path):
    cells = {}
    for summary in sweep.rglob("summary.json"):
        config = OmegaConf.load(summary.parent / "config.yaml")
        cells[f"{config.optimizer.name} seed={config.seed}"] = summary.parent
    assert set(cells) == {"adam seed=1", "adam seed=2", "adam_warmup seed=1", "adam_warmup seed=2"}
    with serve([sweep], free_port(), tmp_path / "cache", runs=4) as url:
        assert sorted(get_json(f"{url}/data/runs")) == sorted(cells)
        tags = get_json(f"{url}/data/plugin/scalars/tags")
        histogram_tags = get_json(f"{url}/data/plugin/histograms/tags")
        for name, run in cells.items():
            expected = expected_scalars(run)
            assert {"train/loss", "train/lr", "train/multiplier", "train/adaptive_lr/var_mean", "valid/loss"} <= set(
                expected
            )
            assert set(expected) <= set(tags[name])
            for tag, points in expected.items():  # every metric, at its optimizer steps, with its value
                assert scalars(url, name, tag) == points, (name, tag)
            assert [s for s, _ in expected["train/loss"]] == [10, 20, 30]
            summary = json.loads((run / "summary.json").read_text())
            assert scalars(url, name, "final/valid/loss") == [(30, summary["final"]["valid/loss"])]
            assert scalars(url, name, "best/valid/loss") == [(30, summary["best"]["valid/loss"])]

            assert set(histogram_tags[name]) == {"hist/log_abs_grad", "hist/log_abs_exp_avg", "hist/log_abs_exp_avg_sq"}
            query = urllib.parse.urlencode({"run": name, "tag": "hist/log_abs_grad"})
            served = get_json(f"{url}/data/plugin/histograms/histograms?{query}")
            records = [json.loads(p.read_text()) for p in sorted((run / "histograms").glob("step_*.json"))]
            assert [step for _, step, _ in served] == [r["step"] for r in records] == [1, 5, 10, 25]
            for (_, _, buckets), record in zip(served, records):
                assert sum(count for _, _, count in buckets) == sum(record["hist"]["log_abs_grad"]["counts"])

        experiment, groups = hparams(url)
        infos = {h["name"]: h for h in experiment["hparamInfos"]}
        assert infos["variant"]["differs"] and set(infos["variant"]["domainDiscrete"]) == {"adam", "adam_warmup"}
        assert infos["optimizer.warmup.kind"]["differs"] and not infos["optimizer.lr"]["differs"]
        assert {"final/valid/loss", "best/valid/loss", "train/loss"} <= {
            m["name"]["tag"] for m in experiment["metricInfos"]
        }
        assert sorted(g["name"] for g in groups) == sorted(cells)
        for group in groups:
            run = cells[group["name"]]
            config = OmegaConf.load(run / "config.yaml")
            assert group["hparams"]["variant"] == config.optimizer.name and group["hparams"]["seed"] == config.seed
            final = next(m["value"] for m in group["metricValues"] if m["name"]["tag"] == "final/valid/loss")
            assert final == json.loads((run / "summary.json").read_text())["final"]["valid/loss"]


def chromium_or_skip() -> None:
    if not any(shutil.which(b) for b in BROWSERS):
        message = "headless Chromium not installed (apt-get install -y chromium; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.slow
def test_a_browser_renders_the_scalars_page(sweep, tmp_path):
    chromium_or_skip()
    names = ("adam seed=1", "adam seed=2", "adam_warmup seed=1", "adam_warmup seed=2")
    tags = ("train/loss", "train/lr", "train/multiplier", "valid/loss")
    with serve([sweep], free_port(), tmp_path / "cache", runs=4) as url:
        dom = capture(f"{url}/{TIMESERIES_PAGE}", tmp_path / "timeseries.png", expect=names + tags)
        png = tmp_path / "dashboard.png"
        capture(f"{url}/{SCALARS_PAGE}", png)
    for name in names:
        assert name in dom, f"{name} not rendered"
    for tag in tags:
        assert tag in dom, f"no {tag} card"
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[:2] == (1000, 1600) and pixels.std() > 0.05
