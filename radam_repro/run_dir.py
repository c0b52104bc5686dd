"""Training's writer of the run folder (its layout, status names and JSON codec: :mod:`radam_repro.run_folder`).

Every file is written atomically (a temporary name in the same folder, then a rename) with the user's
umask, so a killed run never leaves a half-written JSON or checkpoint; temporary files a killed run left
behind are removed when the next run takes the folder. metrics.jsonl is append-only; a resumed
run cuts it back to its length at the checkpoint. Checkpoints hold only tensors and plain containers and
load with ``torch.load(weights_only=True)`` after their CRC-32 checksums (which torch.save writes and torch.load
never checks) are verified; each ``step_*.pt`` is a file of its own, so a damaged ``latest.pt`` (truncated, or
a flipped bit) falls back to the newest good one. A file that cannot be read as what it should be raises
:class:`~radam_repro.errors.CorruptFile`, naming it.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from radam_repro.errors import CorruptFile, kind_of, zip_damage
from radam_repro.folder_lock import LEASE_S, FolderLock, RunFolderInUse
from radam_repro.run_folder import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    HISTOGRAM_DIR,
    LATEST_CHECKPOINT,
    LOCK_FILE,
    METRICS_FILE,
    PREVIOUS_PREFIX,
    STEP_PREFIX,
    SUMMARY_FILE,
    parse_strict_json,
    step_file,
    step_of,
    strict_json,
)

__all__ = ["CHECKPOINT_KEYS", "RunDir", "RunFolderInUse", "atomic_write"]
# What a checkpoint holds (train.Loop.save): a loadable file without one of them is damaged.
CHECKPOINT_KEYS = ("step", "best", "wall_s", "metrics_bytes", "model", "optimizer", "scheduler", "scaler", "ranks")


def atomic_write(path: Path, data: bytes | str | Callable[[Any], None]) -> None:
    """Write ``data`` (or let ``data(file)`` write) to ``path`` through a temporary file and a rename.

    The temporary file is created with mode 0o666 minus the umask, and closed and removed if the write
    fails, so that a full disk gets its space back at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _Writes:
    """The file torch.save writes to, keeping the OSError of a failed write (torch reports it as "unexpected pos")."""

    def __init__(self, file: Any) -> None:
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def _save(state: dict[str, Any], file: Any) -> None:
    """``torch.save`` that raises the underlying OSError (e.g. ENOSPC: a full disk) when a write failed."""
    sink = _Writes(file)
    try:
        torch.save(state, sink)
    except RuntimeError as e:
        if sink.error is not None:
            raise sink.error from e
        raise


