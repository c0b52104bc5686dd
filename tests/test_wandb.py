"""W&B through the real CLI: what an offline run's .wandb file holds (what `wandb sync` uploads), read back
record by record with W&B's own protobuf schema; a server that does not answer costs at most
logger.init_timeout; a mistyped logger.mode fails before any work."""

from __future__ import annotations

import json
import re
import socket
import struct
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

from radam_repro.config import LoggerConfig

SMALL = ("task=nmt_synthetic", "trainer.max_steps=30", "trainer.log_every=10", "trainer.eval_every=10")


def wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """The records of a .wandb transaction log: W&B's header (":W&B", 0xBEE1, version 0) then LevelDB-log
    framing (32 KiB blocks; chunks of 7-byte header crc32c u32, length u16, type u8: 1 full, 2 first,
    3 middle, 4 last), each record a serialized wandb_internal_pb2.Record. wandb 0.31 reads these files
    in its Go core only (the Python DataStore of wandb < 0.19 is gone), so the framing is read here."""
    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0), "not a version-0 W&B transaction log"
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def items(updates) -> dict[str, object]:
    """A history / summary / config update list as {"train/loss": 3.4, "hist/log_abs_grad": {...}, ...}."""
    out: dict[str, object] = {}
    for item in updates:
        keys = list(item.nested_key) or [item.key]
        target = out
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = json.loads(item.value_json)
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_offline_run_holds_config_metrics_histograms_and_summary(cli):
    cli("optimizer=radam", "logger=wandb", "logger.mode=offline", "group=wandb_check", "seed=3", *SMALL)
    (run,) = [p.parent for p in cli.runs.rglob("summary.json")]
    assert not (run / "wandb").exists(), "WANDB_DIR is set (conftest): the W&B files belong there"
    (log,) = (cli.runs / "wandb_home" / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(log)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds.count("run") >= 1 and kinds[-1] == "exit"

    start = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config = items(start.config.update)
    assert (config["optimizer.name"], config["task.name"], config["seed"]) == ("radam", "nmt_synthetic", 3)
    assert config["optimizer.betas"] == [0.9, 0.931]  # R4 of task/nmt_synthetic.yaml
    assert config["trainer.max_steps"] == 30
    assert start.run_group == "wandb_check" and {"nmt_synthetic", "radam", "seed3"} <= set(start.tags)

    metrics = [r.metric for r in records if r.WhichOneof("record_type") == "metric"]
    assert any(m.glob_name == "*" and m.step_metric == "step" for m in metrics), "x-axis: the optimizer step"
    goals = {m.name: m.summary for m in metrics if m.name}
    assert goals["valid/loss"].min and goals["valid/acc"].max and goals["train/loss"].min

    history = [items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    for row in read_jsonl(run / "metrics.jsonl"):  # every row of the run folder, at its step, same values
        expected = {f"{row['split']}/{k}": v for k, v in row.items() if k not in ("step", "split")}
        assert any(h.get("step") == row["step"] and all(h.get(k) == v for k, v in expected.items()) for h in history), (
            row
        )
    steps_with_hist = []
    for path in sorted((run / "histograms").glob("step_*.json")):
        record = json.loads(path.read_text())
        (logged,) = [h for h in history if h.get("step") == record["step"] and "hist/log_abs_grad" in h]
        for name, hist in record["hist"].items():
            assert logged[f"hist/{name}"]["_type"] == "histogram"
            assert logged[f"hist/{name}"]["values"] == [int(c) for c in hist["counts"]]
            assert logged[f"hist/{name}"]["bins"] == pytest.approx(hist["edges"])
        steps_with_hist.append(record["step"])
    assert steps_with_hist == [1, 5, 10, 25]

    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(items(r.summary.update))
    expected = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 30
    for key, value in expected["final"].items():
        assert summary[f"final/{key}"] == value
    for key, value in expected["best"].items():
        assert summary[f"best/{key}"] == value


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_unreachable_server_costs_at_most_the_init_timeout(cli):
    assert LoggerConfig().init_timeout <= 30
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = cli(
        "logger=wandb",
        "logger.mode=online",
        "logger.init_timeout=3",
        "optimizer=adam",
        "trainer.max_steps=10",
        "task=nmt_synthetic",
        env={"WANDB_BASE_URL": f"http://127.0.0.1:{port}", "WANDB_API_KEY": "x" * 40},
    )
    waited = re.search(r"W&B could not start within ([0-9.]+) s", proc.stderr)
    assert waited, proc.stderr[-2000:]
    assert float(waited.group(1)) <= 3 + 20  # + starting the wandb-core service; unbounded it waited ~100 s
    (summary,) = cli.runs.rglob("summary.json")
    assert json.loads(summary.read_text())["status"] == "completed"
    assert (summary.parent / "metrics.jsonl").stat().st_size > 0


def test_a_mistyped_logger_mode_fails_before_any_work(cli):
    proc = cli("logger=wandb", "logger.mode=ofline", "task=nmt_synthetic", check=False)
    assert proc.returncode != 0
    assert "logger.mode" in proc.stderr and "online, offline, disabled" in proc.stderr, proc.stderr
    assert not cli.runs.exists() or not any(cli.runs.rglob("config.yaml"))
