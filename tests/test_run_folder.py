"""The run-folder contract (radam_repro/run_folder.py): one module that training writes by and every reader reads by."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radam_repro import run_folder
from radam_repro.callbacks import SweepReport, sweep_table
from radam_repro.report.aggregate import aggregate
from radam_repro.report.runs import load_run, load_runs
from radam_repro.run_dir import RunDir
from radam_repro.run_folder import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    HISTOGRAM_DIR,
    LATEST_CHECKPOINT,
    META_FILE,
    METRICS_FILE,
    STATUSES,
    SUMMARY_FILE,
    Metric,
    Status,
    better,
    has_best,
    headline_metrics,
    parse_strict_json,
    step_file,
    strict_json,
)

READERS = ("radam_repro.report", "radam_repro.dashboard")


def loaded_modules(code: str) -> list[str]:
    """The radam_repro modules a fresh interpreter holds after running ``code``."""
    script = (
        f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('radam_repro'))))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_training_imports_neither_the_report_nor_the_dashboard():
    modules = loaded_modules(
        "import radam_repro.train, radam_repro.loggers, radam_repro.run_dir, radam_repro.callbacks"
    )
    assert {"radam_repro.train", "radam_repro.loggers.sinks", "radam_repro.run_folder"} <= set(modules)
    assert [m for m in modules if m.startswith(READERS)] == []


def test_a_sweep_job_unpickling_the_callback_loads_no_report():
    """Hydra's submitit launcher pickles the SweepReport callback into every training job."""
    callback = pickle.dumps(SweepReport(figures=False, solved="valid/loss<0.1"))
    modules = loaded_modules(f"import pickle; callback = pickle.loads({callback!r}); assert callback.solved")
    assert "radam_repro.callbacks" in modules
    assert [m for m in modules if m.startswith(READERS)] == []


def test_the_contract_module_needs_no_torch():
    script = "import sys, radam_repro.run_folder; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def _refuse(constant: str):
    raise ValueError(f"bare {constant} in strict JSON")


SPECIAL = set(run_folder.NON_FINITE)  # strings the codec reserves for non-finite numbers
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text().filter(lambda s: s not in SPECIAL)
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20
)


@given(documents)
def test_the_codec_round_trips_every_json_document_non_finite_numbers_included(document):
    text = strict_json(document)
    json.loads(text, parse_constant=_refuse)  # RFC 8259: no bare NaN / Infinity
    assert repr(parse_strict_json(text)) == repr(document)  # repr: nan == nan, and int stays int, float float


