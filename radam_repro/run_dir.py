"""The run folder: the contract between training, sweeps and reports (its files are listed in README.md, "Runs, resume and sweeps").

::

    <run>/config.yaml     resolved config            <run>/meta.json     versions, git commit, seed, host
    <run>/metrics.jsonl   one JSON object per point  <run>/histograms/   log|g|, log|m|, log|v| histograms
    <run>/checkpoints/    latest.pt (+ step_*.pt)    <run>/summary.json  status, final/best metrics
    <run>/.lock           pid@host of the process that owns the folder while it runs

Every file is written atomically (write to a temporary name, then rename), so a killed run never
leaves a half-written JSON or checkpoint behind; metrics.jsonl is append-only and is cut back to
the resumed checkpoint's step on resume.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolderInUse(RuntimeError):
    pass


class RunDir:
    """One run's folder. ``with run.lock():`` guarantees a single writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.path / "checkpoints"
        self.histograms = self.path / "histograms"
        self.metrics_path = self.path / "metrics.jsonl"

    # -- ownership -------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator["RunDir"]:
        """Own the folder for the duration; a live owner makes this raise :class:`RunFolderInUse`."""
        lock = self.path / ".lock"
        me = f"{os.getpid()}@{socket.gethostname()}"
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, me.encode())
                os.close(fd)
                break
            except FileExistsError:
                owner = lock.read_text().strip() if lock.exists() else ""
                pid, _, host = owner.partition("@")
                if host == socket.gethostname() and pid.isdigit() and _pid_alive(int(pid)):
                    raise RunFolderInUse(
                        f"run folder {self.path} is in use by process {owner}; two runs never share a folder. "
                        "Wait for it, or start this one elsewhere (e.g. another seed, or hydra.run.dir=...)."
                    ) from None
                lock.unlink(missing_ok=True)  # stale: its owner died (killed, preempted, other host's job ended)
        else:
            raise RunFolderInUse(f"could not take the lock {lock}")
        try:
            yield self
        finally:
            lock.unlink(missing_ok=True)

    # -- JSON / YAML ----------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def read_json(self, name: str) -> Any | None:
        path = self.path / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is corrupted ({e}); delete it to start this run afresh") from e

    def write_config(self, cfg: DictConfig) -> None:
        atomic_write(self.path / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    def write_summary(self, **summary: Any) -> None:
        self.write_json("summary.json", summary)

    def read_summary(self) -> dict[str, Any] | None:
        return self.read_json("summary.json")

    # -- metrics ----------------------------------------------------------------------------
    def append_metrics(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.metrics_path.open("a") as f:
                f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
                f.flush()

    def truncate_metrics(self, step: int) -> None:
        """Drop points logged after ``step`` (they are replayed by the resumed run) and torn lines."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= step:
                kept.append(line + "\n")
        atomic_write(self.metrics_path, "".join(kept))

    def write_histogram(self, step: int, record: dict[str, Any]) -> None:
        atomic_write(self.histograms / f"step_{step:07d}.json", json.dumps(record) + "\n")

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], step: int, keep: int) -> None:
        """Write ``latest.pt`` atomically; keep the last ``keep`` as ``step_XXXXXXX.pt`` (hard links)."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.checkpoints, prefix=".latest.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.checkpoints / "latest.pt")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if keep > 0:
            kept = self.checkpoints / f"step_{step:07d}.pt"
            kept.unlink(missing_ok=True)
            os.link(self.checkpoints / "latest.pt", kept)
            for old in sorted(self.checkpoints.glob("step_*.pt"))[:-keep]:
                old.unlink()

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest readable checkpoint, or None. A corrupted latest.pt falls back to step_*.pt."""
        candidates = [self.checkpoints / "latest.pt", *sorted(self.checkpoints.glob("step_*.pt"), reverse=True)]
        errors = []
        for path in candidates:
            if not path.exists():
                continue
            try:
                return torch.load(path, map_location=map_location, weights_only=False)
            except Exception as e:  # noqa: BLE001 - any unreadable file is reported below
                errors.append(f"{path.name}: {type(e).__name__}: {e}")
        if errors:
            raise ValueError(
                f"every checkpoint in {self.checkpoints} is unreadable ({'; '.join(errors)}); "
                "delete the folder's checkpoints/ to restart the run, or set trainer.resume=false"
            )
        return None
