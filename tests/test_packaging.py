"""The package stands on its own: the optimizers import without the harness, and a built wheel runs outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import ROOT


def test_optim_imports_only_torch_and_the_standard_library():
    code = (
        "import sys, radam_repro.optim; "
        "print(sorted(m for m in sys.modules if m.startswith(('radam_repro', 'hydra', 'omegaconf'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    loaded = eval(out)  # a printed list of module names
    assert [m for m in loaded if not m.startswith("radam_repro.optim") and m != "radam_repro"] == []


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    """Build the wheel, install it (no editable link) into a venv that sees this interpreter's dependencies, run a
    cell and the report from another directory."""
    wheels, source = tmp_path / "wheels", tmp_path / "source"  # a copy: building leaves build/ and *.egg-info behind
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", "runs", "build", "*.egg-info", "__pycache__", ".ci-cache", "multirun", "outputs", "wandb"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("radam_repro-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # The dependencies of the environment running the tests (a venv, or the system Python), as plain path entries:
    # system_site_packages would see the base interpreter's instead, and entries (not site dirs) leave its .pth
    # files, e.g. an editable radam_repro, unread.
    (venv_site,) = (env_dir / "lib").glob("python*/site-packages")
    parent_sites = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (venv_site / "_test_parent_env.pth").write_text("".join(f"{p}\n" for p in parent_sites))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(RADAM_REPRO_RUNS=str(work / "runs"), OMP_NUM_THREADS="1", TQDM_DISABLE="1", WANDB_SILENT="true")
    where = subprocess.run(
        [python, "-c", "import radam_repro; print(radam_repro.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(env_dir), f"imported {where}, not the installed wheel"

    run = subprocess.run(
        [
            python,
            "-m",
            "radam_repro",
            "task=nmt_synthetic",
            "trainer.max_steps=3",
            "trainer.device=cpu",
            "trainer.threads=1",
            "trainer.progress=false",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (summary,) = (work / "runs").glob("adhoc/*/summary.json")
    assert json.loads(summary.read_text())["status"] == "completed"
    report = subprocess.run(
        [python, "-m", "radam_repro.report", str(work / "runs" / "adhoc"), "--out", str(work / "report")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "nmt_synthetic" in (work / "report" / "report.md").read_text()
    assert (work / "report" / "figures").is_dir() and any((work / "report" / "figures").glob("*.png"))
