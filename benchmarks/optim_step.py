"""Optimizer step time of every variant against torch.optim.Adam (fused and foreach) and the memory bandwidth.

    python -m benchmarks.optim_step [--device cpu|cuda] [--threads 2] [--steps 20] [--repeats 7] [--sets ...]

Parameter sets: ResNet-20 (CIFAR) and the IWSLT'14 transformer_iwslt_de_en shapes (embed 512,
FFN 1024, 6+6 layers, separate 8848/6632-word embeddings and output projection). Gradients are
fixed random tensors, so only the optimizer's own work is timed (the warmup variants include their
LambdaLR step, as in training). Each repeat builds every optimizer afresh on shared parameters (one
optimizer state in memory at a time), steps it past RAdam's SGD phase, then times ``--steps`` steps;
the variants are interleaved round-robin and the median over repeats is reported.

Bandwidth: an Adam step moves 7 values per parameter (reads theta, g, m, v; writes theta, m, v); the
physical limit is an in-place ``a.add_(b)`` over one flat tensor of as many elements (3 values per
element), timed in the same repeats. Targets: every variant <= 1.10x torch's fused Adam, >= 80 % of add_.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from radam_repro.models.resnet_cifar import CifarResNet
from radam_repro.optim import Adam, Adam2k, RAdam, SimplifiedRAdam, lambda_lr
from radam_repro.optim.rectification import untuned_exponential_warmup
from radam_repro.optim.schedules import linear_warmup


def transformer_iwslt_shapes(src_vocab=8848, tgt_vocab=6632, d=512, ffn=1024, layers=6):
    attn = [(d, d), (d,)] * 4
    ffn_shapes = [(ffn, d), (ffn,), (d, ffn), (d,)]
    norm = [(d,), (d,)]
    encoder = (attn + ffn_shapes + norm * 2) * layers
    decoder = (attn * 2 + ffn_shapes + norm * 3) * layers
    return [(src_vocab, d), (tgt_vocab, d), *encoder, *decoder, (tgt_vocab, d)]


PARAMETER_SETS = {
    "resnet20": lambda: [p.shape for p in CifarResNet(20).parameters()],
    "transformer_iwslt": transformer_iwslt_shapes,
}


def with_schedule(opt, multiplier):
    """A step function that also steps a LambdaLR (Adam-warmup, the untuned warmups)."""
    scheduler = lambda_lr(opt, multiplier)

    def step():
        opt.step()
        scheduler.step()

    return step


VARIANTS = {
    "torch.Adam(fused)": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True).step,
    "torch.Adam(foreach)": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True).step,
    "adam": lambda ps: Adam(ps, lr=1e-3).step,
    "adam_eps": lambda ps: Adam(ps, lr=1e-3, eps=1e-4).step,
    "adam_warmup": lambda ps: with_schedule(Adam(ps, lr=1e-3), lambda k: linear_warmup(k, 4000)),
    "adam_untuned_exp": lambda ps: with_schedule(Adam(ps, lr=1e-3), lambda k: untuned_exponential_warmup(0.999, k + 1)),
    "adam_2k (after freeze)": lambda ps: Adam2k(ps, lr=1e-3, freeze_steps=0).step,
    "radam": lambda ps: RAdam(ps, lr=1e-3).step,
    "radam_simple": lambda ps: SimplifiedRAdam(ps, lr=1e-3).step,
    "adam (wd 1e-4)": lambda ps: Adam(ps, lr=1e-3, weight_decay=1e-4).step,
    "radam (wd 1e-4, L2)": lambda ps: RAdam(ps, lr=1e-3, weight_decay=1e-4, decoupled_weight_decay=False).step,
    "adam (fused=False)": lambda ps: Adam(ps, lr=1e-3, fused=False).step,
    "radam (fused=False)": lambda ps: RAdam(ps, lr=1e-3, fused=False).step,
}
FUSED_REF, FOREACH_REF, ADD = "torch.Adam(fused)", "torch.Adam(foreach)", "add_ (limit)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sets", nargs="+", default=list(PARAMETER_SETS), choices=list(PARAMETER_SETS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={device} ({name}), torch {torch.__version__}, threads={torch.get_num_threads()}")

    def timed(fn, steps):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        return (time.perf_counter() - start) / steps

    for set_name in args.sets:
        shapes = PARAMETER_SETS[set_name]()
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(device) * 1e-3
        n = sum(p.numel() for p in params)
        a, b = torch.randn(n, device=device), torch.randn(n, device=device)

        def add_step(a=a, b=b):
            a.add_(b, alpha=1e-9)

        times: dict[str, list[float]] = {name: [] for name in [ADD, *VARIANTS]}
        for _ in range(args.repeats):
            times[ADD].append(timed(add_step, args.steps))
            for name, make in VARIANTS.items():
                step = make(params)
                for _ in range(6):  # past RAdam's SGD phase; allocates the state
                    step()
                times[name].append(timed(step, args.steps))
                del step
        med = {name: statistics.median(t) for name, t in times.items()}
        limit = 3 * 4 * n / med[ADD]
        print(
            f"\n{set_name}: {len(shapes)} tensors, {n / 1e6:.2f}M fp32 parameters; "
            f"add_ bandwidth {limit / 1e9:.1f} GB/s ({med[ADD] * 1e3:.3f} ms)"
        )
        print(f"{'variant':<24}{'ms/step':>10}{'/ fused':>10}{'/ foreach':>11}{'GB/s':>8}{'% add_':>8}")
        for name in VARIANTS:
            t = med[name]
            rate = 7 * 4 * n / t
            print(
                f"{name:<24}{t * 1e3:>10.3f}{t / med[FUSED_REF]:>10.3f}{t / med[FOREACH_REF]:>11.3f}"
                f"{rate / 1e9:>8.1f}{100 * rate / limit:>8.1f}"
            )


if __name__ == "__main__":
    main()
