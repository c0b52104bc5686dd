"""Shared fixtures: the staged data folder and a helper that runs the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return (ROOT / os.environ.get("RADAM_REPRO_DATA", "../shared/data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The staged real data (``RADAM_REPRO_DATA``, default ``../shared/data``); skips if absent."""
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"staged data not found at {root} (set RADAM_REPRO_DATA)")
    return root


@pytest.fixture(scope="session")
def cifar_dir(shared_data: Path) -> Path:
    path = shared_data / "cifar10" / "partial"
    if not (path / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip(f"staged CIFAR-10 not found at {path}/cifar-10-batches-py")
    return path


def run_cli(*overrides: str, runs: Path, check: bool = True, timeout: float = 600, env: dict | None = None,
            threads: int = 1) -> subprocess.CompletedProcess:
    """``python -m radam_repro <overrides>`` as a user runs it, with run folders under ``runs``."""
    full_env = {**os.environ, "RADAM_REPRO_RUNS": str(runs), "RADAM_REPRO_DATA": str(data_root()),
                "OMP_NUM_THREADS": str(threads), "WANDB_DIR": str(runs / "wandb_home"),
                "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1", "RADAM_REPRO_CACHE": str(runs / "cache"),
                "TQDM_DISABLE": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "radam_repro", *overrides, f"trainer.threads={threads}",
                           "trainer.progress=false"], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture
def cli(tmp_path):
    def _run(*overrides: str, **kwargs):
        return run_cli(*overrides, runs=tmp_path / "runs", **kwargs)

    _run.runs = tmp_path / "runs"
    return _run
