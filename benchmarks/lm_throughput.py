"""Training throughput (tokens/s, forward+backward) of the lm1b_small and lm1b language models.

Each configuration is measured twice in the same run: through the project's path (``ShardStream``
windows from an int32 shard, ``LSTMLanguageModel`` with dropout and official init, hidden state
carried and detached as ``LanguageModelTask.loss`` does) and through a bare reference loop
(``nn.Embedding`` + ``nn.LSTM`` + ``nn.AdaptiveLogSoftmaxWithLoss`` on pre-built tensors); the
ratio ours/reference isolates the harness's overhead. On CUDA the full model also runs in bf16
autocast. Tokens are random ids (throughput does not depend on the text).

    python -m benchmarks.lm_throughput                 # CPU: small and full (full at batch 16)
    python -m benchmarks.lm_throughput --device cuda   # + full model fp32 and bf16, device named
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch
from torch import nn

from radam_repro.data.lm1b import ShardStream
from radam_repro.models.lstm_lm import LSTMLanguageModel

MODELS = {  # vocabulary sizes: lm1b_small's staged split and the full 1B vocabulary (threshold 3)
    "small": dict(vocab=4158, embedding_dim=128, hidden_size=256, num_layers=1, cutoffs=[2000]),
    "full": dict(vocab=793_471, embedding_dim=300, hidden_size=2048, num_layers=2, cutoffs=[4000, 40000, 200000]),
}


class Reference(nn.Module):
    def __init__(self, vocab, embedding_dim, hidden_size, num_layers, cutoffs):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers)
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, vocab, cutoffs, div_value=4.0, head_bias=True)

    def forward(self, inputs, targets, hidden):
        features, hidden = self.lstm(self.embedding(inputs), hidden)
        return self.softmax(features.reshape(-1, features.shape[-1]), targets.reshape(-1)).loss, hidden


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step, batches, device, warmup, steps) -> float:
    """Tokens per second over ``steps`` calls of ``step(batch)`` after ``warmup`` calls."""
    for _ in range(warmup):
        step(next(batches))
    sync(device)
    start, tokens = time.perf_counter(), 0
    for _ in range(steps):
        tokens += step(next(batches))
    sync(device)
    return tokens / (time.perf_counter() - start)


def run(name, device, dtype, batch_size, bptt, warmup, steps) -> tuple[float, float]:
    spec = dict(MODELS[name])
    vocab = spec.pop("vocab")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    shard = np.random.default_rng(0).integers(0, vocab, size=batch_size * bptt * (warmup + steps) + 1, dtype=np.int32)

    ours = LSTMLanguageModel(vocab, **spec).to(device)
    state = {"hidden": None}

    def our_step(batch):
        batch = batch.to(device)
        with autocast:
            log_probs, hidden = ours(batch.inputs, batch.targets, None if batch.reset else state["hidden"])
            loss = -log_probs.float().mean()
        state["hidden"] = tuple(h.detach() for h in hidden)
        loss.backward()
        return batch.targets.numel()

    our_rate = measure(our_step, ShardStream([shard], batch_size, bptt, seed=0).batches(0), device, warmup, steps)
    ours = state = our_step = None  # free the full model before building the reference
    reference = Reference(vocab, **spec).to(device)
    windows = torch.from_numpy(shard[:-1].astype(np.int64)).view(batch_size, -1).T.contiguous().to(device)
    shifted = torch.from_numpy(shard[1:].astype(np.int64)).view(batch_size, -1).T.contiguous().to(device)
    pairs = ((windows[i : i + bptt], shifted[i : i + bptt]) for i in range(0, windows.shape[0], bptt))
    ref_state = {"hidden": None}

    def reference_step(pair):
        with autocast:
            loss, hidden = reference(*pair, ref_state["hidden"])
        ref_state["hidden"] = tuple(h.detach() for h in hidden)
        loss.backward()
        return pair[1].numel()

    return our_rate, measure(reference_step, pairs, device, warmup, steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bptt", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    named = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    if device.type == "cuda":
        cases = [("small", "fp32", 32, args.steps), ("full", "fp32", 128, args.steps), ("full", "bf16", 128, args.steps)]
    else:  # the full model takes seconds per step on a CPU: fewer, smaller steps
        cases = [("small", "fp32", 32, args.steps), ("full", "fp32", 16, max(2, args.steps // 4))]
    print(f"device: {named}; torch {torch.__version__}; bptt {args.bptt}; forward+backward (ours with dropout), "
          "no optimizer step")
    for name, dtype, batch_size, steps in cases:
        ours, reference = run(name, device, dtype, batch_size, args.bptt, args.warmup, steps)
        print(f"{name:5s} {dtype} batch {batch_size:3d}: {ours:10.0f} tokens/s  "
              f"(bare nn.LSTM + AdaptiveLogSoftmaxWithLoss: {reference:10.0f}; ratio {ours / reference:.2f})")


if __name__ == "__main__":
    main()
