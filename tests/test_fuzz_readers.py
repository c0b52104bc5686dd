"""Every reader of a file a user or a crash can damage, fuzzed with Hypothesis (issue 21, "Beyond the list").

Each property writes a valid file with the project's own writer, damages it (cut at a byte, flipped bytes,
inserted junk or JSON-like fragments, a spliced copy of its own bytes, deleted bytes; or a valid file of
another shape) and asserts that the reader either returns what the file means or refuses it with
:class:`~radam_repro.errors.CorruptFile` naming the file. The report's readers never raise: they list the
problem, naming the file, on the run. Examples per property: 30 fixed ones in the default suite (the ``fast``
profile, tests/conftest.py); 1000 random ones under the ``slow`` marker or with ``HYPOTHESIS_PROFILE=slow``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, tiny_transformer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from test_damaged_inputs import exported, write_indexed

from radam_repro.data.bilingual import Dictionary
from radam_repro.data.cifar import read_batch
from radam_repro.data.fairseq_binarized import read_indexed
from radam_repro.errors import CorruptFile
from radam_repro.models import fairseq_checkpoint
from radam_repro.report.runs import load_run
from radam_repro.run_dir import RunDir
from radam_repro.run_folder import flatten, is_run_specific, parse_config, parse_strict_json
from radam_repro.train import ConfigMismatch, check_resume_config

pytestmark = pytest.mark.filterwarnings("ignore")  # torch/numpy warn about odd inputs on the way to refusing them
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
JSONISH = st.text(alphabet='{}[],:"0123456789.-+eE \ntrufalsNIn', min_size=1, max_size=12).map(str.encode)


@st.composite
def damaged(draw, raw: bytes) -> bytes:
    """``raw`` with one kind of damage: cut, flipped bytes, junk or JSON-ish fragments inserted, a splice, a gap."""
    kind = draw(st.sampled_from(["cut", "flip", "junk", "jsonish", "splice", "gap"]))
    at = draw(st.integers(0, len(raw) - 1))
    if kind == "cut":
        return raw[:at]
    if kind == "flip":
        out = bytearray(raw)
        for position in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            out[position] ^= draw(st.integers(1, 255))
        return bytes(out)
    if kind in ("junk", "jsonish"):
        return raw[:at] + draw(st.binary(min_size=1, max_size=16) if kind == "junk" else JSONISH) + raw[at:]
    start = draw(st.integers(0, len(raw) - 1))
    piece = raw[start : start + draw(st.integers(1, 64))]
    return raw[:at] + piece + raw[at:] if kind == "splice" else raw[:at] + raw[at + len(piece) :]


def damage_of(raw: bytes):
    return st.one_of(damaged(raw), st.just(b""))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
SUMMARY_KEYS = st.sampled_from(["status", "step", "final", "best", "wall_s", "error", "total_steps"])


def same(a, b) -> bool:
    """Equal, NaN equal to NaN (rows and summaries hold non-finite numbers)."""
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True, default=repr)


def names(problems: list[str], file: str) -> bool:
    return any(file in problem for problem in problems)


# -- metrics.jsonl (the report's reader: rows of the lines that are JSON objects; every other line named) -------------
ROWS = [
    {"step": 0, "split": "train", "loss": 3.4, "lr": 0.0},
    {"step": 4, "split": "train", "loss": float("nan"), "lr": 1e-3, "acc": 12.5},
    {"step": 4, "split": "valid", "valid/ppl": float("inf"), "valid/loss": 2.5},
    {"step": 8, "split": "train", "loss": -float("inf"), "grad_norm": 1e30},
    {"step": 8, "split": "valid", "valid/loss": 2.25, "note": "ünïcödé"},
]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A run folder written by RunDir: config.yaml, summary.json, metrics.jsonl, two histograms, latest.pt."""
    run = RunDir(tmp_path_factory.mktemp("fuzz") / "run")
    run.write_config(OmegaConf.create(CONFIG))
    run.write_summary(status="completed", step=8, final={"valid/loss": 2.25, "valid/ppl": float("inf")}, best={})
    run.append_metrics(ROWS)
    for step in (4, 8):
        run.write_histogram(step, {"step": step, "edges": [0.0, 1.0, 2.0], "counts": {"g": [1, step]}})
    run.save_checkpoint(checkpoint_state(), step=8, keep=0)
    return run.path


