"""``python -m radam_repro.data fetch`` against a real HTTP server on 127.0.0.1 serving the upstream layouts (built
from the staged data), then each task's default ``data_dir`` trains; missing data stops before a run folder exists."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT, TINY_NMT, run_cli

from radam_repro.data import fetch as fetch_module
from radam_repro.data.fetch import MANIFEST, fetch
from radam_repro.errors import UserError

SMOKE = ["trainer.max_steps=2", "trainer.final_eval_limit=4"]


class MirrorHandler(BaseHTTPRequestHandler):
    """Serves ``server.root`` with Range support; ``server.cut`` (bytes) ends every response early, as a dropped
    connection does; ``server.requests`` records (path, Range header)."""

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Range")))
        path = self.server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        self.wfile.write(body if self.server.cut is None else body[: self.server.cut])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    httpd.root, httpd.cut, httpd.requests = tmp_path / "mirror", None, []
    httpd.root.mkdir()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RADAM_REPRO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def train_tags(lines: list[str]) -> bytes:
    """A train.tags.de-en.<lang> file: talk metadata lines (dropped by the preparation) around the text."""
    head = ["<url>http://www.ted.com/talks/x.html</url>", "<keywords>talks</keywords>", "<talkid>1</talkid>"]
    return ("\n".join(head + lines) + "\n").encode()


def serve(server, dataset: str, files: dict[str, bytes]) -> dict[str, str]:
    """Put ``files`` in the mirror's ``<dataset>/`` folder; returns their sha256 checksums."""
    folder = server.root / dataset
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: sha256(data) for name, data in files.items()}


def upstream_files(shared_data: Path, dataset: str) -> dict[str, bytes]:
    """The upstream files of ``dataset``, made from the staged data where the staged copy is partial."""
    if dataset == "cifar10":
        folder = shared_data / "cifar10" / "partial" / "cifar-10-batches-py"
        return {
            "cifar-10-python.tar.gz": tar_gz(
                {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in folder.iterdir()}
            )
        }
    if dataset == "iwslt14":
        orig, tmp = (
            shared_data / "iwslt14" / "orig" / "de-en",
            shared_data / "iwslt14" / "iwslt14.tokenized.de-en" / "tmp",
        )
        members = {f"de-en/{p.name}": p.read_bytes() for p in orig.glob("*.xml")}
        for lang in ("de", "en"):
            members[f"de-en/train.tags.de-en.{lang}"] = train_tags(
                (tmp / f"valid.{lang}").read_text().splitlines()[:400]
            )
        return {"de-en.tgz": tar_gz(members)}
    if dataset == "multi30k":
        return {
            f.name: (shared_data / "multi30k" / "data" / "task1" / "tok" / f.name).read_bytes()
            for f in MANIFEST[dataset].files
        }
    if dataset == "wikitext2":  # train.txt is not staged: valid.txt stands in
        folder = shared_data / "wikitext-2"
        return {
            "train.txt": (folder / "valid.txt").read_bytes(),
            **{n: (folder / n).read_bytes() for n in ("valid.txt", "test.txt")},
        }
    heldout = shared_data / "lm1b" / fetch_module.LM1B_NAME / "heldout-monolingual.tokenized.shuffled"
    shard = (heldout / "news.en.heldout-00000-of-00050").read_bytes()
    name = fetch_module.LM1B_NAME
    return {
        f"{name}.tar.gz": tar_gz(
            {
                f"{name}/heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050": shard,
                f"{name}/training-monolingual.tokenized.shuffled/news.en-00001-of-00100": shard[:200_000],
            }
        )
    }


def manifest_for(checksums: dict[str, str], **urls: str) -> dict:
    """MANIFEST with the test's checksums (files made here differ from upstream) and, optionally, other URLs."""
    out = {}
    for name, dataset in MANIFEST.items():
        files = tuple(
            dataclasses.replace(f, size=None, checksum=checksums.get(f.name, f.checksum), url=urls.get(f.name, f.url))
            for f in dataset.files
        )
        out[name] = dataclasses.replace(dataset, files=files)
    return out


RUNS = {  # the task each data set feeds, run with its default data_dir: a smoke run
    "cifar10": ["task=cifar10", "task.check_integrity=false", "task.train_subset=64", *SMOKE],
    "iwslt14": ["task=nmt", *TINY_NMT, *SMOKE],
    "multi30k": ["task=nmt_multi30k", "task.bpe_merges=500", *TINY_NMT, *SMOKE],
    "wikitext2": ["task=lm_wikitext2", "task.batch_size=4", "task.valid_lines=[0,0.02]", *SMOKE],
    "lm1b": ["task=lm1b_small", "task.batch_size=4", "trainer.max_steps=2", "trainer.final_eval_limit=0"],
}


