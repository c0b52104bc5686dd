"""``python -m radam_repro.report.archive <sweep folder> <dest>``: a sweep's run folders, small enough to commit.

Each run folder under the sweep is copied to the same relative path under ``dest`` with what the report reads:
``config.yaml``, ``meta.json``, ``summary.json`` and ``metrics.jsonl`` gzip-compressed (``metrics.jsonl.gz``, no
time stamp in its header, so an unchanged run archives to the same bytes); checkpoints, histograms, hypotheses and
logs stay behind. The sweep's ``multirun.yaml`` (the experiment's solved criterion) comes along. The report reads
an archive as it reads the runs themselves::

    python -m radam_repro.report.archive runs/warmup_depth results/warmup_depth/runs
    python -m radam_repro.report results/warmup_depth/runs --out results/warmup_depth

Only runs that have ended (completed, diverged, failed) are archived: a live or interrupted run is half a result,
and it resumes from its own checkpoints. ``--restore`` goes the other way: it puts an archive's runs back into a
sweep folder where none of them is, so that relaunching the sweep skips the cells they hold (a run whose summary
says completed or diverged has nothing left to do) and trains only the rest. That is how a study longer than one
machine's lease is finished over several: archive and commit what has ended, restore it on the next machine::

    python -m radam_repro.report.archive --restore results/multi30k_ablation/runs runs/multi30k_ablation
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

from radam_repro.report.runs import load_runs
from radam_repro.run_folder import CONFIG_FILE, ENDED, META_FILE, METRICS_FILE, SUMMARY_FILE

KEPT = (CONFIG_FILE, META_FILE, SUMMARY_FILE)
SWEEP_FILES = ("multirun.yaml",)


def archive(sweep: Path, dest: Path) -> list[Path]:
    """Copy every ended run folder under ``sweep`` into ``dest`` (see the module); return the archived run folders."""
    archived = []
    for run in ended_runs(sweep):
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


def ended_runs(sweep: Path) -> list[Path]:
    """The run folders under ``sweep`` whose run has ended."""
    return [run.path for run in load_runs([sweep]) if run.status in ENDED]


def restore(source: Path, sweep: Path) -> list[Path]:
    """Put each ended run of the archive ``source`` back under ``sweep`` where its folder does not exist yet
    (``metrics.jsonl`` unpacked), and the sweep's files where it has none; return the restored run folders. A folder
    that exists is left as it is."""
    restored = []
    for run in ended_runs(source):
        target = sweep / run.relative_to(source)
        if target.exists():
            continue
        partial = target.with_name(f".{target.name}.restoring")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in KEPT:
            if (run / name).is_file():
                shutil.copyfile(run / name, partial / name)
        if (run / f"{METRICS_FILE}.gz").is_file():
            with gzip.open(run / f"{METRICS_FILE}.gz", "rb") as src, (partial / METRICS_FILE).open("wb") as out:
                shutil.copyfileobj(src, out)
        partial.rename(target)  # whole or not at all: a half-copied folder would look like a run to resume
        restored.append(target)
    for name in SWEEP_FILES:  # the experiment's solved criterion, until a relaunch writes its own
        if (source / name).is_file() and not (sweep / name).exists():
            shutil.copyfile(source / name, sweep / name)
    return restored


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m radam_repro.report.archive", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep folder (runs/<group>) or any folder of run folders")
    parser.add_argument("dest", type=Path, help="where the archive goes, e.g. results/<study>/runs")
    parser.add_argument(
        "--restore",
        action="store_true",
        help="the other way: put the ended runs of the archive SWEEP back into the sweep folder DEST",
    )
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        parser.error(f"no such folder: {args.sweep}")
    if args.restore:
        restored = restore(args.sweep, args.dest)
        print(f"[archive] restored {len(restored)} ended runs from {args.sweep} into {args.dest}")
        return
    runs = archive(args.sweep, args.dest)
    if not runs:
        parser.error(f"no ended run folders under {args.sweep}")
    size = sum(f.stat().st_size for f in args.dest.rglob("*") if f.is_file())
    print(f"[archive] {len(runs)} runs from {args.sweep} into {args.dest} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
