"""``python -m radam_repro.report <sweep or run folders...> [--out results/<name>]``.

Reads run folders only (never W&B), prints the grouping keys and the run counts, and writes
``report.md``, ``summary.csv``, ``runs.csv`` and ``figures/*.png`` into ``--out``; with a solved criterion also
the claims' verdicts (``claims.md``, ``claims.csv``) and the early signals ranked by how well they predict failure
(``early_signals.md``, ``early_signals.csv``, ``figures/early_signals.png``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

from radam_repro.report.aggregate import IGNORED_KEYS, Aggregate, aggregate
from radam_repro.report.claims import CLAIMS_YAML, Claim, evaluate_claims, load_claims, write_claims
from radam_repro.report.figures import write_figures
from radam_repro.report.runs import Run, load_runs
from radam_repro.report.signals import rank_signals, signals_figure, write_signals
from radam_repro.report.tables import PAPER_YAML, Solved, load_paper, write_tables
from radam_repro.run_folder import CONFIG_FILE, SUMMARY_FILE, Status


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m radam_repro.report", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders or folders to search for runs")
    parser.add_argument("--out", type=Path, help="output folder (default: results/<name of the first folder>)")
    parser.add_argument("--paper", type=Path, default=PAPER_YAML, help="the paper's numbers (default: %(default)s)")
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="another config key (or prefix) to leave out of the grouping; repeatable",
    )
    parser.add_argument("--claims", type=Path, default=CLAIMS_YAML, help="claims to evaluate (default: %(default)s)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument(
        "--solved",
        type=_solved,
        metavar="METRIC<VALUE",
        help="count runs whose final metric passes this test, e.g. 'valid/loss<0.1': a solved "
        "column per group and, over an lr x horizon grid, heatmaps of the solved fraction",
    )
    parser.add_argument(
        "--cells",
        type=int,
        metavar="N",
        help="how many cells the sweep has: a report from fewer ended runs says that it is partial",
    )
    args = parser.parse_args(argv)
    out = args.out or Path("results") / args.folders[0].resolve().name

    args.solved = args.solved or _experiment_solved(args.folders)
    try:
        claims, claims_solved = load_claims(args.claims)
    except (OSError, ValueError) as e:
        parser.error(str(e))
    runs = load_runs(args.folders)
    if not runs:
        parser.error(f"no run folders (with {CONFIG_FILE} or {SUMMARY_FILE}) under {', '.join(map(str, args.folders))}")
    agg = aggregate(runs, ignore=tuple(args.ignore))
    paper = load_paper(args.paper) if args.paper.is_file() else []
    if not paper:
        print(f"[report] no paper numbers at {args.paper}; the tables will have no paper column")
    print(f"[report] {len(runs)} runs in {len(agg.groups)} groups; grouping keys: {', '.join(agg.keys)}")
    print(
        f"[report] ignored when grouping: {', '.join(sorted(IGNORED_KEYS | set(args.ignore)))}, "
        "logger.*, hydra.*, *_dir/*_path/*_root/*_file"
    )
    for run in [r for r in runs if r.status != Status.COMPLETED or r.problems]:
        print(f"[report] {run.status:<10} {run.path}" + (f"  ({'; '.join(run.problems)})" if run.problems else ""))

    figures = [] if args.no_figures else write_figures(agg, out / "figures", solved=args.solved)
    figures += _claims_and_signals(
        runs, agg, claims, args.solved or claims_solved, args.solved, out, figures=not args.no_figures
    )
    command = "python -m radam_repro.report " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    report = write_tables(agg, paper, out, command=command, figures=figures, solved=args.solved, cells=args.cells)
    print(f"[report] wrote {report}, {out / 'summary.csv'}, {out / 'runs.csv'} and {len(figures)} figures")
    return out


def _claims_and_signals(
    runs: list[Run],
    agg: Aggregate,
    claims: list[Claim],
    solved: Solved | None,
    runs_solved: Solved | None,
    out: Path,
    figures: bool,
) -> list[Path]:
    """Write the claims' verdicts (``solved``: the criterion given, the experiment's or the claims file's) and, with
    a criterion given or the experiment's (``runs_solved``; the claims file's is for its own claims' task), the
    early-signal ranking; return its figure."""
    verdicts = evaluate_claims(claims, agg, solved)
    written = write_claims(verdicts, out, solved)
    print(f"[report] claims (solved: {solved or 'no criterion: the predictions that need one are not measured'}):")
    for v in verdicts:
        print(f"[report]   {v.verdict:<16} {v.claim.id} ({v.claim.cite()})")
    figure = None
    if runs_solved is None:
        print("[report] no solved criterion (--solved or the experiment's): no early-signal ranking")
    else:
        ranked = rank_signals(runs, runs_solved)
        written += write_signals(ranked, out, runs_solved)
        figure = signals_figure(ranked, out / "figures" / "early_signals.png") if figures else None
    print(f"[report] wrote {', '.join(str(p) for p in written)}")
    return [figure] if figure else []


def _experiment_solved(folders: list[Path]) -> Solved | None:
    """The ``solved`` criterion an experiment gave its SweepReport callback, read from a sweep's multirun.yaml."""
    for folder in folders:
        path = folder / "multirun.yaml"
        if path.is_file():
            callbacks = ((yaml.safe_load(path.read_text()) or {}).get("hydra") or {}).get("callbacks") or {}
            text = (callbacks.get("sweep_report") or {}).get("solved")
            if text:
                print(f"[report] solved criterion from {path}: {text}")
                return Solved.parse(text)
    return None


def _solved(text: str) -> Solved:
    try:
        return Solved.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


if __name__ == "__main__":
    main()
