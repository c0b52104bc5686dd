"""The harness through its real CLI on the staged CIFAR-10 files: run folders, resume, divergence, W&B, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, data_root

PAPER_VARIANTS = ["adam", "adam_warmup", "adam_2k", "adam_eps", "radam", "radam_simple"]
HIST_STEPS = [1, 5, 10, 25]


def cifar_overrides(cifar_dir: Path, steps: int = 30) -> list[str]:
    """A short CIFAR run: ResNet-8 (the same code as the paper's ResNet-20 with one block a stage, ~3x cheaper)."""
    return [
        f"task.data_dir={cifar_dir}",
        "task.depth=8",
        "task.check_integrity=false",
        "task.train_subset=640",
        "task.batch_size=64",
        f"trainer.max_steps={steps}",
        "trainer.log_every=10",
        "trainer.eval_every=20",
    ]


def run_folders(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.rglob("summary.json"))


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_six_paper_variants_multirun_write_complete_run_folders(cli, cifar_dir, tmp_path):
    # freeze_steps applies to Adam-2k alone (the other schemas reject it): a recipe on the search path sets it
    recipe = tmp_path / "extra_configs" / "recipe" / "cifar10_adam_2k.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text("# @package _global_\noptimizer:\n  freeze_steps: 8\n")
    cli(
        "-m",
        f"optimizer={','.join(PAPER_VARIANTS)}",
        "optimizer.warmup.steps=10",
        f"hydra.searchpath=[file://{recipe.parents[1]}]",
        *cifar_overrides(cifar_dir),
        timeout=900,
    )
    runs = run_folders(cli.runs)
    assert len(runs) == len(PAPER_VARIANTS)
    seen = set()
    for run in runs:
        for name in ("config.yaml", "meta.json", "metrics.jsonl", "summary.json", "checkpoints/latest.pt"):
            assert (run / name).is_file(), f"{run}/{name} missing"
        config = yaml.safe_load((run / "config.yaml").read_text())
        seen.add(config["optimizer"]["name"])
        meta = json.loads((run / "meta.json").read_text())
        assert meta["seed"] == 1 and meta["versions"]["torch"] == torch.__version__ and meta["git_commit"]
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.is_file() and "model name" in cpuinfo.read_text():  # the CPU's model, not platform's "" on Linux
            assert meta["device_name"] in cpuinfo.read_text() and meta["device_name"] != "cpu"
        assert meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["step"] == 30
        assert 0 <= summary["final"]["test/acc"] <= 100 and summary["final"]["test/loss"] > 0
        train_rows = [r for r in read_metrics(run) if r["split"] == "train" and "loss" in r]
        assert [r["step"] for r in train_rows] == [10, 20, 30]
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train_rows)
        assert [r["step"] for r in read_metrics(run) if r["split"] == "test"] == [20, 30]
        hist_files = sorted((run / "histograms").glob("step_*.json"))
        assert [int(p.stem.split("_")[1]) for p in hist_files] == HIST_STEPS
        record = json.loads(hist_files[-1].read_text())
        grad_hist = record["hist"]["log_abs_grad"]
        n_params = sum(
            p.numel()
            for p in __import__("radam_repro.models.resnet_cifar", fromlist=["x"])
            .CifarResNet(config["task"]["depth"])
            .parameters()
        )
        assert sum(grad_hist["counts"]) == n_params and len(grad_hist["edges"]) == len(grad_hist["counts"]) + 1
        assert record["adaptive_lr_var"] and all(v >= 0 for v in record["adaptive_lr_var"].values())
        multipliers = {r["step"]: r["multiplier"] for r in read_metrics(run) if "adaptive_lr/var_mean" in r}
        if config["optimizer"]["name"] == "radam":  # r_t at beta2 = 0.999: SGD phase then eq. (6)
            assert multipliers[5] == 1.0 and multipliers[10] == pytest.approx(0.0490, abs=1e-4)
        if config["optimizer"]["name"] == "adam_2k":
            assert multipliers[5] == 0.0 and multipliers[10] == 1.0
    assert seen == set(PAPER_VARIANTS)


