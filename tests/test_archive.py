"""The committable archive of a sweep (radam_repro/report/archive.py) and the report reading it."""

from __future__ import annotations

import gzip
import json

import pytest

from radam_repro.report.archive import main as archive_main
from radam_repro.report.runs import load_runs


def make_run_folder(path, losses):
    """A run folder as training leaves it: what the report reads, and what the archive leaves behind."""
    (path / "checkpoints").mkdir(parents=True)
    (path / "histograms").mkdir()
    (path / "config.yaml").write_text("seed: 1\noptimizer: {name: adam, lr: 0.001}\ntask: {name: nmt_synthetic}\n")
    (path / "meta.json").write_text('{"seed": 1}')
    (path / "summary.json").write_text('{"status": "completed", "step": 3, "final": {"valid/loss": 0.5}}')
    rows = [{"step": s, "split": "train", "loss": v} for s, v in enumerate(losses, 1)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "checkpoints" / "latest.pt").write_bytes(b"x" * 1000)
    (path / "histograms" / "step_0000001.json").write_text('{"step": 1}')
    (path / "valid.hypotheses.txt").write_text("a b c\n")


def test_archive_keeps_what_the_report_reads_compressed_and_reproducibly(tmp_path, capsys):
    sweep = tmp_path / "runs" / "grid"
    make_run_folder(sweep / "optimizer=adam,seed=1", [3.0, 2.0, "NaN"])
    make_run_folder(sweep / "optimizer=adam,seed=2", [3.1, 1.0, 0.5])
    (sweep / "multirun.yaml").write_text("hydra: {callbacks: {sweep_report: {solved: valid/loss<0.1}}}\n")
    dest = tmp_path / "results" / "runs"
    archive_main([str(sweep), str(dest)])
    assert "2 runs" in capsys.readouterr().out

    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["multirun.yaml"] + [
        f"optimizer=adam,seed={s}/{name}"
        for s in (1, 2)
        for name in ("config.yaml", "meta.json", "metrics.jsonl.gz", "summary.json")
    ]
    packed = dest / "optimizer=adam,seed=1" / "metrics.jsonl.gz"
    assert gzip.decompress(packed.read_bytes()) == (sweep / "optimizer=adam,seed=1" / "metrics.jsonl").read_bytes()
    first = packed.read_bytes()
    archive_main([str(sweep), str(tmp_path / "again")])
    assert (tmp_path / "again" / "optimizer=adam,seed=1" / "metrics.jsonl.gz").read_bytes() == first  # no time stamp

    original, archived = load_runs([sweep]), load_runs([dest])
    assert [r.rows for r in archived] == [r.rows for r in original] and archived[0].rows[2]["loss"] != 0.5
    assert repr([(r.status, r.final(), r.config) for r in archived]) == repr(
        [(r.status, r.final(), r.config) for r in original]
    )  # repr: NaN == NaN

    packed.write_bytes(first[: len(first) // 2])  # a damaged archive is named, not fatal
    (damaged, _) = load_runs([dest])
    assert damaged.rows == [] and any("metrics.jsonl.gz unreadable" in p for p in damaged.problems)


def test_archive_refuses_a_folder_without_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        archive_main([str(tmp_path), str(tmp_path / "out")])
    assert "no ended run folders under" in capsys.readouterr().err


def test_a_sweep_restored_from_its_archive_trains_only_the_cells_that_had_not_ended(tmp_path, capsys):
    """A study spread over two machines: the first archives what ended (not the run its lease cut off), the second
    restores that archive, relaunches the same sweep, and trains only the missing cell, to the same numbers."""
    from conftest import TINY_NMT, run_cli

    from radam_repro.report.__main__ import main as report_main

    sweep = ("-m", "optimizer=adam", "seed=1,2", "task=nmt_synthetic", "trainer.max_steps=6", "group=grid", *TINY_NMT)
    run_cli(*sweep, "trainer.eval_every=3", runs=tmp_path / "first")
    first = tmp_path / "first" / "grid"
    (seed1,) = first.glob("*seed=1*")
    (seed2,) = first.glob("*seed=2*")
    finished = (seed2 / "summary.json").read_text()
    (seed2 / "summary.json").write_text('{"status": "running", "step": 3}')  # as a killed run leaves it, unlocked
    archive_main([str(first), str(tmp_path / "archive")])
    assert "1 runs" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "archive").iterdir() if p.is_dir()] == [seed1.name]

    report_main([str(tmp_path / "archive"), "--out", str(tmp_path / "partial"), "--no-figures", "--cells", "2"])
    assert "**Partial: 1 of the sweep's 2 cells have ended.**" in (tmp_path / "partial" / "report.md").read_text()

    second = tmp_path / "second" / "grid"
    archive_main(["--restore", str(tmp_path / "archive"), str(second)])
    assert "restored 1 ended runs" in capsys.readouterr().out
    archive_main(["--restore", str(tmp_path / "archive"), str(second)])  # again: an existing folder is kept
    assert "restored 0 ended runs" in capsys.readouterr().out
    assert (second / seed1.name / "metrics.jsonl").read_bytes() == (seed1 / "metrics.jsonl").read_bytes()

    out = run_cli(*sweep, "trainer.eval_every=3", runs=tmp_path / "second").stdout
    assert f"{second / seed1.name} already completed; nothing to do" in out
    assert (second / seed1.name / "metrics.jsonl").read_bytes() == (seed1 / "metrics.jsonl").read_bytes()
    retrained = json.loads((second / seed2.name / "summary.json").read_text())
    assert retrained["status"] == "completed" and retrained["final"] == json.loads(finished)["final"]

    report_main([str(second), "--out", str(tmp_path / "whole"), "--no-figures", "--cells", "2"])
    assert "Partial" not in (tmp_path / "whole" / "report.md").read_text()
