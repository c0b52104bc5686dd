"""Real training sweeps on the local SLURM cluster through ``hydra/launcher=slurm``.

A 2x2 grid runs as one job array; a failing cell is reported while the others complete; a cell
preempted with USR2 is requeued, resumes from its run folder and ends bit-identical to an
uninterrupted run. Start the cluster first: ``launch/local_slurm.sh start``.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from conftest import LOCAL_RESOURCES, run_cli, sacct_states, wait_for

pytestmark = pytest.mark.slurm
SLURM_SWEEP = ["-m", "hydra/launcher=slurm", *LOCAL_RESOURCES]
TINY_CELL = ["task=nmt_synthetic", "task.model.layers=1", "trainer.max_steps=20"]


@pytest.fixture
def runs(slurm, tmp_path):
    """A fresh RADAM_REPRO_RUNS; at the end, the jobs its sweeps submitted are cancelled (no-op when done)."""
    runs = tmp_path / "runs"
    yield runs
    arrays = [p.name for p in runs.glob("*/.submitit/*") if p.name.isdigit()]
    if arrays:
        subprocess.run(["scancel", *arrays], capture_output=True, timeout=30)


def summaries(sweep: Path) -> dict[str, dict]:
    """Run folder name -> its summary.json."""
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def array_elements(array_id: str) -> dict[str, str]:
    """Raw job id -> final state of every element of a job array, from accounting."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", array_id, "-o", "JobIDRaw,State"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return dict(line.split("|") for line in out.split())


def finished_elements(array_id: str, count: int) -> dict[str, str] | None:
    """The array's elements once accounting lists ``count`` of them, all ended (the job outlives its result file)."""
    elements = array_elements(array_id)
    ended = len(elements) == count and not {"PENDING", "RUNNING", "REQUEUED", "COMPLETING"} & set(elements.values())
    return elements if ended else None