def fresh_copy(run_folder: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(run_folder, folder)
    return folder


def expected_rows(raw: bytes) -> tuple[list[dict], bool]:
    """What metrics.jsonl means line by line: the rows of lines that are JSON objects; whether another line exists."""
    rows, bad = [], False
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            row = parse_strict_json(line)
        except ValueError:
            bad = True
            continue
        rows.extend([row] if isinstance(row, dict) else [])
        bad = bad or not isinstance(row, dict)
    return rows, bad


@settings(suppress_health_check=FIXTURES)
@given(data=st.data())
def test_metrics_jsonl_rows_are_its_object_lines_and_other_lines_are_named(run_folder, tmp_path_factory, data):
    folder = fresh_copy(run_folder, tmp_path_factory)
    raw = (folder / "metrics.jsonl").read_bytes()
    (folder / "metrics.jsonl").write_bytes(bad := data.draw(damage_of(raw)))
    run = load_run(folder)
    rows, broken = expected_rows(bad)
    assert same(run.rows, rows)
    assert names(run.problems, "metrics.jsonl") == broken, run.problems


@settings(suppress_health_check=FIXTURES)
@given(data=st.data())
def test_a_metrics_jsonl_cut_anywhere_keeps_every_whole_line(run_folder, tmp_path_factory, data):
    folder = fresh_copy(run_folder, tmp_path_factory)
    raw = (folder / "metrics.jsonl").read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    (folder / "metrics.jsonl").write_bytes(raw[:cut])
    run = load_run(folder)
    complete = raw[:cut].count(b"\n")
    tail = raw[:cut].split(b"\n")[-1]
    tail_whole = tail == raw.split(b"\n")[complete]  # cut just before a newline: the last line is still whole
    assert same(run.rows, ROWS[: complete + tail_whole])
    assert names(run.problems, "metrics.jsonl") == (bool(tail) and not tail_whole), run.problems


# -- summary.json: training's reader (CorruptFile) and the report's (a problem on the run) ------------------------------
@settings(suppress_health_check=FIXTURES)
@given(data=st.data())
def test_summary_json_reads_as_an_object_or_is_refused_by_name(run_folder, tmp_path_factory, data):
    folder = fresh_copy(run_folder, tmp_path_factory)
    path = folder / "summary.json"
    raw = path.read_bytes()
    other = st.dictionaries(SUMMARY_KEYS, JSON, max_size=5) | JSON
    bad = data.draw(damage_of(raw) | other.map(lambda value: json.dumps(value).encode()))
    path.write_bytes(bad)
    try:
        meaning = parse_strict_json(bad)
    except ValueError:
        meaning = None
    try:
        summary = RunDir(folder).read_summary()
    except CorruptFile as error:
        assert str(path) in str(error) and not isinstance(meaning, dict)
    else:
        assert isinstance(meaning, dict) and same(summary, meaning)
    run = load_run(folder)  # the report: never raises, a malformed summary is named
    assert isinstance(run.status, str) and (run.step is None or isinstance(run.step, int))
    assert all(isinstance(v, (int, float)) for v in {**run.final(), **run.best()}.values())
    if not isinstance(meaning, dict):
        assert names(run.problems, "summary.json"), run.problems


# -- config.yaml: the resume check (CorruptFile or ConfigMismatch, both naming it) and the report ------------------------
CONFIG = {
    "seed": 1,
    "optimizer": {"name": "radam", "lr": 0.003, "betas": [0.9, 0.98]},
    "task": {"name": "nmt_synthetic", "max_update": 8},
    "trainer": {"resume": True, "threads": 1, "max_steps": 8},
}


def retyped(config: dict):
    """``config`` with one section or value replaced by any JSON value (a user's edit, another tool's file)."""
    where = st.sampled_from([("task",), ("task", "name"), ("optimizer",), ("optimizer", "name"), ("seed",)])

    def apply(args):
        path, value = args
        out = json.loads(json.dumps(config))
        (out[path[0]] if len(path) == 2 else out)[path[-1]] = value
        return out

    return st.tuples(where, JSON).map(apply)


def computes_the_same(meaning) -> bool:
    """Whether a config.yaml's content is CONFIG up to run-specific keys (what the resume check compares)."""
    if not isinstance(meaning, dict):
        return False
    kept = lambda config: {k: v for k, v in flatten(config).items() if not is_run_specific(k)}  # noqa: E731
    return kept(meaning) == kept(CONFIG)


@settings(suppress_health_check=FIXTURES)
@given(data=st.data())
def test_config_yaml_resumes_only_when_it_means_the_same_config(run_folder, tmp_path_factory, data):
    folder = fresh_copy(run_folder, tmp_path_factory)
    path = folder / "config.yaml"
    raw = path.read_bytes()
    other = (JSON | retyped(CONFIG)).map(lambda value: yaml.safe_dump(value).encode())
    path.write_bytes(bad := data.draw(damage_of(raw) | other))
    try:
        meaning = parse_config(bad)
    except ValueError:
        meaning = None
    try:
        check_resume_config(OmegaConf.create(CONFIG), folder)
    except (CorruptFile, ConfigMismatch) as error:
        assert str(path) in str(error) or f"{folder} holds a run with another config" in str(error)
        assert not computes_the_same(meaning)
    else:
        assert computes_the_same(meaning)
    run = load_run(folder)
    assert isinstance(run.config, dict)
    assert all(value is None or isinstance(value, str) for value in (run.task, run.variant))
    if not isinstance(meaning, dict):
        assert names(run.problems, "config.yaml"), run.problems


# -- histograms/step_*.json ----------------------------------------------------------------------------------------
@settings(suppress_health_check=FIXTURES)
@given(data=st.data())
def test_histogram_files_read_as_objects_by_step_or_are_named(run_folder, tmp_path_factory, data):
    folder = fresh_copy(run_folder, tmp_path_factory)
    path = folder / "histograms" / "step_0000004.json"
    raw = path.read_bytes()
    bad = data.draw(damage_of(raw) | JSON.map(lambda value: json.dumps(value).encode()))
    path.write_bytes(bad)
    run = load_run(folder)
    records = run.histograms()
    assert all(isinstance(r, dict) and isinstance(r.get("step"), int) for r in records)
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)
    assert parse_strict_json((folder / "histograms" / "step_0000008.json").read_bytes()) in records
    if len(records) == 1:
        assert names(run.problems, path.name), run.problems


