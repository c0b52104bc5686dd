"""A run folder never misreports its run, never runs code it loads, never loses its lock (issue 10).

Through the real CLI where a user meets the problem: changed-config resume, resume=false, a crafted
checkpoint, a damaged latest checkpoint, SIGKILL then the report, a full disk (a small tmpfs), bad
config values, damaged CIFAR files, malformed summaries, strict JSON and the umask; the lock is also
raced by 4 processes over many rounds.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, data_root, wait_for

from radam_repro.config import without_foreign_optimizer_schemas
from radam_repro.folder_lock import FolderLock, RunFolderInUse, read_owner
from radam_repro.report.__main__ import main as report_main
from radam_repro.report.runs import load_run
from radam_repro.run_dir import RunDir

SMALL = [
    "task=nmt_synthetic",
    "optimizer=radam",
    "task.model.layers=1",
    "trainer.log_every=4",
    "trainer.eval_every=4",
    "trainer.checkpoint_every=4",
    "trainer.keep_checkpoints=2",
]


def cli(
    *overrides: str,
    run_dir: Path,
    check: bool = True,
    umask: int | None = None,
    wait: bool = True,
    timeout: float = 600,
):
    """``python -m radam_repro <overrides> hydra.run.dir=<run_dir>`` as a user runs it (one thread)."""
    env = {
        **os.environ,
        "RADAM_REPRO_DATA": str(data_root()),
        "OMP_NUM_THREADS": "1",
        "HYDRA_FULL_ERROR": "1",
        "RADAM_REPRO_CACHE": str(run_dir.parent / "cache"),
        "WANDB_MODE": "disabled",
    }
    threads = [] if any(o.startswith("trainer.threads=") for o in overrides) else ["trainer.threads=1"]
    cmd = [
        sys.executable,
        "-m",
        "radam_repro",
        *overrides,
        *threads,
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec
    )
    if not wait:
        return proc
    out, err = proc.communicate(timeout=timeout)
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI failed ({proc.returncode}):\n{out[-3000:]}\n{err[-5000:]}")
    return result


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A completed 8-step run (checkpoints at 4 and 8, both kept), written under umask 027."""
    run = tmp_path_factory.mktemp("finished") / "run"
    cli(*SMALL, "trainer.max_steps=8", run_dir=run, umask=0o027)
    return run


