"""``python -m radam_repro.report.archive <sweep folder> <dest>``: a sweep's run folders, small enough to commit.

Each run folder under the sweep is copied to the same relative path under ``dest`` with what the report reads:
``config.yaml``, ``meta.json``, ``summary.json`` and ``metrics.jsonl`` gzip-compressed (``metrics.jsonl.gz``, no
time stamp in its header, so an unchanged run archives to the same bytes); checkpoints, histograms, hypotheses and
logs stay behind. The sweep's ``multirun.yaml`` (the experiment's solved criterion) comes along. The report reads
an archive as it reads the runs themselves::

    python -m radam_repro.report.archive runs/warmup_depth results/warmup_depth/runs
    python -m radam_repro.report results/warmup_depth/runs --out results/warmup_depth
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

from radam_repro.report.runs import find_run_dirs
from radam_repro.run_folder import CONFIG_FILE, META_FILE, METRICS_FILE, SUMMARY_FILE

KEPT = (CONFIG_FILE, META_FILE, SUMMARY_FILE)
SWEEP_FILES = ("multirun.yaml",)


def archive(sweep: Path, dest: Path) -> list[Path]:
    """Copy every run folder under ``sweep`` into ``dest`` (see the module); return the archived run folders."""
    archived = []
    for run in find_run_dirs([sweep]):
        target = dest / run.relative_to(sweep)
        target.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (run / name).is_file():
                shutil.copyfile(run / name, target / name)
        if (run / METRICS_FILE).is_file():
            with (run / METRICS_FILE).open("rb") as src, (target / f"{METRICS_FILE}.gz").open("wb") as raw:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
                    shutil.copyfileobj(src, out)
        archived.append(target)
    for name in SWEEP_FILES:
        if (sweep / name).is_file():
            shutil.copyfile(sweep / name, dest / name)
    return archived


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m radam_repro.report.archive", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep folder (runs/<group>) or any folder of run folders")
    parser.add_argument("dest", type=Path, help="where the archive goes, e.g. results/<study>/runs")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        parser.error(f"no such folder: {args.sweep}")
    runs = archive(args.sweep, args.dest)
    if not runs:
        parser.error(f"no run folders under {args.sweep}")
    size = sum(f.stat().st_size for f in args.dest.rglob("*") if f.is_file())
    print(f"[archive] {len(runs)} runs from {args.sweep} into {args.dest} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