# -- checkpoints: latest.pt (torch.load weights_only) ------------------------------------------------------------------
def checkpoint_state() -> dict:
    """A checkpoint as Loop.save writes it: a small model and its RAdam state after one step."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.RAdam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return dict(
        step=8,
        best={"valid/loss": 2.25},
        wall_s=1.5,
        metrics_bytes=321,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler={"last_epoch": 8, "lr_lambdas": [None]},
        scaler={},
        ranks=[{"rng": {"torch": torch.get_rng_state()}, "task": {}, "interval": [1.0, 2.0]}],
    )


def equal(a, b) -> bool:
    """The same nested containers, values and tensors (dtype, shape and every element)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(equal, a, b))
    return type(a) is type(b) and a == b


@settings(suppress_health_check=FIXTURES)
@given(data=st.data())
def test_latest_checkpoint_loads_exactly_or_is_refused_by_name(run_folder, tmp_path_factory, data):
    folder = fresh_copy(run_folder, tmp_path_factory)
    path = folder / "checkpoints" / "latest.pt"
    raw = path.read_bytes()
    original = torch.load(path, weights_only=True)
    path.write_bytes(data.draw(damage_of(raw)))
    try:
        found = RunDir(folder).load_checkpoint()
    except CorruptFile as error:
        assert str(path) in str(error)
    else:  # damage the zip reader skips (alignment padding, unused header fields): the same checkpoint
        state, used = found
        assert used == path and equal(state, original)