def copy_run(finished: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


# -- 1. resume checks the config; resume=false moves the earlier run aside ----------------------------------
def test_resume_with_another_config_stops_before_touching_the_folder(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    before = snapshot(run)
    proc = cli(*SMALL, "trainer.max_steps=8", "optimizer=adam", "optimizer.lr=1e-4", run_dir=run, check=False)
    assert proc.returncode != 0
    message = proc.stderr
    assert "optimizer.name: 'radam' (folder) -> 'adam' (now)" in message
    assert "optimizer.lr: 0.003 (folder) -> 0.0001 (now)" in message
    assert "optimizer.algorithm" in message and "trainer.resume=false" in message and "another folder" in message
    assert snapshot(run) == before  # nothing written, nothing removed, config.yaml still the RAdam run's


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_resume_false_moves_the_earlier_run_aside(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    before = snapshot(run)
    proc = cli(*SMALL, "trainer.max_steps=8", "optimizer=adam", "trainer.resume=false", run_dir=run)
    (previous,) = run.glob("previous-*")
    assert "the earlier run's files are now in" in proc.stdout
    assert snapshot(previous) == before  # every earlier file, byte for byte
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert "name: adam" in (run / "config.yaml").read_text()


# -- 2. checkpoints load with weights_only=True ---------------------------------------------------------------
class Payload:
    """A pickle that runs a shell command when loaded without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_checkpoint_runs_no_code_and_is_named(tmp_path):
    run, marker = tmp_path / "run", tmp_path / "PWNED"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"step": 4, "model": Payload(marker)}, run / "checkpoints" / "latest.pt")
    proc = cli(*SMALL, "trainer.max_steps=8", run_dir=run, check=False)
    assert proc.returncode != 0
    assert f"{run / 'checkpoints' / 'latest.pt'}: UnpicklingError" in proc.stderr
    assert "weights_only=True" in proc.stderr and "trainer.resume=false" in proc.stderr
    assert not marker.exists()


def test_checkpoint_averaging_refuses_a_crafted_checkpoint(tmp_path):
    from radam_repro.tasks.translation import average_checkpoints

    marker = tmp_path / "PWNED"
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "step_1.pt")
    torch.save({"model": Payload(marker)}, tmp_path / "step_2.pt")
    with pytest.raises(ValueError, match=r"cannot load checkpoint .*step_2\.pt safely"):
        average_checkpoints([tmp_path / "step_1.pt", tmp_path / "step_2.pt"])
    assert not marker.exists()


# -- 4 and 7. a damaged latest falls back; resuming at the final checkpoint logs the final rows once ------------
def test_damaged_latest_falls_back_and_the_final_rows_are_not_duplicated(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    done = rows(run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "running"}))  # killed in the final evaluation
    latest = run / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # truncated
    orphans = [run / ".summary.json.0123.tmp", run / "checkpoints" / ".latest.pt.4567.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    proc = cli(*SMALL, "trainer.max_steps=8", run_dir=run)
    assert f"skipping unloadable checkpoint {latest}" in proc.stdout
    assert "from step 8 (checkpoints/step_0000008.pt)" in proc.stdout
    again = rows(run)
    assert [(r["step"], r["split"]) for r in again] == [(r["step"], r["split"]) for r in done]
    assert sum(r["split"] == "valid" and r["step"] == 8 for r in again) == 1
    assert not any(o.exists() for o in orphans)  # a killed writer's temporary files are removed on start


def test_step_checkpoints_are_independent_files(finished):
    ckpt = finished / "checkpoints"
    assert [p.name for p in RunDir(finished).step_checkpoints()] == ["step_0000004.pt", "step_0000008.pt"]
    assert (ckpt / "latest.pt").stat().st_ino != (ckpt / "step_0000008.pt").stat().st_ino
    assert (ckpt / "latest.pt").stat().st_nlink == 1


# -- 3. the lock -------------------------------------------------------------------------------------------------
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def plant(lock: Path, variant: int, pid: int) -> int:
    """Before a round: no lock, or a stale one (dead pid here, expired lease elsewhere, garbled), or a live one."""
    lock.unlink(missing_ok=True)
    old = time.time() - 1000
    if variant == 1:
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "token": "dead", "lease_s": 300}))
    elif variant in (2, 4):
        lock.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "token": "far", "lease_s": 300}))
        if variant == 2:
            os.utime(lock, (old, old))
    elif variant == 3:
        lock.write_text("")
        os.utime(lock, (old, old))
    return 0 if variant == 4 else 1  # owners expected: a live lease elsewhere keeps everyone out


def _contender(folder: str, rounds: int, barrier, owned, index: int) -> None:
    for r in range(rounds):
        barrier.wait()
        lock = RunDir(folder).lock()
        try:
            lock.__enter__()
            owned[r * 4 + index] = 1
        except RunFolderInUse:
            pass
        barrier.wait()  # every contender has tried
        if owned[r * 4 + index]:
            lock.__exit__(None, None, None)
        barrier.wait()  # released


def race(tmp_path: Path, rounds: int) -> tuple[int, int]:
    """4 processes try to take one folder lock per round; returns (rounds, rounds with a wrong number of owners)."""
    ctx = multiprocessing.get_context("fork")
    lock, barrier, owned = tmp_path / ".lock", ctx.Barrier(5), ctx.Array("b", rounds * 4, lock=False)
    procs = [ctx.Process(target=_contender, args=(str(tmp_path), rounds, barrier, owned, i)) for i in range(4)]
    for p in procs:
        p.start()
    pid, wrong = dead_pid(), 0
    try:
        for r in range(rounds):
            expected = plant(lock, r % 5, pid)
            barrier.wait()
            barrier.wait()
            wrong += sum(owned[r * 4 : r * 4 + 4]) != expected
            barrier.wait()
            assert expected == 0 or not lock.exists(), "an owner's release left its lock behind"
    finally:
        for p in procs:
            p.join(timeout=60)
    return rounds, wrong


def test_four_processes_racing_for_the_lock_never_share_it(tmp_path):
    rounds, wrong = race(tmp_path, 200)
    assert wrong == 0, f"{wrong} of {rounds} rounds had a wrong number of owners"


@pytest.mark.slow
def test_four_processes_racing_for_the_lock_1000_rounds(tmp_path):
    rounds, wrong = race(tmp_path, 1000)
    assert wrong == 0, f"{wrong} of {rounds} rounds had a wrong number of owners"


def test_lock_lease_is_refreshed_and_release_takes_only_its_own(tmp_path):
    lock = tmp_path / ".lock"
    with FolderLock(lock, lease_s=0.4) as mine:
        old = time.time() - 100
        os.utime(lock, (old, old))
        wait_for(lambda: time.time() - lock.stat().st_mtime < 1, 5, "the owner to refresh its lease")
        with pytest.raises(RunFolderInUse, match="in use by process"):
            FolderLock(lock).acquire()
        lock.write_text(json.dumps({"host": "other", "pid": 1, "token": "theirs", "lease_s": 300}))
        with pytest.warns(UserWarning, match="lost the lock"):
            time.sleep(0.5)
            mine.release()
    assert read_owner(lock).token == "theirs"  # not ours: left in place


@pytest.mark.slow
def test_three_cli_processes_on_one_folder_give_one_runner(tmp_path):
    run = tmp_path / "run"
    procs = [cli(*SMALL, "trainer.max_steps=40", run_dir=run, wait=False) for _ in range(3)]
    results = [(*p.communicate(timeout=600), p.returncode) for p in procs]
    results = [(code, out, err) for out, err, code in results]
    ran = [r for r in results if r[0] == 0 and "nothing to do" not in r[1]]
    others = [r for r in results if r not in ran]
    assert len(ran) == 1, results
    for code, out, err in others:
        refused = code != 0 and f"run folder {run} is in use by process" in err
        assert refused or "already completed" in out, err[-2000:]
    train = [r["step"] for r in rows(run) if r["split"] == "train" and "loss" in r]
    assert train == list(range(4, 41, 4))  # one run's rows, each once
    print(
        f"3 CLI processes: 1 runner, {sum(r[0] != 0 for r in others)} refusals, "
        f"{sum(r[0] == 0 for r in others)} found it completed"
    )


# -- 5. killed runs are reported as interrupted ------------------------------------------------------------------
def summary_step(run: Path) -> int:
    try:
        return json.loads((run / "summary.json").read_text())["step"]
    except (OSError, ValueError, KeyError):  # not written yet
        return -1


def test_sigkilled_run_is_reported_interrupted_with_its_last_step(tmp_path):
    run = tmp_path / "sweep" / "killed"
    proc = cli(*SMALL, "trainer.max_steps=2000", run_dir=run, wait=False)
    try:
        # the summary is written after each checkpoint's file: wait for it, not for the file (a loaded machine lets a
        # kill land between the two)
        wait_for(lambda: summary_step(run) >= 8, 300, "two checkpoints recorded in summary.json")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "running" and summary["step"] >= 8  # advanced at each checkpoint
    last_logged = max(r["step"] for r in rows(run))
    out = report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report"), "--no-figures"])
    report = (out / "report.md").read_text()
    section = report[report.index("## Runs that need a look") :]
    line = next(x for x in section.splitlines() if "killed" in x)
    assert f"| interrupted | {last_logged} |" in line and "rerun the same command to resume" in line


def test_a_live_run_elsewhere_stays_running_until_its_lease_expires(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_summary(status="running", step=4)
    lock = run.path / ".lock"
    lock.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "token": "t", "lease_s": 60}))
    assert load_run(run.path).status == "running"
    old = time.time() - 61
    os.utime(lock, (old, old))
    assert load_run(run.path).status == "interrupted"


# -- 6. a full disk still records the failure ------------------------------------------------------------------
def test_a_full_disk_records_the_failure(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip()}); needs root")
    try:
        run = mount / "run"
        proc = cli(*SMALL, "trainer.max_steps=8", run_dir=run, check=False)  # a checkpoint is ~1.5 MB
        assert proc.returncode != 0
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "failed" and "No space left on device" in summary["error"]
        assert not list(run.rglob("*.tmp"))  # the half-written checkpoint is gone, its space free again
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# -- 8. bad config values fail before any work -----------------------------------------------------------------
BAD_VALUES = [
    ("trainer.log_every=0", "trainer.log_every=0 must be a positive number of steps"),
    ("trainer.checkpoint_every=0", "trainer.checkpoint_every=0 must be a positive number of steps"),
    ("trainer.eval_every=0", "trainer.eval_every=0 must be a positive number of steps"),
    ("trainer.threads=-1", "trainer.threads=-1 must be >= 1"),
    ("optimizer.lr=-0.1", "invalid optimizer.lr=-0.1"),
    ("optimizer.betas=[0.9,1.5]", "invalid optimizer.betas[1] (beta2)=1.5"),
]


@pytest.mark.parametrize("override, expected", BAD_VALUES)
def test_bad_config_values_name_the_key(override, expected):
    from hydra import compose, initialize_config_dir

    from radam_repro.config import register
    from radam_repro.train import validate

    register()
    with (
        without_foreign_optimizer_schemas(),
        initialize_config_dir(str(ROOT / "radam_repro" / "configs"), version_base="1.3"),
    ):
        cfg = compose("radam_repro", overrides=["task=nmt_synthetic", override])
    with pytest.raises(ValueError) as error:
        validate(cfg)
    assert expected in str(error.value)


@pytest.mark.parametrize("override, expected", [BAD_VALUES[0], BAD_VALUES[4]])
def test_bad_config_values_fail_before_the_run_folder_is_written(tmp_path, override, expected):
    run = tmp_path / "run"
    proc = cli("task=nmt_synthetic", "trainer.max_steps=4", override, run_dir=run, check=False)
    assert proc.returncode != 0 and expected in proc.stderr, proc.stderr[-3000:]
    assert not (run / "config.yaml").exists() and not (run / "summary.json").exists()


# -- 9. damaged CIFAR-10 files name the file and the fix -----------------------------------------------------------
DAMAGES = {
    "truncate": "is damaged or not a CIFAR-10 python batch",
    "random": "is damaged or not a CIFAR-10 python batch",
    "empty": "is empty",
    "missing": "missing data_batch_3",
}


def damaged_copy(cifar_dir: Path, tmp_path: Path, damage: str) -> tuple[Path, Path]:
    data = tmp_path / "cifar"
    shutil.copytree(cifar_dir / "cifar-10-batches-py", data / "cifar-10-batches-py")
    batch = data / "cifar-10-batches-py" / "data_batch_3"
    if damage == "truncate":
        batch.write_bytes(batch.read_bytes()[:5000])
    elif damage == "random":
        batch.write_bytes(os.urandom(30000))
    elif damage == "empty":
        batch.write_bytes(b"")
    else:
        batch.unlink()
    return data, batch


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_cifar_files_name_the_file(tmp_path, cifar_dir, damage):
    from radam_repro.data.cifar import load_cifar10

    data, batch = damaged_copy(cifar_dir, tmp_path, damage)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        load_cifar10(data, train=True, check_integrity=False)
    message = str(error.value)
    assert DAMAGES[damage] in message and (damage == "missing" or str(batch) in message)
    assert "task.download=true" in message
    load_cifar10(data, train=False, check_integrity=False)  # the intact test batch still loads


def test_random_bytes_in_a_cifar_batch_through_the_cli(tmp_path, cifar_dir):
    data, batch = damaged_copy(cifar_dir, tmp_path, "random")
    proc = cli(
        "task=cifar10",
        f"task.data_dir={data}",
        "task.check_integrity=false",
        "trainer.max_steps=2",
        run_dir=tmp_path / "run",
        check=False,
    )
    assert proc.returncode != 0 and f"CIFAR-10 batch {batch} is damaged" in proc.stderr, proc.stderr[-3000:]


# -- 10. the report never crashes on a malformed run --------------------------------------------------------------
def test_report_flags_malformed_summaries_and_goes_on(finished, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(finished, sweep / "good")
    broken = {
        "list_final": {"status": "completed", "final": [1, 2], "best": {}},
        "string_best": {"status": "completed", "final": {"valid/loss": 1.0}, "best": "high"},
        "text_values": {"status": "completed", "final": {"valid/loss": "low"}, "step": "8"},
        "not_an_object": [1, 2, 3],
    }
    for name, summary in broken.items():
        shutil.copytree(finished, sweep / name)
        (sweep / name / "summary.json").write_text(json.dumps(summary))
    out = report_main([str(sweep), "--out", str(tmp_path / "report"), "--no-figures"])
    report = (out / "report.md").read_text()
    assert "final is a list" in report and "best is a str" in report and "non-numeric values (valid/loss)" in report
    assert "summary.json holds a list" in report and "step '8' is not an integer" in report


# -- 12. strict JSON, the user's umask --------------------------------------------------------------------------
def test_non_finite_values_are_strict_json_and_read_back(tmp_path):
    run = tmp_path / "run"
    cli(
        "task=nmt_synthetic",
        "task.model.layers=1",
        "optimizer=adam",
        "optimizer.lr=1e30",
        "trainer.max_steps=20",
        "trainer.log_every=2",
        run_dir=run,
    )

    def refuse(constant):
        raise ValueError(f"bare {constant} in strict JSON")

    logged = [json.loads(line, parse_constant=refuse) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text(), parse_constant=refuse)
    assert summary["status"] == "diverged" and summary["final"]["train/loss"] in ("NaN", "Infinity")
    assert any(r.get("loss") in ("NaN", "Infinity") for r in logged)
    loaded = load_run(run)
    assert not torch.isfinite(torch.tensor(loaded.summary["final"]["train/loss"]))
    assert any(isinstance(r.get("loss"), float) and not torch.isfinite(torch.tensor(r["loss"])) for r in loaded.rows)


def test_result_files_follow_the_umask(finished):
    for name in (
        "config.yaml",
        "summary.json",
        "meta.json",
        "metrics.jsonl",
        "checkpoints/latest.pt",
        "checkpoints/step_0000004.pt",
        "histograms/step_0000001.json",
    ):
        assert (finished / name).stat().st_mode & 0o777 == 0o640, name  # 0o666 & ~0o027
