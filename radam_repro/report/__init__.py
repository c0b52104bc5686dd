"""Tables and figures from run folders: ``python -m radam_repro.report <sweep or run folders...>``.

``runs`` reads folders (the run-folder contract: :mod:`radam_repro.run_folder`), ``aggregate`` groups them over seeds, ``tables``
writes Markdown/CSV beside the paper's numbers, ``figures`` writes the PNGs.
"""

from radam_repro.report.aggregate import Aggregate, Group, Stat, aggregate
from radam_repro.report.runs import Run, load_run, load_runs

__all__ = ["Aggregate", "Group", "Run", "Stat", "aggregate", "load_run", "load_runs"]
