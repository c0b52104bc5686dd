"""How long the report takes to read and aggregate many run folders (target: 1,000 folders < 10 s).

Builds synthetic run folders (the run-folder contract, radam_repro/run_folder.py: config.yaml, meta.json, metrics.jsonl,
summary.json) in a temporary folder, then times, in the same process:

* reference: reading every file and parsing it (json.loads of every metrics line and JSON file,
  YAML for config.yaml): the floor any reader pays;
* report: ``load_runs`` + ``aggregate`` + ``write_tables`` (no figures), as ``python -m
  radam_repro.report --no-figures`` runs them.

    python benchmarks/report_aggregate.py [--runs 1000] [--rows 300]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import yaml

from radam_repro.report.aggregate import aggregate
from radam_repro.report.runs import find_run_dirs, load_runs
from radam_repro.report.tables import load_paper, write_tables
from radam_repro.run_folder import CONFIG_FILE, META_FILE, METRICS_FILE, SUMMARY_FILE, Status

VARIANTS = ("adam", "adam_warmup", "adam_2k", "adam_eps", "radam", "sgd")
LRS = (0.1, 0.03, 0.01, 0.003)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def config(variant: str, lr: float, seed: int) -> dict:
    return {
        "optimizer": {
            "name": variant,
            "algorithm": variant,
            "lr": lr,
            "betas": [0.9, 0.999],
            "eps": 1e-4 if variant == "adam_eps" else 1e-8,
            "weight_decay": 1e-4,
            "decoupled_weight_decay": True,
            "eps_placement": "sqrt_v",
            "threshold": 5.0,
            "degenerated_to_sgd": True,
            "freeze_steps": 2000 if variant == "adam_2k" else 0,
            "momentum": 0.9,
            "nesterov": False,
            "warmup": {"kind": "linear" if variant == "adam_warmup" else "none", "steps": 500, "init_lr": 0.0},
        },
        "task": {
            "name": "cifar10",
            "data_dir": "/data/cifar10",
            "batch_size": 128,
            "epochs": 164,
            "decay_epochs": [81, 122],
            "decay_gamma": 0.1,
            "depth": 20,
            "augment": True,
        },
        "trainer": {
            "max_steps": 5000,
            "device": "cpu",
            "precision": "fp32",
            "compile": False,
            "eval_every": 500,
            "log_every": 20,
            "checkpoint_every": 1000,
            "keep_checkpoints": 1,
            "histograms": True,
            "threads": 1,
            "resume": True,
            "progress": False,
        },
        "logger": {"kind": "local", "mode": "offline", "project": "radam_repro", "entity": None, "tags": []},
        "seed": seed,
        "experiment": "bench",
        "data_root": "/data",
        "run_root": "runs",
    }


def write_synthetic_run(folder: Path, variant: str, lr: float, seed: int, rows: int, rng: random.Random) -> None:
    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(config(variant, lr, seed)))
    (folder / META_FILE).write_text(json.dumps({"seed": seed, "versions": {"torch": "2.x"}, "host": "bench"}))
    lines = []
    for i in range(1, rows + 1):
        step = 20 * i
        if i % 25 == 0:
            lines.append(
                {"step": step, "epoch": step / 391, "split": "valid", "loss": rng.random(), "acc": rng.random()}
            )
        else:
            lines.append(
                {
                    "step": step,
                    "epoch": step / 391,
                    "split": "train",
                    "loss": 2.3 * math.exp(-step / 2000),
                    "lr": lr,
                    "multiplier": 1.0,
                    "steps_per_s": 30.0,
                    "grad_norm": rng.random(),
                    "acc": rng.random(),
                }
            )
    (folder / METRICS_FILE).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
    acc = 0.9 + 0.01 * rng.random()
    status = Status.DIVERGED if rng.random() < 0.02 else Status.COMPLETED
    (folder / SUMMARY_FILE).write_text(
        json.dumps(
            {
                "status": status,
                "step": 20 * rows,
                "total_steps": 20 * rows,
                "max_steps": 20 * rows,
                "wall_s": 60.0,
                "error": None,
                "diverged_step": None,
                "final": {"valid/acc": acc, "test/acc": acc, "valid/loss": 0.3},
                "best": {"valid/acc": acc + 0.001, "test/acc": acc + 0.001, "valid/loss": 0.29},
            },
            indent=2,
            sort_keys=True,
        )
    )


def read_every_file(root: Path) -> int:
    """The reference: parse every file of every run once (no interpretation)."""
    parsed = 0
    for folder in find_run_dirs([root]):
        yaml.load((folder / CONFIG_FILE).read_bytes(), Loader=YAML_LOADER)
        for name in (META_FILE, SUMMARY_FILE):
            json.loads((folder / name).read_bytes())
        with (folder / METRICS_FILE).open("rb") as f:
            for line in f:
                json.loads(line)
                parsed += 1
    return parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=300, help="metrics.jsonl rows per run")
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sweep"
        started = time.perf_counter()
        for i in range(args.runs):
            variant, lr = VARIANTS[i % len(VARIANTS)], LRS[(i // len(VARIANTS)) % len(LRS)]
            write_synthetic_run(
                root / f"run{i:05d}", variant, lr, seed=i // (len(VARIANTS) * len(LRS)), rows=args.rows, rng=rng
            )
        print(f"wrote {args.runs} runs × {args.rows} rows in {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        lines = read_every_file(root)
        reference = time.perf_counter() - started

        started = time.perf_counter()
        runs = load_runs([root])
        agg = aggregate(runs)
        write_tables(agg, load_paper(), Path(tmp) / "report", command="benchmark", figures=[])
        report = time.perf_counter() - started

    print(f"reference (parse every file, {lines} metric lines): {reference:.2f} s")
    print(
        f"report (load + aggregate + tables, {len(agg.groups)} groups): {report:.2f} s "
        f"= {report / reference:.2f}× the reference; target < 10 s: {'met' if report < 10 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
