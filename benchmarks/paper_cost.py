"""Expected GPU-hours of the paper-scale experiments (experiment=paper_nmt, paper_cifar10, paper_lm1b).

    python -m benchmarks.paper_cost              # the table (FLOPs per update x updates x runs / (peak x MFU))
    python -m benchmarks.paper_cost --measure    # also time 2 full-size updates of NMT and CIFAR on 1 CPU thread

Runs and updates come from the experiments themselves (every cell of the sweep composed); FLOPs per update from
benchmarks/gpu_check.py's Transformer formula, torch's FlopCounterMode (ResNet-20) and a formula for the LSTM with
its adaptive softmax. The GPU's share of its dense bf16 peak (MFU) is an assumption per task, stated in MFU;
benchmarks/gpu_check.py measures it on a lent GPU (its nmt, cifar, lm and paper_nmt sections).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.gpu_check import IWSLT_VOCAB, LM_VOCAB, iwslt_architecture, iwslt_like_batches, transformer_train_flops
from radam_repro.__main__ import register  # noqa: F401 - registers the config schema and resolvers
from radam_repro.config import without_foreign_optimizer_schemas
from radam_repro.models.resnet_cifar import CifarResNet
from radam_repro.models.transformer import Transformer
from radam_repro.tasks.translation import label_smoothed_nll_loss

CONFIGS = Path(__file__).resolve().parents[1] / "radam_repro" / "configs"
PEAK = 989e12  # H100 SXM / H200 dense bf16 FLOP/s (gpu_check.PEAK_BF16_FLOPS)
MFU = {  # assumed model FLOPs utilisation on one H100/H200, bf16, eager
    "nmt": (0.025, "eager, ~1500 ops a step at ~20 us each (~30 ms) against ~2 ms of matmuls: ~34 updates/s"),
    "cifar10": (0.005, "ResNet-20 at batch 128: ~300 ops a step at ~20 us each, launch bound: ~20k img/s"),
    "lm1b": (0.20, "LSTM 2048 at batch 128 (cuDNN, 128-row recurrent matmuls) and the softmax's 2560-row matmuls"),
}
CIFAR_TRAIN_IMAGES = 50_000
LM1B_TRAIN_TOKENS = 798_949_912  # 768,648,884 words + 30,301,028 sentence ends (Chelba et al. 2013)


def sweep(experiment: str) -> list[list[str]]:
    """Every cell of ``experiment=<name>``'s sweep, as its list of overrides (Hydra's basic sweeper's expansion)."""
    with without_foreign_optimizer_schemas(), initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("radam_repro", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONFIGS)))
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(params)
    return [cell for batch in BasicSweeper.split_arguments(overrides, None) for cell in batch]


def cell_configs(experiment: str) -> list:
    """The composed config of every cell of ``experiment``'s sweep."""
    cells = sweep(experiment)
    with without_foreign_optimizer_schemas(), initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return [compose("radam_repro", overrides=[f"experiment={experiment}", *cell]) for cell in cells]


def nmt_flops() -> float:
    """Mean training FLOPs of an IWSLT-like batch of <= 4000 tokens on transformer_iwslt_de_en."""
    arch = iwslt_architecture(dry=False)
    batches = iwslt_like_batches(16, 4000, IWSLT_VOCAB, 175, "cpu")
    flops = [
        transformer_train_flops(arch, arch.tgt_vocab_size, *b["src_tokens"].shape, b["target"].shape[1])
        for b in batches
    ]
    return sum(flops) / len(flops)


def cifar_flops(batch: int = 128) -> float:
    """FlopCounterMode's count of one ResNet-20 forward + backward at ``batch`` images."""
    model, counter = CifarResNet(20), FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(torch.randn(batch, 3, 32, 32)), torch.randint(0, 10, (batch,))).backward()
    return float(counter.get_total_flops())