@pytest.mark.parametrize(
    "dataset",
    [
        pytest.param(
            "cifar10",
            marks=pytest.mark.slow,  # test_task_configs runs the default CIFAR layout in the default suite
        ),
        pytest.param("iwslt14", marks=pytest.mark.slow),  # ~40 s: tokenises the 6,750 test segments
        "multi30k",  # ~35 s on 2 busy cores, most of it the CLI's start
        pytest.param("wikitext2", marks=pytest.mark.slow),
        pytest.param("lm1b", marks=pytest.mark.slow),
    ],
)
def test_fetch_from_a_mirror_then_the_task_trains_on_its_default_data_dir(dataset, server, shared_data, tmp_path):
    checksums = serve(server, dataset, upstream_files(shared_data, dataset))
    root = tmp_path / "data"
    (folder,) = fetch([dataset], root, mirror=server.url, manifest=manifest_for(checksums))
    assert folder == root / MANIFEST[dataset].folder and folder.is_dir()
    assert [p.name for p in root.rglob("*") if ".fetching-" in p.name] == []  # the scratch folder is gone
    assert not (tmp_path / "cache" / "downloads" / dataset).exists()  # verified downloads are removed once in place
    assert {path for path, _ in server.requests} == {f"/{dataset}/{name}" for name in checksums}
    proc = run_cli(*RUNS[dataset], runs=tmp_path / "runs", env={"RADAM_REPRO_DATA": str(root)})
    (summary_path,) = (tmp_path / "runs").rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "completed" and summary["step"] == 2, proc.stdout[-2000:]
    limit = RUNS[dataset][-1].split("=")[1]
    assert summary["final_eval"].startswith("skipped" if limit == "0" else "bounded: at most 4 test items")
    if dataset in ("iwslt14", "multi30k"):
        assert summary["final"]["test/sentences"] == 4  # the bounded BLEU says over how many sentences


def test_fetch_cli_verifies_the_real_manifest_and_skips_a_present_data_set(server, shared_data, tmp_path):
    """Multi30k's staged files are the pinned upstream files: the manifest's own checksums pass."""
    serve(server, "multi30k", upstream_files(shared_data, "multi30k"))
    root = tmp_path / "data"
    cmd = [sys.executable, "-m", "radam_repro.data", "fetch", "multi30k", "--root", str(root)]
    env = {**os.environ, "RADAM_REPRO_MIRROR": server.url, "RADAM_REPRO_CACHE": str(tmp_path / "cache")}
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    for file in MANIFEST["multi30k"].files:
        assert (root / MANIFEST["multi30k"].folder / file.name).read_bytes() == (
            shared_data / "multi30k" / "data" / "task1" / "tok" / file.name
        ).read_bytes()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert len(server.requests) == len(MANIFEST["multi30k"].files)  # nothing downloaded twice


def test_file_mirror_and_an_unknown_name(tmp_path, shared_data):
    mirror = tmp_path / "mirror" / "wikitext2"
    mirror.mkdir(parents=True)
    files = upstream_files(shared_data, "wikitext2")
    for name, data in files.items():
        (mirror / name).write_bytes(data)
    checksums = {name: sha256(data) for name, data in files.items()}
    (folder,) = fetch(
        ["wikitext2"], tmp_path / "data", f"file://{tmp_path / 'mirror'}", manifest=manifest_for(checksums)
    )
    assert (folder / "train.txt").read_bytes() == files["train.txt"]
    with pytest.raises(UserError, match="unknown data set.*cifar10, iwslt14, multi30k, wikitext2, lm1b or all"):
        fetch(["wikitext3"], tmp_path / "data")


def test_an_interrupted_download_resumes_with_a_range_request(server, shared_data, tmp_path):
    serve(server, "multi30k", upstream_files(shared_data, "multi30k"))
    root = tmp_path / "data"
    server.cut = 400_000  # every response stops after 400 kB: train.*.de (2.1 MB) cannot finish in 3 attempts
    with pytest.raises(UserError, match=r"rerun the same command to resume") as failed:
        fetch(["multi30k"], root, mirror=server.url)
    assert "train.lc.norm.tok.de" in str(failed.value)
    assert not root.exists(), "an interrupted fetch must leave nothing where the task reads"
    part = tmp_path / "cache" / "downloads" / "multi30k" / "train.lc.norm.tok.de.part"
    kept = part.stat().st_size
    assert 800_000 < kept <= 1_200_000  # three attempts, each resumed where the last stopped
    assert [r for p, r in server.requests if p.endswith("train.lc.norm.tok.de")][1:] != [None, None]
    server.cut, server.requests[:] = None, []
    (folder,) = fetch(["multi30k"], root, mirror=server.url)  # the real manifest's sha256 checks the joined file
    assert ("/multi30k/train.lc.norm.tok.de", f"bytes={kept}-") in server.requests
    staged = shared_data / "multi30k" / "data" / "task1" / "tok" / "train.lc.norm.tok.de"
    assert (folder / "train.lc.norm.tok.de").read_bytes() == staged.read_bytes()


