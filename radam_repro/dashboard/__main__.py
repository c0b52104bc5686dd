"""``python -m radam_repro.dashboard <sweep or run folders...> [--host 127.0.0.1] [--port 6006]``.

Converts the run folders into TensorBoard event files under the cache (``$RADAM_REPRO_CACHE`` or
~/.cache/radam_repro, ``tensorboard/<hash of the folders and port>``, rebuilt at each start), serves them with
TensorBoard and keeps converting every ``--interval`` seconds, so running sweeps update live. Runs
until interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from radam_repro.dashboard.convert import Converter, cache_root
from radam_repro.folder_lock import FolderLock, RunFolderInUse, read_owner
from radam_repro.report.runs import find_run_dirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radam_repro.dashboard", description=__doc__.split("\n\n")[1])
    parser.add_argument("folders", nargs="+", type=Path, help="sweep folders (runs/<group>) or run folders")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=6006)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between two conversion passes")
    parser.add_argument(
        "--cache", type=Path, default=None, help="cache folder (default $RADAM_REPRO_CACHE or ~/.cache/radam_repro)"
    )
    args = parser.parse_args(argv)

    from tensorboard import program  # after argparse: --help stays instant

    roots = [f.resolve() for f in args.folders]
    try:
        find_run_dirs(roots)  # a missing folder fails here, before the cache is touched
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    key = hashlib.sha1("\n".join(map(str, [*roots, args.port])).encode()).hexdigest()[:12]  # one per dashboard
    logdir = (args.cache or cache_root()) / "tensorboard" / key
    logdir.parent.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(logdir.with_name(f"{key}.lock"))  # the running dashboard's cache is left alone
    try:
        lock.acquire()
    except RunFolderInUse:
        owner = read_owner(lock.lock)
        print(f"error: a dashboard of these folders on port {args.port} is running ({owner}); open it", file=sys.stderr)
        return 2
    try:
        return _serve(args, roots, logdir, program)
    finally:
        lock.release()


def _serve(args: argparse.Namespace, roots: list[Path], logdir: Path, program: Any) -> int:
    """Rebuild the event files, serve them with TensorBoard and keep converting until Ctrl-C."""
    shutil.rmtree(logdir, ignore_errors=True)  # derived data: rebuilt from the run folders
    logdir.mkdir(parents=True)
    converter = Converter(roots, logdir)
    converter.update()

    board = program.TensorBoard()  # in this process; the Python event loader (no data-server subprocess)
    flags = {
        "logdir": logdir,
        "host": args.host,
        "port": args.port,
        "load_fast": "false",
        "reload_interval": max(1, round(args.interval)),
    }
    board.configure(argv=[None, *(f"--{k}={v}" for k, v in flags.items())])
    try:
        url = board.launch()
    except program.TensorBoardServerException as e:
        print(
            f"error: TensorBoard could not serve on {args.host}:{args.port} ({e.msg}); pick another port with --port",
            file=sys.stderr,
        )
        return 2
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    print(
        f"TensorBoard: {url}  ({len(converter.cells)} runs from {', '.join(map(str, roots))}; event files in {logdir})"
    )
    print(
        f"From your laptop: ssh -N -L {port}:localhost:{port} {getpass.getuser()}@{socket.gethostname()}  "
        f"then open http://localhost:{port}"
    )
    print("Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(args.interval)
            try:
                converter.update()
            except OSError as e:  # a folder moved or deleted while serving: say so, keep serving what was read
                print(f"warning: {e}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        converter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
