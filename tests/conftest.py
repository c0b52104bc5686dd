"""Shared fixtures: the staged data folder, a helper that runs the real CLI, the local SLURM cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
# The smallest Transformer the NMT tasks accept, as CLI overrides: a task run through the CLI in seconds.
TINY_NMT = ["task.model.layers=1", "task.model.d_model=32", "task.model.ffn_dim=64", "task.model.heads=2"]

# One torch thread in this process and in every subprocess a test starts (before torch is imported): on busy cores
# (CI runs two workers beside each other, or a training grid shares the machine) a two-thread op waits on a thread
# that has no core, and a small model's step was measured 40x slower (29 ms against 0.78 ms).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Property-based tests (tests/test_fuzz_readers.py): "fast" in the default suite (the same examples every run),
# HYPOTHESIS_PROFILE=slow for a deeper, random search. No example database: nothing is written into the
# checkout; a failure prints its example.
settings.register_profile("fast", max_examples=30, deadline=None, database=None, derandomize=True)
settings.register_profile("slow", max_examples=1000, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """CI runs everything with `-n 3 --dist loadgroup`: the suite in its order on one worker, each `own_worker` test
    (a real training of half an hour that uses one core) on a worker of its own beside it. Serially these marks do
    nothing."""
    for item in items:
        own = item.get_closest_marker("own_worker") is not None
        item.add_marker(pytest.mark.xdist_group(item.name if own else "suite"))


# beta2 = 0.999, from the closed forms of the paper's Alg. 2 (rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)): t, rho_t, RAdam r_t (None: no rectified step at threshold 5), Hilton's multiplier.
PAPER_RT_TABLE = [
    (1, 1.000, None, 0.0224),
    (5, 4.996, None, 0.0500),
    (6, 5.994, 0.0258, 0.0548),
    (10, 9.983, 0.0490, 0.0707),
    (100, 98.333, 0.2153, 0.2236),
    (500, 458.485, 0.4765, 0.4950),
    (1000, 835.967, 0.6453, 0.6799),
    (2000, 1373.653, 0.8284, 0.8728),
    (5000, 1931.334, 0.9829, 0.9933),
]


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
def iwslt(shared_data) -> Path:
    """The staged IWSLT'14 De-En, tokenized (fairseq's prepare-iwslt14.sh output); skips if absent."""
    path = shared_data / "iwslt14" / "iwslt14.tokenized.de-en"
    if not (path / "valid.de").is_file():
        pytest.skip(f"staged IWSLT'14 not found at {path}")
    return path


@pytest.fixture(scope="session")
def multi30k(shared_data) -> Path:
    """The staged Multi30k task 1, tokenized and lowercased; skips if absent."""
    path = shared_data / "multi30k" / "data" / "task1" / "tok"
    if not all((path / f"{split}.lc.norm.tok.de").is_file() for split in ("train", "test_2016_flickr")):
        pytest.skip(f"staged Multi30k not found at {path}")
    return path


@pytest.fixture(scope="session")
def cifar_dir(shared_data: Path) -> Path:
    path = shared_data / "cifar10" / "partial"
    if not (path / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip(f"staged CIFAR-10 not found at {path}/cifar-10-batches-py")
    return path


def run_cli(
    *overrides: str, runs: Path, check: bool = True, timeout: float = 600, env: dict | None = None, threads: int = 1
) -> subprocess.CompletedProcess:
    """``python -m radam_repro <overrides>`` as a user runs it, with run folders under ``runs``."""
    full_env = {
        **os.environ,
        "RADAM_REPRO_RUNS": str(runs),
        "RADAM_REPRO_DATA": str(data_root()),
        "OMP_NUM_THREADS": str(threads),
        "WANDB_DIR": str(runs / "wandb_home"),
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "1",
        "RADAM_REPRO_CACHE": str(runs / "cache"),
        "TQDM_DISABLE": "1",
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "radam_repro", *overrides, f"trainer.threads={threads}", "trainer.progress=false"],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"CLI failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.fixture
def cli(tmp_path):
    def _run(*overrides: str, **kwargs):
        return run_cli(*overrides, runs=tmp_path / "runs", **kwargs)

    _run.runs = tmp_path / "runs"
    return _run


DEFAULT_SLURM_CONF = Path(os.environ.get("RADAM_REPRO_SLURM_DIR", "/tmp/radam_repro_slurm")) / "etc" / "slurm.conf"
# Jobs on the local 2-CPU node: one CPU, no GPU, no memory request, a limit long enough that
# submitit counts a USR2 as a preemption, not a time-out (it needs >= 10 min of headroom).
LOCAL_RESOURCES = [
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=null",
    "hydra.launcher.timeout_min=60",
]


@pytest.fixture(scope="session")
def slurm_env() -> tuple[dict[str, str], list[str]]:
    """Asks ``sinfo`` once per session (a cluster that is down takes 30 s to say so); skip or fail without one."""
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    if "SLURM_CONF" not in os.environ and DEFAULT_SLURM_CONF.is_file():
        env["SLURM_CONF"] = str(DEFAULT_SLURM_CONF)
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T"], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
        )
        problem = proc.stderr.strip() if proc.returncode or not proc.stdout.strip() else ""
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        problem, proc = str(e), None
    if problem:
        message = (
            f"no SLURM cluster answers `sinfo` ({problem}); start the local one with "
            '`launch/local_slurm.sh start` and `eval "$(launch/local_slurm.sh env)"`'
        )
        if os.environ.get("RADAM_REPRO_REQUIRE_SLURM"):
            pytest.fail(message)
        pytest.skip(message)
    return env, proc.stdout.split()


@pytest.fixture(scope="module")
def slurm(slurm_env):
    """The environment of a live cluster (SLURM_CONF, PYTHONPATH for jobs); yields ``sinfo``'s node and state."""
    env, nodes = slurm_env
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield nodes


def sacct_states(job_id: str) -> list[str]:
    """Every record of the job in accounting (-D: including the runs before a requeue), oldest first."""
    out = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "State"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return out.split()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while not (value := predicate()):
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)
    return value


def tiny_transformer(**config):
    """A seeded 2+2-layer Transformer (d_model 32, FFN 64, 4 heads, vocab 40 -> 50) in eval mode; ``config``
    overrides TransformerConfig fields."""
    import torch

    from radam_repro.models.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    shape = dict(
        src_vocab_size=40, tgt_vocab_size=50, d_model=32, ffn_dim=64, heads=4, encoder_layers=2, decoder_layers=2
    )
    return Transformer(TransformerConfig(**(shape | config))).eval()
