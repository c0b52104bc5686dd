"""The dashboard as a person sees it: headless Chromium renders a page of a running dashboard.

``python -m radam_repro.dashboard.browser runs/demo --out results/demo_ablation/dashboard.png`` starts
the dashboard on a free port, screenshots the scalars page (losses, lr and r_t of every cell) and stops
it; the browser test in tests/test_dashboard.py goes through the same :func:`serve` and :func:`capture`.
Needs Debian's ``chromium`` (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from radam_repro.report.runs import find_run_dirs

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# unsmoothed, filtered to the curves that tell the warmup variants apart (train/valid loss, lr, r_t): the legacy
# Scalars page draws reliably in headless Chromium (the screenshot); the Time series page keeps its run table
# and card titles in the light DOM, which --dump-dom shows (the legacy page's live in shadow roots)
TAGS = "%5E(train%7Cvalid)%2F(loss%7Clr%7Cmultiplier)%24"
SCALARS_PAGE = f"#scalars&tagFilter={TAGS}&_smoothingWeight=0"
TIMESERIES_PAGE = f"?tagFilter={TAGS}&smoothing=0#timeseries"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, body: dict | None = None) -> object:
    """GET ``url`` (or POST ``body`` as JSON) and parse the answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextmanager
def serve(
    folders: list[Path], port: int, cache: Path, runs: int = 1, interval: float = 1.0, timeout: float = 120.0
) -> Iterator[str]:
    """``python -m radam_repro.dashboard`` in a subprocess, yielded once it serves the scalars of ``runs`` runs.

    Always stopped. TensorBoard lists a run before it has read the run's events, so a page opened on the run list
    alone can render without a single card (seen on a loaded CI machine); waiting for the scalar tags closes that.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "radam_repro.dashboard",
        *map(str, folders),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--interval",
        str(interval),
        "--cache",
        str(cache),
    ]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                if len(get_json(f"{url}/data/runs")) >= runs and served_scalars(url) >= runs:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                raise RuntimeError(
                    f"the dashboard did not serve {runs} runs within {timeout:.0f} s "
                    f"(exit code {proc.poll()}):\n{log.read().decode()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the converter closes its files
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def served_scalars(url: str) -> int:
    """How many runs the dashboard serves scalar tags for."""
    return sum(bool(tags) for tags in get_json(f"{url}/data/plugin/scalars/tags").values())


def browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        raise FileNotFoundError(
            "no headless browser found (tried chromium, chromium-browser, google-chrome); "
            "install Debian's with `apt-get install -y chromium`"
        )
    return found


def capture(
    url: str,
    png: Path,
    size: tuple[int, int] = (1600, 1000),
    budget_ms: int = 30000,
    expect: tuple[str, ...] = (),
    attempts: int = 3,
) -> str:
    """Render ``url`` in headless Chromium for ``budget_ms`` of virtual time: save a screenshot, return the DOM.

    With ``expect``, a page whose DOM lacks one of those strings is rendered again with twice the budget, up to
    ``attempts`` times (the page fetches its data after it loads; a busy machine answers late), and the last DOM is
    returned either way: the caller decides what a missing string means.
    """
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        dom = _render(url, png, size, budget_ms * 2**attempt)
        if all(text in dom for text in expect):
            break
    return dom


def _render(url: str, png: Path, size: tuple[int, int], budget_ms: int) -> str:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [
                browser(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--mute-audio",
                f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}",
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={png}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120 + budget_ms / 1000,
        )
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({proc.returncode}) on {url}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m radam_repro.dashboard.browser", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("folders", nargs="+", type=Path, help="sweep or run folders")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument(
        "--page", default=SCALARS_PAGE, help="the part of the URL after '/' (default: the scalars page)"
    )
    args = parser.parse_args(argv)
    runs = len(find_run_dirs(args.folders))
    with tempfile.TemporaryDirectory() as cache, serve(args.folders, free_port(), Path(cache), runs=runs) as url:
        capture(f"{url}/{args.page}", args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
