"""The run folder's lock: one owner (host + pid), a lease the owner keeps fresh, atomic hand-over.

``<run>/.lock`` holds ``{"host", "pid", "start", "token", "lease_s"}`` (``start``: the owner's start time,
``/proc/<pid>/stat`` field 22, which tells the owner from a later process that reuses its pid). It appears in one step with its content
(written to a private file first, then hard-linked to ``.lock``; the link fails when ``.lock`` exists),
so nobody ever reads an empty or half-written lock. While it runs, the owner touches the file every
``lease_s / 4`` seconds. On this host the owner's process decides: a lock whose pid is alive with the same
start time is never stale, whatever the lease (a paused owner keeps its folder), else it is stale. The lease
decides only for another host's owner: stale when last touched more than ``lease_s`` ago (a process that died
on another node: clusters share filesystems).
A stale lock is removed under a short-lived breaker file (``.lock.break``, created exclusively) after
checking that it still holds the same token, so two contenders never remove each other's fresh lock;
release removes the lock only while it holds the owner's own token.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from radam_repro.run_folder import LOCK_FILE

LEASE_S = 300.0  # default lease: a lock from another host untouched for this long belongs to a dead process
BREAKER_STALE_S = 10.0  # the breaker is held for microseconds; older means its holder died there


class RunFolderInUse(RuntimeError):
    pass


@dataclass
class Owner:
    """Who holds a lock, and for how long (seconds) the lock file has not been touched."""

    host: str
    pid: int
    token: str
    lease_s: float
    age_s: float
    start: int | None = None  # the process's start time on its host (None where /proc is not readable)

    def alive(self) -> bool:
        if self.host == socket.gethostname():
            return pid_alive(self.pid) and (self.start is None or process_start(self.pid) == self.start)
        return self.age_s <= self.lease_s

    def __str__(self) -> str:
        touched = f"lock touched {self.age_s:.0f} s ago, lease {self.lease_s:g} s"
        return f"process {self.pid} on {self.host or '?'} ({touched})"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks after boot (``/proc/<pid>/stat`` field 22), None if unreadable."""
    try:  # fields 3.. follow the command name's closing parenthesis
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def read_owner(lock: Path) -> Owner | None:
    """The lock's owner, or None when there is no lock. Unparseable content is an unknown owner, stale by age."""
    try:
        text, age = lock.read_text(), time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
        start = None if info.get("start") is None else int(info["start"])
        return Owner(str(info["host"]), int(info["pid"]), str(info["token"]), float(info["lease_s"]), age, start)
    except (ValueError, KeyError, TypeError):
        return Owner("", 0, text, LEASE_S, age)


class FolderLock:
    """``with FolderLock(folder / ".lock", lease_s):`` one owner at a time; see the module docstring."""

    def __init__(self, lock: Path, lease_s: float = LEASE_S) -> None:
        if not lease_s > 0:
            raise ValueError(f"trainer.lock_lease_s={lease_s} must be > 0 seconds")
        self.lock, self.lease_s = Path(lock), float(lease_s)
        self.breaker = self.lock.with_name(self.lock.name + ".break")
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def acquire(self) -> None:
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": process_start(os.getpid()),
            "token": self.token,
            "lease_s": self.lease_s,
        }
        mine = self.lock.with_name(f"{self.lock.name}.{self.token}")
        mine.write_text(json.dumps(me))
        try:
            for _ in range(1000):
                with suppress(FileExistsError):
                    os.link(mine, self.lock)
                    break
                owner = read_owner(self.lock)
                if owner is not None and owner.alive():
                    raise RunFolderInUse(
                        f"run folder {self.lock.parent} is in use by {owner}; two runs never share a folder. "
                        "Wait for it, or start this one elsewhere (e.g. another seed, or hydra.run.dir=...)."
                    )
                if owner is not None:
                    self._remove_stale(owner)
            else:
                raise RunFolderInUse(f"could not take the lock {self.lock} (contended); try again")
        finally:
            mine.unlink(missing_ok=True)
        self._refresher = threading.Thread(target=self._refresh, name="run-folder-lease", daemon=True)
        self._refresher.start()

    def release(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        with self._breaking():
            owner = read_owner(self.lock)
            if owner is not None and owner.token == self.token:
                self.lock.unlink()

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _remove_stale(self, owner: Owner) -> None:
        with self._breaking(wait=False) as held:
            current = read_owner(self.lock) if held else None
            if current is not None and current.token == owner.token and not current.alive():
                self.lock.unlink()

    @contextmanager
    def _breaking(self, wait: bool = True) -> Iterator[bool]:
        """Hold ``.lock.break`` (yields True), or yield False at once when another process holds it and not ``wait``."""
        deadline = time.time() + 30
        while True:
            try:
                os.close(os.open(self.breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                break
            except FileExistsError:
                with suppress(FileNotFoundError):
                    if time.time() - self.breaker.stat().st_mtime > BREAKER_STALE_S:
                        self.breaker.unlink()
                time.sleep(random.uniform(0.0005, 0.002))
                if not wait or time.time() > deadline:
                    yield False
                    return
        try:
            yield True
        finally:
            self.breaker.unlink(missing_ok=True)

    def _refresh(self) -> None:
        """Touch the lock every lease/4 while it is ours; say so once if another process took it."""
        while not self._stop.wait(self.lease_s / 4):
            owner = read_owner(self.lock)
            if owner is None or owner.token != self.token:
                warnings.warn(
                    f"lost the lock {self.lock} (now {owner}); another process may write this folder", stacklevel=1
                )
                return
            with suppress(FileNotFoundError):
                os.utime(self.lock)


def lock_state(folder: Path) -> Owner | None:
    """The live owner of ``folder``'s lock, or None when it has none or its owner is gone."""
    owner = read_owner(Path(folder) / LOCK_FILE)
    return owner if owner is not None and owner.alive() else None