def test_the_report_reads_non_finite_values_that_run_dir_wrote(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_summary(status=Status.DIVERGED, step=3, final={"train/loss": math.nan}, best={"valid/loss": math.inf})
    run.append_metrics([{"step": 3, "split": "train", "loss": -math.inf, "lr": 1e-3}])
    run.write_histogram(1, {"step": 1, "hist": {"log_abs_grad": {"edges": [0.0, math.inf], "counts": [math.nan]}}})
    assert "NaN" in (run.path / SUMMARY_FILE).read_text() and "-Infinity" in (run.path / METRICS_FILE).read_text()

    loaded = load_run(run.path)
    assert loaded.status == Status.DIVERGED
    assert math.isnan(loaded.summary["final"]["train/loss"]) and loaded.summary["best"]["valid/loss"] == math.inf
    assert loaded.rows == [{"step": 3, "split": "train", "loss": -math.inf, "lr": 1e-3}]
    (histogram,) = loaded.histograms()
    assert histogram["hist"]["log_abs_grad"]["edges"] == [0.0, math.inf]
    assert math.isnan(histogram["hist"]["log_abs_grad"]["counts"][0])
    assert repr(run.read_summary()) == repr(loaded.summary)  # training's reader and the report's agree


def keeps(key: str, values: list[float]) -> float | None:
    """The value summary.json's best keeps for ``key`` when the loop logs ``values`` in turn (train.Loop.log_eval)."""
    best = {}
    for value in values:
        best.update({key: value} if better(key, value, best.get(key)) else {})
    return best.get(key)


def test_one_row_of_the_metric_table_drives_best_final_and_the_report(monkeypatch, tmp_path):
    values = [0.5, 0.2, math.nan, 0.4]
    assert keeps("valid/wer", values) is None  # not in the table: logged and plotted, never ranked
    assert keeps("valid/acc", values) == 0.5 and keeps("valid/loss", values) == 0.2

    monkeypatch.setitem(run_folder.METRICS, "wer", Metric("loss", headline=0))  # word error rate: lower is better
    assert (
        keeps("valid/wer", values) == 0.2
        and has_best("test/wer")
        and headline_metrics()[:2]
        == [
            "test/wer",
            "valid/wer",
        ]
    )
    monkeypatch.setitem(run_folder.METRICS, "wer", Metric("score", headline=0))
    assert keeps("valid/wer", values) == 0.5

    monkeypatch.setitem(run_folder.METRICS, "wer", Metric("loss", headline=0))
    for seed, wer in ((1, 0.3), (2, 0.5)):
        run = RunDir(tmp_path / "sweep" / f"s{seed}")
        run.write_json(CONFIG_FILE, {"task": {"name": "asr"}, "optimizer": {"name": "adam"}, "seed": seed})
        run.append_metrics([{"step": s, "split": "train", "wer": wer + s} for s in range(12)])
        run.write_summary(status=Status.COMPLETED, step=11, final={"valid/wer": wer, "valid/acc": 90.0}, best={})
    runs = load_runs([tmp_path / "sweep"])
    assert runs[0].final()["train/wer"] == pytest.approx(0.3 + sum(range(2, 12)) / 10)  # the last 10 logged values
    assert aggregate(runs).headline("asr") == "valid/wer"  # before valid/acc: the table's tier says so
    assert sweep_table(tmp_path / "sweep").splitlines()[0] == "| variant | seed | status | valid/wer | valid/acc |"


def test_a_real_run_writes_the_layout_the_contract_names(cli):
    cli(
        "task=nmt_synthetic",
        "task.model.layers=1",
        "optimizer=adam",
        "trainer.max_steps=6",
        "trainer.log_every=2",
        "trainer.eval_every=3",
        "hydra.run.dir=${run_root}/run",
    )
    run = cli.runs / "run"
    assert {p.name for p in run.iterdir() if not p.name.startswith(".") and p.suffix != ".log"} == {
        CONFIG_FILE,
        META_FILE,
        METRICS_FILE,
        SUMMARY_FILE,
        CHECKPOINT_DIR,
        HISTOGRAM_DIR,
    }
    assert {p.name for p in (run / CHECKPOINT_DIR).iterdir()} == {LATEST_CHECKPOINT, step_file(6, ".pt")}
    assert {p.name for p in (run / HISTOGRAM_DIR).iterdir()} == {step_file(1, ".json"), step_file(5, ".json")}

    loaded = load_run(run)
    assert loaded.status == Status.COMPLETED and loaded.problems == []
    evaluated = {f"{r['split']}/{k}" for r in loaded.rows if r["split"] != "train" for k in r}
    assert (
        set(loaded.best())
        == {k for k in evaluated if has_best(k)}
        == {
            "valid/loss",
            "valid/nll_loss",
            "valid/ppl",
            "valid/acc",
        }
    )
    assert aggregate([loaded]).headline("nmt_synthetic") == "valid/acc"
    assert sweep_table(cli.runs).splitlines()[0] == (
        "| variant | seed | status | train/loss | valid/acc | valid/ppl | valid/loss |"
    )


def test_status_names_are_the_strings_summary_json_holds():
    assert STATUSES == ("completed", "diverged", "failed", "running", "interrupted", "incomplete")


def test_a_malformed_metric_row_is_refused_by_name():
    with pytest.raises(ValueError, match="kind='scroe'.*score .*loss .*count"):
        Metric("scroe")
    with pytest.raises(ValueError, match="ranks='max'.*mean or sum"):
        Metric("count", ranks="max")
