"""The real one-node SLURM cluster (launch/local_slurm.sh) runs submitit jobs, arrays and requeues.

Start it first: ``launch/local_slurm.sh start && eval "$(launch/local_slurm.sh env)"``.
Without a cluster these tests skip, unless RADAM_REPRO_REQUIRE_SLURM is set (CI), then they fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from conftest import LOCAL_RESOURCES, ROOT, sacct_states, wait_for

pytestmark = pytest.mark.slurm
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # jobs cannot import this test module


def executor(folder: Path, **params) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    ex.update_parameters(timeout_min=60, cpus_per_task=1, slurm_additional_parameters={"requeue": True}, **params)
    return ex


def job_facts(x: int) -> dict:
    return {
        "square": x * x,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
    }


def advance(state: dict) -> None:
    """One deterministic step of a toy computation: acc <- (31 acc + i) mod p."""
    state["acc"] = (state["acc"] * 31 + state["i"]) % 1_000_003
    state["i"] += 1


def resumable_count(path: str, n: int, step_s: float) -> dict:
    """n steps of ``advance``; on USR2 it saves its state at a step boundary and is requeued."""
    from radam_repro.preemption import Preemption

    preemption = Preemption()
    file = Path(path)
    state = json.loads(file.read_text()) if file.exists() else {"i": 0, "acc": 1, "starts": 0, "saved_at": []}
    state["starts"] += 1
    file.write_text(json.dumps(state))
    while state["i"] < n:
        advance(state)
        time.sleep(step_s)
        if preemption.requested():
            state["saved_at"].append(state["i"])
            file.write_text(json.dumps(state))
            preemption.stop()
    return state


def test_cluster_is_up(slurm):
    node, state = slurm[:2]
    assert state.startswith(("idle", "mixed", "allocated")), f"node {node} is {state}"
    clusters = subprocess.run(
        ["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    assert clusters, "slurmdbd knows no cluster: accounting is not set up"
    ran_on = subprocess.run(
        ["srun", "-n1", "-t", "1", "hostname", "-s"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert ran_on == node


def test_plain_job_runs_and_returns(slurm, tmp_path):
    job = executor(tmp_path).submit(job_facts, 7)
    facts = job.result()
    assert facts["square"] == 49
    assert facts["job_id"] == job.job_id and facts["pid"] != os.getpid()
    assert wait_for(lambda: sacct_states(job.job_id) == ["COMPLETED"], 30, "sacct to record COMPLETED")


def test_job_array_of_four(slurm, tmp_path):
    jobs = executor(tmp_path, slurm_array_parallelism=4).map_array(job_facts, [0, 1, 2, 3])
    facts = [job.result() for job in jobs]
    assert [f["square"] for f in facts] == [0, 1, 4, 9]
    assert [f["array_task"] for f in facts] == ["0", "1", "2", "3"]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, "one array, not four jobs"


def test_usr2_saves_requeues_and_resumes(slurm, tmp_path):
    n = 200
    state_file = tmp_path / "state.json"
    job = executor(tmp_path).submit(resumable_count, str(state_file), n, 0.05)
    wait_for(state_file.exists, 60, "the job to start")
    time.sleep(1.0)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    result = job.result()

    expected = {"i": 0, "acc": 1}
    for _ in range(n):
        advance(expected)
    assert result["starts"] == 2, f"not requeued exactly once: {result} (log: {job.paths.stdout})"
    assert len(result["saved_at"]) == 1 and 0 < result["saved_at"][0] < n, result
    assert (result["i"], result["acc"]) == (expected["i"], expected["acc"])
    assert "received SIGUSR2" in job.stdout()
    assert wait_for(
        lambda: sacct_states(job.job_id) == ["REQUEUED", "COMPLETED"], 30, "sacct to record REQUEUED then COMPLETED"
    )


HYDRA_APP = """
import json, time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from radam_repro.preemption import Preemption


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg):
    preemption = Preemption()
    file = Path(HydraConfig.get().runtime.output_dir) / "state.json"
    state = json.loads(file.read_text()) if file.exists() else {"i": 0, "acc": cfg.cell + 1, "starts": 0}
    state["starts"] += 1
    file.write_text(json.dumps(state))
    while state["i"] < cfg.n:
        state["acc"] = (state["acc"] * 31 + state["i"]) % 1_000_003
        state["i"] += 1
        time.sleep(0.05)
        if preemption.requested():
            file.write_text(json.dumps(state))
            preemption.stop()
    file.write_text(json.dumps(state))


if __name__ == "__main__":
    main()
"""


def test_hydra_slurm_launcher_requeues_a_cell_into_its_folder(slurm, tmp_path):
    """configs/hydra/launcher/slurm.yaml submits a 2-cell array; a USR2'd cell reruns into its own folder."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "app.py").write_text(HYDRA_APP)
    (tmp_path / "conf" / "app.yaml").write_text(
        textwrap.dedent(f"""
        defaults:
          - override hydra/launcher: slurm
          - _self_
        n: 200
        cell: 0
        hydra:
          searchpath: [file://{ROOT / "radam_repro" / "configs"}]
          sweep:
            dir: {tmp_path / "sweep"}
            subdir: cell${{cell}}
        """)
    )
    driver = subprocess.Popen(
        [sys.executable, "app.py", "-m", "cell=0,1", *LOCAL_RESOURCES],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        cell0 = tmp_path / "sweep" / "cell0" / "state.json"
        wait_for(lambda: cell0.exists() or driver.poll() is not None, 60, "cell 0 to start")
        assert driver.poll() is None, driver.communicate()[0]
        time.sleep(1.0)
        job_id = wait_for(
            lambda: next(
                (
                    j
                    for j in subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
                    if j.endswith("_0")
                ),
                None,
            ),
            30,
            "cell 0 in squeue",
        )
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        output, _ = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 0, output
    script = next((tmp_path / "sweep" / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1" in script and "#SBATCH --signal=USR2@120" in script and "--requeue" in script
    states = [json.loads((tmp_path / "sweep" / f"cell{c}" / "state.json").read_text()) for c in (0, 1)]
    assert [s["starts"] for s in states] == [2, 1], states
    for cell, state in enumerate(states):
        expected = {"i": 0, "acc": cell + 1}
        for _ in range(200):
            advance(expected)
        assert (state["i"], state["acc"]) == (expected["i"], expected["acc"])
    assert sacct_states(job_id)[0] == "REQUEUED"
