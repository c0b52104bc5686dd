"""Optimizer step time of every variant as a ratio to torch.optim.Adam / RAdam (foreach), same run.

    python benchmarks/optim_step.py [--device cpu|cuda] [--steps 30] [--repeats 7]

Parameter sets: ResNet-20 (CIFAR) and the IWSLT'14 transformer_iwslt_de_en shapes (embed 512,
FFN 1024, 6+6 layers, separate 8848/6632-word embeddings and output projection). Gradients are
fixed random tensors, so only the optimizer's own work is timed. Measurements are interleaved
round-robin and the median of per-repeat means is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from radam_repro.models.resnet_cifar import CifarResNet
from radam_repro.optim import Adam, Adam2k, RAdam, SimplifiedRAdam


def transformer_iwslt_shapes(src_vocab=8848, tgt_vocab=6632, d=512, ffn=1024, layers=6):
    attn = [(d, d), (d,)] * 4
    ffn_shapes = [(ffn, d), (ffn,), (d, ffn), (d,)]
    norm = [(d,), (d,)]
    encoder = (attn + ffn_shapes + norm * 2) * layers
    decoder = (attn * 2 + ffn_shapes + norm * 3) * layers
    return [(src_vocab, d), (tgt_vocab, d), *encoder, *decoder, (tgt_vocab, d)]


def parameter_sets(device):
    resnet = [p.shape for p in CifarResNet(20).parameters()]
    return {"resnet20": resnet, "transformer_iwslt": transformer_iwslt_shapes()}


VARIANTS = {
    "torch.Adam(foreach)": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
    "torch.RAdam(foreach)": lambda ps: torch.optim.RAdam(ps, lr=1e-3, foreach=True),
    "adam": lambda ps: Adam(ps, lr=1e-3),
    "adam_eps": lambda ps: Adam(ps, lr=1e-3, eps=1e-4),
    "adam_2k": lambda ps: Adam2k(ps, lr=1e-3, freeze_steps=0),
    "radam": lambda ps: RAdam(ps, lr=1e-3),
    "radam_simple": lambda ps: SimplifiedRAdam(ps, lr=1e-3),
    "adam (wd 1e-4)": lambda ps: Adam(ps, lr=1e-3, weight_decay=1e-4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = dict(VARIANTS)
    if device.type == "cuda":
        variants["torch.Adam(fused)"] = lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}, threads={torch.get_num_threads()}")
    for set_name, shapes in parameter_sets(device).items():
        gen = torch.Generator().manual_seed(0)
        opts = {}
        for name, make in variants.items():
            params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in shapes]
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen).to(device) * 1e-3
            opts[name] = make(params)
            for _ in range(6):  # past RAdam's SGD phase and allocation warm-up
                opts[name].step()
        times = {name: [] for name in opts}
        for _ in range(args.repeats):
            for name, opt in opts.items():
                sync()
                start = time.perf_counter()
                for _ in range(args.steps):
                    opt.step()
                sync()
                times[name].append((time.perf_counter() - start) / args.steps)
        med = {name: statistics.median(t) for name, t in times.items()}
        n_params = sum(torch.Size(s).numel() for s in shapes)
        print(f"\n{set_name}: {len(shapes)} tensors, {n_params / 1e6:.2f}M parameters")
        refs = [r for r in ("torch.Adam(foreach)", "torch.RAdam(foreach)", "torch.Adam(fused)") if r in med]
        print(f"{'variant':<22}{'ms/step':>10}" + "".join(f"{'/' + r:>24}" for r in refs))
        for name, t in med.items():
            print(f"{name:<22}{t * 1e3:>10.3f}" + "".join(f"{t / med[r]:>24.3f}" for r in refs))


if __name__ == "__main__":
    main()