@pytest.fixture(scope="module")
def fairseq_export(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny Transformer exported as a fairseq checkpoint (task.init_from reads such files) and its weights."""
    model = tiny_transformer()
    return exported(tmp_path_factory.mktemp("export") / "checkpoint_last.pt", model), model.state_dict()


@settings(suppress_health_check=FIXTURES)
@given(data=st.data())
def test_fairseq_checkpoints_import_exactly_or_are_refused_by_name(fairseq_export, tmp_path_factory, data):
    source, weights = fairseq_export
    path = tmp_path_factory.mktemp("export-damaged") / source.name
    path.write_bytes(data.draw(damage_of(source.read_bytes())))
    try:
        model = fairseq_checkpoint.load_model(path)
    except CorruptFile as error:
        assert str(path) in str(error)
    else:
        assert equal(model.state_dict(), weights)


# -- CIFAR-10 python batches -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cifar_batch(tmp_path_factory) -> Path:
    """A small batch in the official layout (a protocol-2 pickle of a dict with uint8 data and a list of labels)."""
    rng = np.random.default_rng(0)
    entry = {
        "batch_label": "training batch 1 of 5",
        "labels": rng.integers(0, 10, 6).tolist(),
        "data": rng.integers(0, 256, (6, 3072), dtype=np.uint8),
        "filenames": [f"img_{i}.png" for i in range(6)],
    }
    path = tmp_path_factory.mktemp("cifar") / "data_batch_1"
    path.write_bytes(pickle.dumps(entry, protocol=2))
    return path


@settings(suppress_health_check=FIXTURES)
@given(data=st.data())
def test_cifar_batches_read_as_images_and_labels_or_are_refused_by_name(cifar_batch, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cifar-damaged") / "data_batch_1"
    raw = cifar_batch.read_bytes()
    path.write_bytes(bad := data.draw(damage_of(raw)))
    try:
        images, labels = read_batch(path)
    except CorruptFile as error:
        assert str(path) in str(error)
    else:
        assert images.dtype == np.uint8 and images.ndim == 2 and images.shape[1] == 3072
        assert labels.dtype == np.int64 and labels.shape == (len(images),)
        assert ((labels >= 0) & (labels < 10)).all()
        assert not raw.startswith(bad)  # a cut file lacks the pickle's final STOP: it never reads


# -- fairseq data-bin: .idx / .bin / dict.<lang>.txt -------------------------------------------------------------------
SENTENCES = [[4, 5, 6, 2], [7, 2], [8, 9, 10, 11, 12, 2], [2], [13, 4, 2]]
VOCAB = 16


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    prefix = tmp_path_factory.mktemp("bin") / "train.de-en.en"
    write_indexed(prefix, SENTENCES)
    return prefix


def sentences(text) -> list[list[int]]:
    return [text[i].tolist() for i in range(len(text))]


@settings(suppress_health_check=FIXTURES)
@given(data=st.data(), which=st.sampled_from(["idx", "bin"]))
def test_fairseq_index_and_data_read_back_or_are_refused_by_name(indexed, tmp_path_factory, data, which):
    prefix = tmp_path_factory.mktemp("bin-damaged") / indexed.name
    for suffix in ("idx", "bin"):
        shutil.copy(f"{indexed}.{suffix}", f"{prefix}.{suffix}")
    path = Path(f"{prefix}.{which}")
    raw = path.read_bytes()
    path.write_bytes(data.draw(damage_of(raw)))
    try:
        text = read_indexed(prefix, VOCAB)
    except CorruptFile as error:
        assert str(error.path) in str(error) and error.path.name.startswith(indexed.name)
    else:
        if which == "idx":  # the index holds no redundancy-free bytes: it reads as the original or not at all
            assert sentences(text) == SENTENCES
        else:  # a flipped id still in the dictionary cannot be told from a real one; the shape can
            assert [len(s) for s in sentences(text)] == [len(s) for s in SENTENCES]
            assert all(0 <= t < VOCAB for s in sentences(text) for t in s)


@settings(suppress_health_check=FIXTURES)
@given(data=st.data())
def test_fairseq_dictionaries_read_line_by_line_or_are_refused_by_name(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("dict") / "dict.en.txt"
    raw = "".join(f"{word} {count}\n" for word, count in [("the", 9), ("ein", 5), ("hütte", 3), ("@@", 1)]).encode()
    path.write_bytes(bad := data.draw(damage_of(raw)))
    try:
        dictionary = Dictionary.load(path)
    except CorruptFile as error:
        assert str(path) in str(error)
    else:
        lines = bad.decode().replace("\r\n", "\n").replace("\r", "\n").removesuffix("\n").split("\n")
        lines = lines if bad else []  # fairseq reads lines as text files do: universal newlines, nothing else
        assert len(dictionary) == 4 + len(lines) and dictionary.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
        assert all(line.rstrip().startswith(symbol) for line, symbol in zip(lines, dictionary.symbols[4:]))


# -- the deeper search: every property above with the "slow" profile (1000 random examples each) ----------------------
@pytest.mark.slow
def test_every_reader_property_holds_for_1000_random_examples(tmp_path):
    env = {**os.environ, "HYPOTHESIS_PROFILE": "slow", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-m", "not slow", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-5000:]