def the_array(sweep: Path) -> Path:
    """The sweep's submitit folder of the array (the one holding the sbatch script)."""
    (folder,) = [p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    return folder


def train_rows(run: Path) -> list[dict]:
    """The logged training rows (complete lines only: the run may be writing the file)."""
    text = (run / "metrics.jsonl").read_text()
    rows = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
    return [r for r in rows if r["split"] == "train" and "loss" in r]


def test_two_by_two_grid_runs_as_one_job_array_and_completes(runs):
    run_cli(*SLURM_SWEEP, *TINY_CELL, "optimizer=adam,radam", "seed=1,2", runs=runs, timeout=300)
    sweep = runs / "adhoc"
    array = the_array(sweep)
    script = (array / f"{array.name}_submission.sh").read_text()
    assert "#SBATCH --array=0-3" in script and "#SBATCH --requeue" in script and "#SBATCH --time=60" in script

    cells, job_ids = set(), set()
    for name, summary in summaries(sweep).items():
        run = sweep / name
        assert summary["status"] == "completed" and summary["step"] == 20 and summary["error"] is None, (name, summary)
        assert summary["final"]["valid/loss"] > 0 and len(train_rows(run)) >= 1
        assert (run / "checkpoints" / "latest.pt").is_file()
        config = yaml.safe_load((run / "config.yaml").read_text())
        cells.add((config["optimizer"]["name"], config["seed"]))
        job_ids.add(json.loads((run / "meta.json").read_text())["slurm_job_id"])
    assert cells == {("adam", 1), ("adam", 2), ("radam", 1), ("radam", 2)}
    elements = wait_for(lambda: finished_elements(array.name, 4), 30, "accounting to record the 4 elements' end")
    assert set(elements.values()) == {"COMPLETED"}, elements
    assert job_ids == set(elements), "each run folder was written by its own element of the array"


def test_failing_cell_is_reported_and_the_others_complete(runs):
    # heads=3 does not divide d_model=64: the cell fails while it builds its model, after its folder is written
    # (bad config values such as optimizer.warmup.steps=0 now fail before any folder is written)
    proc = run_cli(*SLURM_SWEEP, *TINY_CELL, "task.model.heads=3,2,4", runs=runs, check=False, timeout=300)
    assert proc.returncode != 0, "a sweep with a failed cell must exit non-zero"
    assert "must be divisible by heads=3" in proc.stderr, proc.stderr[-3000:]

    sweep = runs / "adhoc"
    by_heads = {}
    for name, summary in summaries(sweep).items():
        config = yaml.safe_load((sweep / name / "config.yaml").read_text())  # written before the run can fail
        by_heads[config["task"]["model"]["heads"]] = summary
    assert sorted(by_heads) == [2, 3, 4], "every cell ran (and wrote its summary) before the command exited"
    failed = by_heads[3]
    assert failed["status"] == "failed" and failed["step"] == 0 and failed["final"] == {}, failed
    assert failed["error"].startswith("ValueError") and "d_model=64 must be divisible by heads=3" in failed["error"]
    for heads in (2, 4):
        assert by_heads[heads]["status"] == "completed" and by_heads[heads]["step"] == 20, by_heads[heads]
    elements = wait_for(
        lambda: finished_elements(the_array(sweep).name, 3), 30, "accounting to record the 3 elements' end"
    )
    assert set(elements.values()) == {"COMPLETED"}, f"Hydra records a failed cell; its job itself succeeds: {elements}"


def test_usr2_requeues_a_training_cell_that_resumes_bit_identical(runs, tmp_path):
    """~18 s of training (500 steps, 2 layers); USR2 after step 50; the only checkpoint before the end is the preemption's."""
    cell = [
        "task=nmt_synthetic",
        "task.model.layers=2",
        "trainer.max_steps=500",
        "trainer.log_every=10",
        "trainer.checkpoint_every=100000",
        "optimizer=radam",
        "seed=3",
    ]
    sweep = runs / "adhoc"
    pool = ThreadPoolExecutor(2)
    try:
        on_slurm = pool.submit(run_cli, *SLURM_SWEEP, *cell, runs=runs, timeout=300)
        direct = pool.submit(run_cli, *cell, runs=tmp_path / "direct", timeout=300)
        # one cell: a plain job, not an array (submitit); its folder holds the pickle submitted for it
        pickle = wait_for(lambda: next(sweep.glob(".submitit/*/*_submitted.pkl"), None), 60, "the sweep's submission")
        job_id = pickle.name.removesuffix("_submitted.pkl")
        wait_for(
            lambda: (
                on_slurm.done()
                or any(r["step"] >= 50 for m in sweep.glob("*/metrics.jsonl") for r in train_rows(m.parent))
            ),
            90,
            "the job to pass step 50",
        )
        assert not on_slurm.done(), f"the sweep ended before it could be preempted: {on_slurm.result()}"
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        on_slurm.result()
        direct.result()
    finally:
        pool.shutdown(wait=False)  # after a failure the fixture cancels the job, which ends the sweep

    wait_for(lambda: sacct_states(job_id)[-1:] == ["COMPLETED"], 30, "sacct to record the end")
    assert sacct_states(job_id) == ["REQUEUED", "COMPLETED"]
    log = (sweep / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
    assert "received SIGUSR2" in log and "resuming" in log, log[-3000:]
    (run,) = [p.parent for p in sweep.glob("*/summary.json")]
    (reference,) = [p.parent for p in (tmp_path / "direct" / "adhoc").glob("*/summary.json")]
    assert run.name == reference.name, "the same cell"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 500, summary
    resumed_from = json.loads((run / "meta.json").read_text())["resumed_from_step"]
    assert resumed_from is not None and 50 <= resumed_from < 500
    assert json.loads((reference / "meta.json").read_text())["resumed_from_step"] is None

    assert [r["step"] for r in train_rows(run)] == list(range(10, 501, 10)), "replayed rows are not duplicated"
    assert [r["loss"] for r in train_rows(run)] == [r["loss"] for r in train_rows(reference)]
    final = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
    uninterrupted = torch.load(reference / "checkpoints" / "latest.pt", weights_only=False)
    assert final["step"] == uninterrupted["step"] == 500
    assert final["model"].keys() == uninterrupted["model"].keys()
    for key, value in uninterrupted["model"].items():
        assert torch.equal(final["model"][key], value), key