def test_a_checksum_mismatch_is_refused_by_name_with_both_hashes(server, shared_data, tmp_path):
    files = upstream_files(shared_data, "iwslt14")
    serve(server, "iwslt14", files)
    wrong = "sha256:" + "0" * 64
    root = tmp_path / "data"
    with pytest.raises(UserError) as refused:
        fetch(["iwslt14"], root, mirror=server.url, manifest=manifest_for({"de-en.tgz": wrong}))
    message = str(refused.value)
    assert "de-en.tgz" in message and "0" * 64 in message and sha256(files["de-en.tgz"])[7:] in message
    assert not root.exists(), "nothing may appear under data_root"
    assert not list((tmp_path / "cache").rglob("de-en.tgz*")), "the refused file is deleted"


def test_no_network_and_no_mirror_is_one_clear_paragraph(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    url = f"http://127.0.0.1:{closed}/fairseq/data/iwslt14/de-en.tgz"
    monkeypatch.setattr(fetch_module, "MANIFEST", manifest_for({}, **{"de-en.tgz": url}))
    monkeypatch.delenv("RADAM_REPRO_MIRROR", raising=False)
    with pytest.raises(SystemExit) as exited:
        fetch_module.main(["fetch", "iwslt14", "--root", str(tmp_path / "data")])
    message = str(exited.value.code)
    assert message.startswith(f"error: could not download {url}") and "\n" not in message
    assert "offline" in message and "--mirror" in message and "RADAM_REPRO_MIRROR" in message and "de-en.tgz" in message
    assert not (tmp_path / "data").exists()


def test_a_task_without_its_data_stops_before_a_run_folder_without_a_traceback(tmp_path):
    runs, empty = tmp_path / "runs", tmp_path / "empty"
    proc = run_cli(
        "optimizer=radam",
        "task=nmt",
        runs=runs,
        check=False,
        env={"RADAM_REPRO_DATA": str(empty), "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    expected = empty / "iwslt14" / "iwslt14.tokenized.de-en"
    assert f"is missing {expected}/{{train.de, train.en, valid.de, valid.en, test.de, test.en}}" in proc.stderr
    assert f"python -m radam_repro.data fetch iwslt14 --root {empty}" in proc.stderr and "--mirror" in proc.stderr
    assert not list(runs.rglob(".hydra")) and not list(runs.rglob("summary.json")), "no run folder"
    full = run_cli("task=lm1b_small", runs=runs, check=False, env={"RADAM_REPRO_DATA": str(empty)})
    assert full.returncode != 0 and "Traceback" in full.stderr and "fetch lm1b" in full.stderr  # HYDRA_FULL_ERROR=1


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_sigterm_during_the_final_evaluation_stops_it_and_the_resumed_run_evaluates_again(tmp_path, iwslt):
    """An untrained model decodes the 6,750 test sentences to max_len_b: minutes. SIGTERM stops it at once; the
    rerun resumes at the last step and evaluates again (here bounded to 3 sentences)."""
    args = ["task=nmt", f"task.data_dir={iwslt}", "task.train_split=valid", *TINY_NMT, "trainer.max_steps=2"]
    cmd = [sys.executable, "-m", "radam_repro", *args, "trainer.threads=1", "trainer.progress=false"]
    env = {**os.environ, "RADAM_REPRO_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    env["RADAM_REPRO_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("[radam_repro] final evaluation (full)"):
            break
    time.sleep(1.0)
    assert proc.poll() is None, "the final evaluation ended before the signal"
    signalled = time.time()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert time.time() - signalled < 10, "the final evaluation must stop promptly"
    assert proc.returncode == 1 and "stopped after SIGTERM; the checkpoint is saved" in stderr, stderr[-2000:]
    (run,) = [p.parent for p in (tmp_path / "runs").rglob("summary.json")]
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    resumed = subprocess.run(
        [*cmd, "trainer.final_eval_limit=3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout and "final evaluation (bounded: at most 3 test items" in resumed.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 2 and summary["final"]["test/sentences"] == 3
    assert len((run / "test.hypotheses.txt").read_text().splitlines()) == 3


def test_sigterm_handler_stops_at_once_inside_immediate(monkeypatch):
    """The unit under the test above: outside ``immediate()`` a signal only sets the flag."""
    from radam_repro.preemption import Preemption

    preemption = Preemption()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.received == signal.SIGTERM  # noted, nothing else
        with pytest.raises(SystemExit, match="stopped after SIGTERM"), preemption.immediate():
            pass  # a signal received before entering stops at once too
        preemption.received = None
        with pytest.raises(SystemExit, match="stopped after SIGTERM"), preemption.immediate():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            raise AssertionError("not stopped")
    finally:
        preemption.restore()


def test_a_refused_start_removes_only_a_folder_hydra_just_made(tmp_path):
    from radam_repro.__main__ import remove_unstarted

    runs = tmp_path / "runs"
    fresh, earlier = runs / "adhoc" / "task=nmt", runs / "other" / "task=nmt"
    for folder in (fresh, earlier):
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("{}")
        (folder / "__main__.log").write_text("")
    (earlier / "summary.json").write_text("{}")
    remove_unstarted(fresh, runs)
    remove_unstarted(earlier, runs)
    assert not (runs / "adhoc").exists() and runs.is_dir()  # the empty group folder goes too, run_root stays
    assert (earlier / "summary.json").is_file() and (earlier / ".hydra").is_dir()  # an earlier run is not touched