def lm_flops(cfg) -> float:
    """6 x (weights a token passes through) per token, x batch x BPTT: both LSTM layers, the adaptive softmax's
    head (shortlist + one logit per cluster) and each tail cluster (projection d -> d / div^i, then its words)
    weighted by its share of tokens under Zipf(1) over frequency ranks."""
    m = cfg.task.model
    h, cutoffs = m.hidden_size, [*m.cutoffs, LM_VOCAB]
    lstm = sum(4 * h * ((m.embedding_dim if layer == 0 else h) + h) for layer in range(m.num_layers))
    head = h * (cutoffs[0] + len(cutoffs) - 1)
    harmonic = math.log(LM_VOCAB) + 0.5772
    tails = 0.0
    for i, (lo, hi) in enumerate(zip(cutoffs, cutoffs[1:]), start=1):
        share, width = math.log(hi / lo) / harmonic, int(h // m.div_value**i)
        tails += share * (h * width + width * (hi - lo))
    return 6 * (lstm + head + tails) * cfg.task.batch_size * cfg.task.bptt


def flops_per_update(cfg) -> float:
    if cfg.task.name == "nmt":
        return nmt_flops()
    if cfg.task.name == "cifar10":
        return cifar_flops(cfg.task.batch_size)
    return lm_flops(cfg)


def updates(cfg) -> int:
    if cfg.task.name == "nmt":
        return cfg.task.max_update
    if cfg.task.name == "cifar10":
        return cfg.task.epochs * math.ceil(CIFAR_TRAIN_IMAGES / cfg.task.batch_size)
    return cfg.task.epochs * LM1B_TRAIN_TOKENS // (cfg.task.batch_size * cfg.task.bptt)


def estimate() -> list[dict]:
    """Per paper experiment: runs, updates, FLOPs per update, total FLOPs and GPU-hours at the assumed MFU."""
    rows = []
    for experiment in ("paper_nmt", "paper_cifar10", "paper_lm1b"):
        configs = cell_configs(experiment)
        task = configs[0].task.name
        per_update = flops_per_update(configs[0])
        total_updates = sum(updates(cfg) for cfg in configs)
        mfu = MFU[task][0]
        gpu_hours = per_update * total_updates / (PEAK * mfu) / 3600
        rows.append(
            dict(
                experiment=experiment,
                runs=len(configs),
                updates_per_run=total_updates // len(configs),
                flops_per_update=per_update,
                total_flops=per_update * total_updates,
                mfu=mfu,
                gpu_hours=gpu_hours,
                gpu_hours_per_run=gpu_hours / len(configs),
            )
        )
    return rows


def cpu_seconds_per_update(step, repeats: int = 2) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def measure_cpu() -> dict[str, float]:
    """Seconds per full-size update on one CPU thread: IWSLT Transformer at <= 4000 tokens, ResNet-20 at 128."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Transformer(iwslt_architecture(dry=False))
    batch = iwslt_like_batches(1, 4000, IWSLT_VOCAB, 175, "cpu")[0]

    def nmt_step():
        logits = model(batch["src_tokens"], batch["prev_output_tokens"])
        label_smoothed_nll_loss(logits, batch["target"], 0.1)[0].backward()

    resnet, images, labels = CifarResNet(20), torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    return {
        "nmt": cpu_seconds_per_update(nmt_step),
        "cifar10": cpu_seconds_per_update(lambda: F.cross_entropy(resnet(images), labels).backward()),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--measure", action="store_true", help="time 2 full-size updates of NMT and CIFAR on 1 CPU thread"
    )
    args = parser.parse_args(argv)
    rows = estimate()
    print(f"one H100/H200, dense bf16 peak {PEAK:.3g} FLOP/s; GPU-hours = FLOPs/update x updates x runs / (peak x MFU)")
    print("| experiment | runs | updates a run | FLOPs an update | total FLOPs | MFU (assumed) | GPU-hours | a run |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['experiment']} | {r['runs']} | {r['updates_per_run']:,} | {r['flops_per_update']:.3g} | "
            f"{r['total_flops']:.3g} | {r['mfu']:.1%} | {r['gpu_hours']:.1f} | {r['gpu_hours_per_run']:.2f} |"
        )
    for task, (mfu, why) in MFU.items():
        print(f"MFU {task} {mfu:.1%}: {why}")
    if args.measure:
        flops = {"nmt": rows[0]["flops_per_update"], "cifar10": rows[1]["flops_per_update"]}
        for task, seconds in measure_cpu().items():
            print(f"CPU, 1 thread, {task}: {seconds:.2f} s an update, {flops[task] / seconds / 1e9:.1f} GFLOP/s")
    return rows


if __name__ == "__main__":
    main()