class RunDir:
    """One run's folder. ``with run.lock():`` guarantees a single writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.path / CHECKPOINT_DIR
        self.histograms = self.path / HISTOGRAM_DIR
        self.metrics_path = self.path / METRICS_FILE

    # -- ownership -------------------------------------------------------------------------
    def lock(self, lease_s: float = LEASE_S) -> FolderLock:
        """Own the folder for the duration; a live owner makes this raise :class:`RunFolderInUse`."""
        return FolderLock(self.path / LOCK_FILE, lease_s)

    def remove_orphans(self) -> None:
        """Temporary files left by a killed writer (call while holding the lock)."""
        for folder in (self.path, self.checkpoints, self.histograms):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    def move_aside(self) -> Path | None:
        """Move an earlier run's files into ``previous-<time>/`` (Hydra's .hydra/ and *.log of this launch stay)."""
        entries = [
            p for p in self.path.iterdir() if not (p.name.startswith((".", PREVIOUS_PREFIX)) or p.suffix == ".log")
        ]
        if not entries:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = self.path / f"{PREVIOUS_PREFIX}{stamp}"
        for n in range(1, 1000):
            if not dest.exists():
                break
            dest = self.path / f"{PREVIOUS_PREFIX}{stamp}-{n}"
        dest.mkdir()
        for entry in entries:
            entry.rename(dest / entry.name)
        return dest

    # -- JSON / YAML ----------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, strict_json(obj, indent=2, sort_keys=True) + "\n")

    def read_json(self, name: str) -> Any | None:
        path = self.path / name
        if not path.exists():
            return None
        try:
            return parse_strict_json(path.read_bytes())
        except ValueError as e:  # not JSON, or not text at all (UnicodeDecodeError)
            raise CorruptFile(path, f"{path} is corrupted ({e}); delete it to start this run afresh") from None

    def write_config(self, cfg: DictConfig) -> None:
        atomic_write(self.path / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))

    def write_summary(self, **summary: Any) -> None:
        self.write_json(SUMMARY_FILE, summary)

    def read_summary(self) -> dict[str, Any] | None:
        summary, path = self.read_json(SUMMARY_FILE), self.path / SUMMARY_FILE
        if path.exists() and not isinstance(summary, dict):
            raise CorruptFile(path, f"{path} holds {kind_of(summary)}, not an object; delete it to start afresh")
        return summary

    # -- metrics ----------------------------------------------------------------------------
    def append_metrics(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.metrics_path.open("a") as f:
                f.write("".join(strict_json(r, sort_keys=True) + "\n" for r in rows))
                f.flush()

    def metrics_size(self) -> int:
        """metrics.jsonl's length in bytes: a checkpoint records it, a resumed run cuts the file back to it."""
        return self.metrics_path.stat().st_size if self.metrics_path.exists() else 0

    def truncate_metrics(self, size: int) -> None:
        """Drop what was logged after the checkpoint (the resumed run logs it again), torn last line included."""
        if self.metrics_size() > size:
            os.truncate(self.metrics_path, size)

    def write_histogram(self, step: int, record: dict[str, Any]) -> None:
        atomic_write(self.histograms / step_file(step, ".json"), strict_json(record) + "\n")

    # -- checkpoints ------------------------------------------------------------------------
    def step_checkpoints(self) -> list[Path]:
        """The kept ``step_*.pt`` files, oldest first."""
        return sorted(self.checkpoints.glob(f"{STEP_PREFIX}*.pt"), key=step_of)

    def save_checkpoint(self, state: dict[str, Any], step: int, keep: int) -> None:
        """Write ``latest.pt``; keep the last ``keep`` as independent copies ``step_XXXXXXX.pt``."""
        latest = self.checkpoints / LATEST_CHECKPOINT
        atomic_write(latest, lambda f: _save(state, f))
        if keep > 0:
            with latest.open("rb") as src:
                atomic_write(self.checkpoints / step_file(step, ".pt"), lambda f: shutil.copyfileobj(src, f, 1 << 22))
            for old in self.step_checkpoints()[:-keep]:
                old.unlink()

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
        """The newest loadable checkpoint and its path, or None when there is none.

        latest.pt first, then ``step_*.pt`` newest first; a file that fails its CRC-32 checksums, does not load with
        ``weights_only=True`` or lacks one of :data:`CHECKPOINT_KEYS` is named and skipped.
        """
        candidates = [self.checkpoints / LATEST_CHECKPOINT, *reversed(self.step_checkpoints())]
        errors = []
        for path in filter(Path.exists, candidates):
            try:
                if (damage := zip_damage(path)) is not None:
                    raise ValueError(f"{damage}: the file is damaged")
                state = torch.load(path, map_location=map_location, weights_only=True)
                if not isinstance(state, dict) or (missing := [k for k in CHECKPOINT_KEYS if k not in state]):
                    raise KeyError(f"not a checkpoint: no {', '.join(missing) if isinstance(state, dict) else 'dict'}")
            except Exception as e:  # noqa: BLE001 - truncated, damaged, or Python objects weights_only refuses
                errors.append(f"{path}: {type(e).__name__}: {str(e).strip()[:200]}".splitlines()[0])
                print(f"[radam_repro] skipping unloadable checkpoint {errors[-1]}", flush=True)
                continue
            return state, path
        if errors:
            raise CorruptFile(
                self.checkpoints,
                f"no checkpoint in {self.checkpoints} can be loaded safely (torch.load weights_only=True): "
                f"{'; '.join(errors)}. They are damaged or hold Python objects (a file from elsewhere?). Delete "
                "checkpoints/ to restart this run, or start afresh with trainer.resume=false",
            )
        return None
