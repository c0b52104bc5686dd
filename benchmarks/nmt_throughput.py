"""Training throughput (target tokens/s, forward+backward) of transformer_iwslt_de_en.

Measured twice in the same run: through the project's path (:class:`TranslationTask`'s loss on
:class:`radam_repro.models.transformer.Transformer`, label-smoothed cross-entropy) and through a
bare reference of the same shapes (``nn.Embedding`` + ``nn.Transformer`` (post-LN, ReLU, 4 heads,
FFN 1024, 6+6 layers) + output projection + ``F.cross_entropy(label_smoothing=0.1)``); the ratio
ours/reference isolates the cost of our implementation. Batches are random ids of fixed length
(throughput does not depend on the text); vocabularies are IWSLT'14's 8848 (de) / 6632 (en).
On CUDA, fp32 and bf16 autocast, with the model FLOPs counted by ``FlopCounterMode`` and MFU
against the device's dense peak.

    python -m benchmarks.nmt_throughput                  # CPU, 16 sentences x 32 tokens
    python -m benchmarks.nmt_throughput --device cuda    # + fp32 and bf16, 4000-token batches
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from radam_repro.models.transformer import Transformer, TransformerConfig
from radam_repro.tasks.translation import label_smoothed_nll_loss

SRC_VOCAB, TGT_VOCAB, PAD = 8848, 6632, 1
PEAK_TFLOPS = {  # dense tensor-core peaks (bf16, fp32 without TF32), from the vendors' data sheets
    "H100": {"bf16": 989.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp32": 19.5},
}


class Reference(nn.Module):
    """The same shapes with torch's stock modules."""

    def __init__(self, dropout: float):
        super().__init__()
        self.src_embed, self.tgt_embed = nn.Embedding(SRC_VOCAB, 512, PAD), nn.Embedding(TGT_VOCAB, 512, PAD)
        self.transformer = nn.Transformer(512, 4, 6, 6, 1024, dropout, batch_first=True)
        self.output = nn.Linear(512, TGT_VOCAB, bias=False)

    def forward(self, src, prev):
        mask = nn.Transformer.generate_square_subsequent_mask(prev.size(1), device=prev.device)
        hidden = self.transformer(self.src_embed(src), self.tgt_embed(prev), tgt_mask=mask, tgt_is_causal=True)
        return self.output(hidden)


def batch(sentences: int, length: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, SRC_VOCAB, (sentences, length), generator=g)
    target = torch.randint(4, TGT_VOCAB, (sentences, length), generator=g)
    prev = torch.cat([torch.full((sentences, 1), 2), target[:, :-1]], dim=1)
    return src.to(device), prev.to(device), target.to(device)


def ours_step(model, src, prev, target):
    loss, _ = label_smoothed_nll_loss(model(src, prev), target, 0.1)
    (loss / target.numel()).backward()


def reference_step(model, src, prev, target):
    logits = model(src, prev)
    F.cross_entropy(logits.float().view(-1, TGT_VOCAB), target.view(-1), label_smoothing=0.1).backward()


def tokens_per_s(step, model, data, steps: int, precision: str, device: torch.device) -> float:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # zero_grad only: the optimizer is not benchmarked here

    def run(n: int) -> None:
        for _ in range(n):
            with autocast:
                step(model, *data)
            optimizer.zero_grad(set_to_none=True)

    run(2)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * data[2].numel() / (time.perf_counter() - start)


def model_flops(model, data, precision: str, device: torch.device) -> float:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    counter = FlopCounterMode(display=False)
    with counter, autocast:
        ours_step(model, *data)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sentences", type=int, help="sentences per batch (default: 16 on CPU, 125 on CUDA)")
    parser.add_argument("--length", type=int, default=32, help="tokens per sentence, both sides")
    parser.add_argument("--steps", type=int, help="timed steps (default: 3 on CPU, 30 on CUDA)")
    parser.add_argument("--dropout", type=float, default=0.3)
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sentences, steps = args.sentences or (125 if cuda else 16), args.steps or (30 if cuda else 3)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {sentences} x {args.length} target tokens")

    torch.manual_seed(0)
    ours = (
        Transformer(TransformerConfig(src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB, dropout=args.dropout))
        .to(device)
        .train()
    )
    reference = Reference(args.dropout).to(device).train()
    data = batch(sentences, args.length, device)
    for precision in ("fp32", "bf16") if cuda else ("fp32",):
        ours_tps = tokens_per_s(ours_step, ours, data, steps, precision, device)
        reference_tps = tokens_per_s(reference_step, reference, data, steps, precision, device)
        line = f"{precision}: ours {ours_tps:,.0f} tok/s, nn.Transformer {reference_tps:,.0f} tok/s, ratio {ours_tps / reference_tps:.2f}"
        peak = next((p[precision] for key, p in PEAK_TFLOPS.items() if key in name), None)
        if cuda and peak:
            flops_per_token = model_flops(ours, data, precision, device) / data[2].numel()
            line += f", MFU {100 * flops_per_token * ours_tps / (peak * 1e12):.1f} % of {peak:g} TFLOP/s"
        print(line)


if __name__ == "__main__":
    main()