# ~1 min each on 2 busy cores: the default suite keeps SIGTERM (the checkpoint at a step boundary), SIGKILL is slow
@pytest.mark.parametrize("sig", [pytest.param(signal.SIGKILL, marks=pytest.mark.slow), signal.SIGTERM])
def test_kill_and_resume_is_bit_identical(tmp_path, cifar_dir, sig):
    """SIGKILL: resume from the last periodic checkpoint. SIGTERM (SLURM's preemption notice): the loop
    checkpoints at the next step boundary and exits; the rerun resumes from there."""
    args = [
        *cifar_overrides(cifar_dir, steps=40),
        "optimizer=radam",
        "trainer.checkpoint_every=5",
        "trainer.eval_every=15",
    ]
    env = {**os.environ, "RADAM_REPRO_DATA": str(data_root()), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, "-m", "radam_repro", *args, "trainer.threads=1", "trainer.progress=false"]

    subprocess.run(cmd, cwd=ROOT, env={**env, "RADAM_REPRO_RUNS": str(tmp_path / "a")}, check=True, capture_output=True)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**env, "RADAM_REPRO_RUNS": str(tmp_path / "b")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(int(p.stem.split("_")[1]) >= 15 for p in (tmp_path / "b").rglob("step_*.pt")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run ended before it could be killed"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 1 and "stopped after SIGTERM; the checkpoint is saved" in stderr
    (run_b,) = run_folders(tmp_path / "b")
    assert json.loads((run_b / "summary.json").read_text())["status"] == "running"
    resumed = subprocess.run(
        cmd, cwd=ROOT, env={**env, "RADAM_REPRO_RUNS": str(tmp_path / "b")}, check=True, capture_output=True, text=True
    )
    assert "resuming" in resumed.stdout
    (run_a,) = run_folders(tmp_path / "a")
    final_a = torch.load(run_a / "checkpoints" / "latest.pt", weights_only=True)
    final_b = torch.load(run_b / "checkpoints" / "latest.pt", weights_only=True)
    assert final_a["step"] == final_b["step"] == 40
    for key, value in final_a["model"].items():
        assert torch.equal(value, final_b["model"][key]), key
    steps_b = [r["step"] for r in read_metrics(run_b) if r["split"] == "train" and "loss" in r]
    assert steps_b == [10, 20, 30, 40]  # replayed points are not duplicated
    logged = lambda run: [
        {k: r[k] for k in ("step", "loss", "acc", "lr", "multiplier")}  # noqa: E731
        for r in read_metrics(run)
        if r["split"] == "train" and "loss" in r
    ]
    assert logged(run_b) == logged(run_a)  # the interval cut by the checkpoint is logged as if never cut
    assert json.loads((run_b / "meta.json").read_text())["resumed_from_step"] >= 15


def test_forced_divergence_is_a_recorded_result(cli, cifar_dir):
    proc = cli("optimizer=sgd", "optimizer.lr=1e12", *cifar_overrides(cifar_dir, steps=30))
    assert proc.returncode == 0
    (run,) = run_folders(cli.runs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and 1 <= summary["diverged_step"] <= 30
    # a rerun of a finished run does nothing
    again = cli("optimizer=sgd", "optimizer.lr=1e12", *cifar_overrides(cifar_dir, steps=30))
    assert "already diverged" in again.stdout


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_wandb_offline_run_directory_appears(cli, cifar_dir):
    cli(
        "optimizer=radam",
        "logger=wandb",
        "logger.mode=offline",
        "group=wandb_check",
        "seed=3",
        *cifar_overrides(cifar_dir, steps=10),
    )
    (run,) = run_folders(cli.runs)
    assert run.parent.name == "wandb_check"
    (offline,) = list((cli.runs / "wandb_home" / "wandb").glob("offline-run-*"))  # WANDB_DIR (conftest) is honoured
    (record,) = list(offline.glob("run-*.wandb"))
    data = record.read_bytes()  # the offline transaction log that `wandb sync` uploads
    for key in (b"cifar10", b"radam", b"wandb_check", b"seed3", b"train/loss", b"test/acc", b"hist/log_abs_grad"):
        assert key in data, key
    assert (run / "metrics.jsonl").stat().st_size > 0  # local files always


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["optimizer=radm"], ["optimizer/radm", "radam", "adam_2k"]),
        (["optimizer.lr=abc"], ["optimizer.lr", "abc"]),
        pytest.param(["trainer.max_stepz=3"], ["max_stepz"], marks=pytest.mark.slow),  # CI runs it
        (["task.data_dir=/nonexistent/cifar"], ["/nonexistent/cifar/cifar-10-batches-py", "task.download=true"]),
        (["trainer.precision=fp8"], ["trainer.precision", "fp32, bf16 or fp16"]),
        (["optimizer=adam_warmup", "optimizer.warmup.steps=0"], ["optimizer.warmup.steps > 0"]),
        pytest.param(["optimizer=radam", "optimizer.threshold=3"], ["threshold", ">= 4"], marks=pytest.mark.slow),
    ],
)
def test_bad_input_fails_early_with_a_message_naming_problem_and_fix(cli, cifar_dir, overrides, expected):
    base = (
        []
        if any(o.startswith("task.data_dir") for o in overrides)
        else [f"task.data_dir={cifar_dir}", "task.check_integrity=false"]
    )
    proc = cli(*base, "trainer.max_steps=2", *overrides, check=False)
    assert proc.returncode != 0
    for text in expected:
        assert text in proc.stderr + proc.stdout, f"{text!r} not in output:\n{proc.stderr[-3000:]}"


def test_md5_check_is_on_by_default_for_cifar(cli, cifar_dir):
    proc = cli(f"task.data_dir={cifar_dir}", "trainer.max_steps=2", check=False)
    assert proc.returncode != 0 and "task.check_integrity=false" in proc.stderr


def test_two_runs_never_share_a_folder(tmp_path):
    from radam_repro.run_dir import RunDir, RunFolderInUse

    run = RunDir(tmp_path / "r")
    with run.lock():
        with pytest.raises(RunFolderInUse, match="in use by process"):
            with RunDir(tmp_path / "r").lock():
                pass
    with RunDir(tmp_path / "r").lock():  # released: free again
        pass


@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])  # fp16: CI
def test_mixed_precision_runs_on_cpu(cli, precision):
    cli(
        "task=nmt_synthetic",
        "optimizer=radam",
        "task.model.layers=1",
        f"trainer.precision={precision}",
        "trainer.max_steps=12",
        "trainer.log_every=4",
    )
    (run,) = run_folders(cli.runs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final"]["valid/loss"] < 4.0
    assert [r["step"] for r in read_metrics(run) if r["split"] == "train" and "loss" in r] == [4, 8, 12]


@pytest.mark.slow
def test_torch_compile_option_trains(cli):
    cli(
        "task=nmt_synthetic",
        "optimizer=radam",
        "task.model.layers=1",
        "trainer.compile=true",
        "trainer.max_steps=6",
        "trainer.log_every=3",
        timeout=900,
    )
    (run,) = run_folders(cli.runs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 6
    assert "_orig_mod" not in "".join(torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["model"])
