"""Step-time overhead of the full harness over a bare training loop, measured in the same run.

    python benchmarks/train_overhead.py [--task.data_dir ...] [--steps 200] [--batch 128]

Both run ResNet-20 on CIFAR-10 (the staged files by default) with RAdam on the same task
object. The harness runs twice (``short`` and ``short + steps`` updates, logging every 20 steps,
histograms on the paper's schedule, a checkpoint every 100 steps, no evaluation) and the
difference of the two wall times gives its per-step cost without start-up; the bare loop is
forward/backward/step only, measured before and after the harness (their mean is the reference, so
drift of the machine's speed cancels). Prints the ratio harness / bare (target <= 1.03).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from radam_repro import optim, tasks
from radam_repro.__main__ import register  # noqa: F401 - registers the config schema and resolvers
from radam_repro.run_folder import METRICS_FILE, parse_strict_json
from radam_repro.train import train

ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "radam_repro" / "configs"), version_base="1.3"):
        return compose("radam_repro", overrides=overrides)


def bare_step_time(cfg, steps: int, device: torch.device) -> float:
    torch.manual_seed(cfg.seed)
    task = tasks.build(cfg.task, seed=cfg.seed, device=device)
    model = task.model.train()
    opt = optim.build(cfg.optimizer, model.parameters())
    batches = task.train_batches(0)
    for _ in range(5):  # warm-up
        loss, _ = task.loss(model, next(batches))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    start = time.perf_counter()
    done = 0
    epoch = 0
    while done < steps:
        for batch in task.train_batches(epoch):
            loss, _ = task.loss(model, batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
        epoch += 1
    loss.item()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", default=str(ROOT / os.environ.get("RADAM_REPRO_DATA", "../shared/data") / "cifar10/partial")
    )
    parser.add_argument("--check-integrity", action="store_true")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--short", type=int, default=40)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    base = [
        "optimizer=radam",
        f"task.data_dir={args.data_dir}",
        f"task.check_integrity={args.check_integrity}",
        f"task.batch_size={args.batch}",
        "trainer.eval_every=1000000",
        "trainer.log_every=20",
        "trainer.checkpoint_every=100",
        "trainer.progress=false",
        "task.epochs=1000",
    ]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    walls = {}
    bare_before = bare_step_time(compose_cfg(base), args.steps, device)  # bare runs bracket the harness: drift cancels
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.short, args.short + args.steps):
            cfg = compose_cfg([*base, f"trainer.max_steps={n}"])
            summary = train(cfg, Path(tmp) / f"run{n}")
            # wall_s includes task build and the final evaluation; both cancel in the difference
            walls[n] = summary["wall_s"]
        harness = (walls[args.short + args.steps] - walls[args.short]) / args.steps
        metrics = Path(tmp) / f"run{args.short + args.steps}" / METRICS_FILE
        rows = [parse_strict_json(line) for line in metrics.open()]
    bare_after = bare_step_time(compose_cfg(base), args.steps, device)
    bare = (bare_before + bare_after) / 2
    print(f"device={device}, threads={torch.get_num_threads()}, ResNet-20 batch {args.batch}, RAdam")
    print(
        f"bare loop     {bare * 1e3:8.1f} ms/step  ({1 / bare:.2f} steps/s; before {bare_before * 1e3:.1f}, after {bare_after * 1e3:.1f})"
    )
    print(f"full harness  {harness * 1e3:8.1f} ms/step  ({1 / harness:.2f} steps/s; logged {len(rows)} metric rows)")
    print(f"ratio harness/bare = {harness / bare:.3f}  (target <= 1.03)")


if __name__ == "__main__":
    main()
