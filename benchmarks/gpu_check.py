"""One prepared GPU check: optimizer steps, NMT/CIFAR/LM throughput and MFU, the paper-scale Adam-eps probe.

    python -m benchmarks.gpu_check --out gpu_check_out        # CUDA; <= 10 minutes on an H100/H200
    python -m benchmarks.gpu_check --out /tmp/gc --dry-run    # CPU, 1 thread, toy sizes, < 1 minute

Sections (``--sections`` picks some): ``optimizer`` (every ``radam_repro.optim`` algorithm vs
torch.optim.Adam fused/foreach, fp32 and bf16, host-sync check), ``nmt`` (transformer_iwslt_de_en
training step, bf16, eager and compiled, tokens/s and MFU), ``cifar`` (ResNet-20 img/s, bf16 +
channels_last, augmentation on the device), ``lm`` (2x2048 LSTM + adaptive softmax, 793,471 words,
tokens/s fp32 and bf16) and ``probe`` (IWSLT-size post-LN Transformer on ``nmt_synthetic``: does
Adam-eps escape the plateau where Adam-vanilla stays?) and ``paper_nmt`` (``experiment=paper_nmt`` through the CLI
for its budget: updates/s extrapolated to the paper's 70k updates and to the experiment's GPU-hours).

Each section has a time budget: its loops stop early when the budget is spent (rows then say how many
steps they timed) and SIGALRM ends it HARD_MARGIN_S later. Rows are printed as they come and
``<out>/gpu_check.json`` is rewritten after each: device, versions, and per section its rows, the
formulas behind its derived figures, and, if it failed, the error and the traceback's tail; the next
section runs regardless. ``GPU_CHECK_FAIL=<section>`` makes that section raise at its start (tests).
Nothing is installed: the check uses the project's models, tasks and optimizers and torch only.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from radam_repro import optim, tasks
from radam_repro.data.bilingual import EOS, PAD, batch_by_size
from radam_repro.data.cifar import augment, load_cifar10, normalize
from radam_repro.loggers.statistics import eps_dominated
from radam_repro.models.lstm_lm import LSTMLanguageModel
from radam_repro.models.resnet_cifar import CifarResNet
from radam_repro.models.transformer import Transformer, TransformerConfig
from radam_repro.tasks.translation import label_smoothed_nll_loss

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("optimizer", "nmt", "cifar", "lm", "probe", "paper_nmt")
BUDGET_S = {"optimizer": 30, "nmt": 105, "cifar": 60, "lm": 35, "probe": 160, "paper_nmt": 150}  # soft; + HARD_MARGIN_S
DRY_BUDGET_S = {"paper_nmt": 40}  # the CLI's start-up; 8 s for the others
HARD_MARGIN_S = 10
PEAK_BF16_FLOPS = [  # dense (non-sparse) bf16 tensor-core FLOP/s from the vendors' data sheets; first match wins
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("B200", 2250e12),
]
IWSLT_VOCAB = (8848, 6632)  # IWSLT'14 de / en dictionaries (fairseq, BPE 10k)
LM_VOCAB = 793_471  # One Billion Word vocabulary (words seen >= 3 times)


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 peak of the first PEAK_BF16_FLOPS entry whose key is in the device name, None if unknown."""
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in device_name), None)


def transformer_train_flops(arch, tgt_vocab: int, sentences: int, src_len: int, tgt_len: int) -> int:
    """Training FLOPs of one padded batch: 3x the forward (backward = 2x forward), 2 FLOPs per multiply-add.

    Per sentence, forward: every weight matrix times the tokens that pass through it (2·N·tokens), i.e.
    encoder Le·2S(4d²+2df), decoder Ld·[2T(6d²+2df) + 2S·2d²] (cross-attention keys/values are
    projected from the S source states), output projection 2TVd; plus attention QKᵀ and AV:
    encoder Le·4S²d, decoder Ld·4d(T² + TS), causal self-attention counted in full as
    FlopCounterMode and nanoGPT's estimate_mfu do. Embeddings, LayerNorm, softmax and biases are not counted.
    """
    d, f, le, ld = arch.d_model, arch.ffn_dim, arch.encoder_layers, arch.decoder_layers
    s, t = src_len, tgt_len
    encoder = le * (2 * s * (4 * d * d + 2 * d * f) + 4 * s * s * d)
    decoder = ld * (2 * t * (6 * d * d + 2 * d * f) + 4 * s * d * d + 4 * d * (t * t + t * s))
    return 3 * sentences * (encoder + decoder + 2 * t * tgt_vocab * d)


HOST_SYNCS = (
    "the call under torch.cuda.set_sync_debug_mode('error'): 'none', or the innermost frame of this "
    "repository where it first synchronised the host with the device, and the error"
)
TRANSFORMER_FLOPS = (
    "FLOPs/step = 3·B·[Le·(2S(4d²+2df) + 4S²d) + Ld·(2T(6d²+2df) + 4Sd² + 4d(T²+TS)) + 2TVd] on the padded "
    "batch (B sentences, S source / T target positions): 6·(weights a token passes through) per token plus "
    "attention QKᵀ/AV, causal self-attention counted in full; backward = 2x forward; embeddings, norms, "
    "softmax, biases not counted"
)


def build_optimizer(cfg: dict, params: list, fused: bool) -> torch.optim.Optimizer:
    """``optim.build(cfg, params)``, with fused=True where the algorithm takes ``fused`` and ``fused`` is asked."""
    takes_fused = any(hp.name == "fused" for hp in optim.OPTIMIZERS[cfg["algorithm"]].hyperparameters)
    return optim.build({**cfg, "fused": True} if fused and takes_fused else cfg, params)


class SectionTimeout(BaseException):
    """Raised by SIGALRM when a section overruns its hard limit (BaseException: library code cannot swallow it)."""


class Section:
    """What a section function sees: its device and size, a soft deadline, and where its rows go."""

    def __init__(self, check: Check, record: dict, budget: float):
        self.check, self.record, self.device, self.dry = check, record, check.device, check.dry_run
        self.deadline = time.perf_counter() + budget
        self.columns: list[str] | None = None
        cuda = self.device.type == "cuda"
        self.amp = "bf16" if cuda else "fp32"  # CPU: oneDNN's bf16 LSTM is missing and its bf16 convs crawl
        self.compiled = (False, True) if cuda else (False,)  # CPU: dynamo alone takes ~10 s per model

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def formula(self, key: str, text: str) -> None:
        self.record["formulas"][key] = text

    def note(self, text: str) -> None:
        self.record["notes"].append(text)
        print(f"  note: {text}", flush=True)

    def row(self, **fields: Any) -> None:
        """Append a row, print it under a header (reprinted when the columns change), rewrite the JSON."""
        self.record["rows"].append(fields)
        widths = {key: max(len(key), 10) for key in fields}
        if list(fields) != self.columns:
            self.columns = list(fields)
            print("  " + " ".join(f"{key:>{widths[key]}}" for key in fields), flush=True)
        print("  " + " ".join(f"{fmt(value):>{widths[key]}}" for key, value in fields.items()), flush=True)
        self.check.save()

    def host_syncs(self, call: Callable[[], Any], times: int = 1) -> str:
        """'none' if ``call()`` runs ``times`` times under sync debug mode 'error', else where it first synchronised.

        That is the innermost frame of this repository in the error's traceback (the project's code or this
        script) and the error's first line. Not checked on the CPU.
        """
        if self.device.type != "cuda":
            return "not checked (CPU)"
        self.sync()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(times):
                call()
            return "none"
        except RuntimeError as e:
            ours = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith(str(ROOT))]
            where = f"{Path(ours[-1].filename).relative_to(ROOT)}:{ours[-1].lineno} {ours[-1].line}" if ours else "?"
            return f"{where}: {str(e).strip().splitlines()[0]}"[:300]
        finally:
            torch.cuda.set_sync_debug_mode("default")

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, step: Callable[[int], Any], steps: int, seconds: float) -> tuple[int, float]:
        """(steps run, wall seconds) of ``step(i)`` for i < steps, stopping once ``seconds`` have passed."""
        self.sync()
        start, done = time.perf_counter(), 0
        while done < steps and (done == 0 or time.perf_counter() - start < seconds):
            step(done)
            done += 1
        self.sync()
        return done, time.perf_counter() - start

    def autocast(self, precision: str):
        if precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return f"[{len(value)} values]"
    return str(value)


class Check:
    """Runs the sections in turn and keeps ``<out>/gpu_check.json`` up to date."""

    def __init__(self, out: Path, dry_run: bool):
        self.dry_run = dry_run
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.path = out / "gpu_check.json"
        out.mkdir(parents=True, exist_ok=True)
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or "cpu"
        self.device_name = name
        self.data: dict[str, Any] = {
            "meta": {
                "device": str(self.device),
                "device_name": name,
                "gpu_memory_gib": torch.cuda.get_device_properties(self.device).total_memory / 2**30
                if self.device.type == "cuda"
                else None,
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                "python": platform.python_version(),
                "threads": torch.get_num_threads(),
                "git_commit": git_commit(),
                "dry_run": dry_run,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "peak_bf16_flops": peak_bf16_flops(name),
            },
            "peak_bf16_flops_table": dict(PEAK_BF16_FLOPS),
            "sections": {},
        }
        if dry_run:
            self.data["meta"]["dry_run_note"] = (
                "CPU, 1 thread, toy sizes; bf16 cases run in fp32 and the "
                "torch.compile cases are left out: figures test the script only"
            )

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        tmp.replace(self.path)

    def run(self, name: str, function: Callable[[Section], None], budget: float) -> None:
        record = {"status": "running", "budget_s": budget, "formulas": {}, "notes": [], "rows": []}
        self.data["sections"][name] = record
        print(f"\n== {name} (budget {budget:g} s)", flush=True)

        def overrun(signum, frame):
            raise SectionTimeout(f"section {name!r} overran its budget of {budget:g} s + {HARD_MARGIN_S} s")

        start = time.perf_counter()
        previous = signal.signal(signal.SIGALRM, overrun)
        signal.setitimer(signal.ITIMER_REAL, budget + HARD_MARGIN_S)
        try:
            if os.environ.get("GPU_CHECK_FAIL") == name:
                raise RuntimeError(f"failure injected by GPU_CHECK_FAIL={name}")
            function(Section(self, record, budget))
            record["status"] = "ok"
        except (Exception, SectionTimeout) as e:
            signal.setitimer(signal.ITIMER_REAL, 0)
            record["status"] = "timeout" if isinstance(e, SectionTimeout) else "error"
            record["error"] = f"{type(e).__name__}: {e}"
            record["traceback"] = traceback.format_exc()[-3000:]
            print(f"  {record['status'].upper()}: {record['error']}", flush=True)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            record["seconds"] = round(time.perf_counter() - start, 2)
            self.save()
            torch._dynamo.reset()
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def git_commit() -> str | None:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() or None


# ---------------------------------------------------------------- 1. optimizer step


def iwslt_architecture(dry: bool) -> TransformerConfig:
    """transformer_iwslt_de_en with IWSLT'14's dictionaries (a toy of the same layout in a dry run)."""
    if dry:
        return TransformerConfig(
            src_vocab_size=300, tgt_vocab_size=200, d_model=32, ffn_dim=64, heads=4, encoder_layers=2, decoder_layers=2
        )
    return TransformerConfig(src_vocab_size=IWSLT_VOCAB[0], tgt_vocab_size=IWSLT_VOCAB[1])


def optimizer_section(s: Section) -> None:
    """ms/step of every radam_repro.optim algorithm vs torch.optim.Adam(fused) and Adam(foreach), fp32 and bf16."""
    with torch.device("meta"):
        shapes = [p.shape for p in Transformer(iwslt_architecture(s.dry)).parameters()]
    steps, repeats = (20, 5) if not s.dry else (3, 2)
    variants = {
        "torch.Adam(fused)": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
        "torch.Adam(foreach)": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
        **{
            name: (lambda ps, name=name: build_optimizer({"algorithm": name, "lr": 1e-3, "freeze_steps": 0}, ps, True))
            for name in optim.OPTIMIZERS
        },
    }
    s.formula(
        "ms_per_step",
        f"median over interleaved repeats of (wall time of {steps} optimizer.step() calls, "
        "CUDA-synchronised) / steps; fixed random gradients",
    )
    s.formula("vs_torch_fused", "ms_per_step / ms_per_step of torch.optim.Adam(fused=True) on the same parameters")
    s.formula("vs_torch_foreach", "ms_per_step / ms_per_step of torch.optim.Adam(foreach=True) on the same parameters")
    s.formula("host_syncs", HOST_SYNCS.replace("the call", "3 optimizer steps"))
    s.note(
        f"{len(shapes)} tensors, {sum(math.prod(x) for x in shapes) / 1e6:.2f}M parameters "
        f"(transformer_iwslt_de_en{' toy' if s.dry else ''}); adam_2k with freeze_steps=0 (its adaptive phase); "
        "fused=True passed to our classes where their signature accepts it"
    )
    for dtype_index, dtype in enumerate((torch.float32, torch.bfloat16)):
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(shape, generator=gen).to(s.device, dtype)) for shape in shapes]
        for p in params:
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-3).to(s.device, dtype)
        opts = {name: make(params) for name, make in variants.items()}
        syncs = {}
        for name, opt in opts.items():
            for _ in range(6):  # past RAdam's SGD phase (rho_t <= 5 for t <= 5) and first allocations
                opt.step()
            syncs[name] = s.host_syncs(opt.step, times=3)
        times: dict[str, list[float]] = {name: [] for name in opts}
        seconds = s.left() / (2 - dtype_index) / (repeats * len(opts))
        for _ in range(repeats):
            for name, opt in opts.items():
                done, wall = s.timed(lambda i, opt=opt: opt.step(), steps, seconds)
                times[name].append(wall / done)
            if s.left() < 0:
                break
        median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        for name, opt in opts.items():
            s.row(
                dtype=str(dtype).removeprefix("torch."),
                optimizer=name,
                fused=bool(opt.defaults.get("fused")),
                ms_per_step=median[name],
                vs_torch_fused=median[name] / median["torch.Adam(fused)"],
                vs_torch_foreach=median[name] / median["torch.Adam(foreach)"],
                repeats=len(times[name]),
                host_syncs=syncs[name],
            )
        del opts, params


# ---------------------------------------------------------------- 2. NMT


def iwslt_like_batches(count: int, max_tokens: int, vocab: tuple[int, int], max_len: int, device) -> list[dict]:
    """``count`` batches of random ids with IWSLT'14-like lengths, packed by fairseq's batch_by_size.

    Target lengths ~ lognormal(median 20, sigma 0.67) clipped to [2, max_len] (IWSLT'14 valid, BPE,
    with </s>: median 20, mean 25, max 170); source = target x U(0.8, 1.25); sentences sorted by
    (source, target) length and packed while sentences x max length <= max_tokens.
    """
    rng = np.random.default_rng(0)
    n = 4 * count * max_tokens // 20
    tgt = np.clip(np.rint(rng.lognormal(math.log(20), 0.67, n)), 2, max_len).astype(int)
    src = np.clip(np.rint(tgt * rng.uniform(0.8, 1.25, n)), 2, max_len).astype(int)
    packed = batch_by_size(np.lexsort((tgt, src)), np.maximum(src, tgt), max_tokens)
    chosen = [packed[i] for i in rng.choice(len(packed), count, replace=False)]
    gen = torch.Generator().manual_seed(0)

    def tokens(lengths: np.ndarray, vocab_size: int) -> torch.Tensor:
        ids = torch.randint(4, vocab_size, (len(lengths), int(lengths.max())), generator=gen)
        positions = torch.arange(ids.shape[1])
        lengths = torch.as_tensor(lengths)[:, None]
        ids[positions == lengths - 1] = EOS
        return ids.masked_fill(positions >= lengths, PAD)

    batches = []
    for indices in chosen:
        target = tokens(tgt[indices], vocab[1])
        prev = torch.cat([torch.full((len(indices), 1), EOS), target[:, :-1]], dim=1).masked_fill(target.eq(PAD), PAD)
        batch = {"src_tokens": tokens(src[indices], vocab[0]), "prev_output_tokens": prev, "target": target}
        batch["ntokens"] = target.ne(PAD).sum()
        batches.append({k: v.to(device) for k, v in batch.items()})
    return batches


def nmt_section(s: Section) -> None:
    """transformer_iwslt_de_en training step (bf16 autocast): tokens/s and MFU, eager and torch.compile."""
    arch = iwslt_architecture(s.dry)
    max_tokens, count, steps = (200, 3, 4) if s.dry else (4000, 16, 200)
    batches = iwslt_like_batches(
        count, max_tokens, (arch.src_vocab_size, arch.tgt_vocab_size), 40 if s.dry else 175, s.device
    )
    peak = peak_bf16_flops(s.check.device_name) if s.device.type == "cuda" else None
    s.formula("flops_per_step", TRANSFORMER_FLOPS)
    s.formula("tokens_per_s", "non-padding target tokens of the timed steps / their wall time (fairseq's wps)")
    s.formula("host_syncs", HOST_SYNCS.replace("the call", "one training step"))
    s.formula(
        "mfu",
        "sum of flops_per_step over the timed steps / wall time / peak dense bf16 FLOP/s of the device "
        f"(meta.peak_bf16_flops = {peak})",
    )
    s.note(
        "step = bf16 autocast forward + label-smoothed (0.1) loss / ntokens, backward, clip_grad_norm_(25), "
        "radam_repro Adam (lr 3e-4, wd 1e-4, fused where supported), dropout 0.3; "
        f"{count} batches of <= {max_tokens} tokens cycled; compile: dynamic=True (one graph for every shape)"
    )
    torch.manual_seed(0)
    model = Transformer(arch).to(s.device).train()
    opt = build_optimizer({"algorithm": "adam", "lr": 3e-4, "weight_decay": 1e-4}, list(model.parameters()), True)
    flops = [
        transformer_train_flops(
            arch, arch.tgt_vocab_size, len(b["target"]), b["src_tokens"].shape[1], b["target"].shape[1]
        )
        for b in batches
    ]
    counter = FlopCounterMode(display=False)
    with counter, s.autocast(s.amp):
        loss, _ = label_smoothed_nll_loss(
            model(batches[0]["src_tokens"], batches[0]["prev_output_tokens"]), batches[0]["target"], 0.1
        )
        loss.backward()
    model.zero_grad(set_to_none=True)
    s.row(
        case="flop check, batch 0",
        formula=float(flops[0]),
        flop_counter_mode=float(counter.get_total_flops()),
        ratio=flops[0] / max(counter.get_total_flops(), 1),
    )
    for index, compiled in enumerate(s.compiled):
        net = torch.compile(model, dynamic=True) if compiled else model

        def step(i: int, net=net) -> None:
            batch = batches[i % count]
            with s.autocast(s.amp):
                logits = net(batch["src_tokens"], batch["prev_output_tokens"])
                loss, _ = label_smoothed_nll_loss(logits, batch["target"], 0.1)
            (loss / batch["ntokens"]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 25.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        warmup, warm_s = s.timed(step, 3, math.inf)
        syncs = s.host_syncs(lambda: step(0))
        opt.zero_grad(set_to_none=True)
        done, wall = s.timed(lambda i, warmup=warmup: step(i + warmup), steps, s.left() / (len(s.compiled) - index) - 2)
        tokens = sum(int(batches[(i + warmup) % count]["ntokens"]) for i in range(done))
        flop_rate = sum(flops[(i + warmup) % count] for i in range(done)) / wall
        s.row(
            case=f"{s.amp} {'compiled' if compiled else 'eager'}",
            steps=done,
            first_3_steps_s=warm_s,
            tokens_per_s=tokens / wall,
            tflops_per_s=flop_rate / 1e12,
            mfu=flop_rate / peak if peak else None,
            host_syncs=syncs,
        )


# ---------------------------------------------------------------- 3. CIFAR


def cifar_images(s: Section, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10's training set on the device, or uniform random uint8 images of its shape if the files are absent."""
    try:
        images, labels = load_cifar10(data_dir, True, check_integrity=False)
        s.note(f"real CIFAR-10 from {data_dir}")
    except FileNotFoundError:
        n = 256 if s.dry else 50_000
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
        labels = torch.randint(0, 10, (n,), generator=gen)
        s.note(f"no CIFAR-10 at {data_dir}: {n} random uint8 images of CIFAR's shape")
    return images.to(s.device), labels.to(s.device)


def cifar_section(s: Section, data_dir: Path) -> None:
    """ResNet-20 training img/s, bf16 autocast + channels_last, on-device crop/flip, eager and compiled."""
    images, labels = cifar_images(s, data_dir)
    batch_sizes, steps = ((8, 32), 3) if s.dry else ((128, 1024), 300)
    s.formula("img_per_s", "batch size x timed steps / their wall time")
    s.formula("host_syncs", HOST_SYNCS.replace("the call", "one training step"))
    s.note(
        "step = index a random permutation, radam_repro.data.cifar.augment (random crop 32 pad 4 + flip, on the "
        "device) + normalize, channels_last, bf16 autocast forward + cross-entropy, backward, radam_repro RAdam "
        "(fused where supported); compile: dynamic=True"
    )
    torch.manual_seed(0)
    model = CifarResNet(20).to(s.device).to(memory_format=torch.channels_last).train()
    opt = build_optimizer({"algorithm": "radam", "lr": 1e-3}, list(model.parameters()), True)
    order = torch.randperm(len(images), device=s.device)
    gen = torch.Generator().manual_seed(0)
    cases = [(compiled, bs) for compiled in s.compiled for bs in batch_sizes]
    for index, (compiled, batch_size) in enumerate(cases):
        net = torch.compile(model, dynamic=True) if compiled else model
        per_epoch = len(images) // batch_size

        def step(i: int, net=net, batch_size=batch_size, per_epoch=per_epoch) -> None:
            idx = order[(i % per_epoch) * batch_size : (i % per_epoch + 1) * batch_size]
            x = normalize(augment(images[idx], gen)).contiguous(memory_format=torch.channels_last)
            with s.autocast(s.amp):
                loss = F.cross_entropy(net(x), labels[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        warmup, warm_s = s.timed(step, 3, math.inf)
        syncs = s.host_syncs(lambda: step(0))
        opt.zero_grad(set_to_none=True)
        done, wall = s.timed(step, steps, s.left() / (len(cases) - index) - 2)
        s.row(
            case=f"{s.amp} {'compiled' if compiled else 'eager'}",
            batch=batch_size,
            steps=done,
            first_3_steps_s=warm_s,
            img_per_s=batch_size * done / wall,
            host_syncs=syncs,
        )


# ---------------------------------------------------------------- 4. LM


def lm_section(s: Section) -> None:
    """The paper's 2x2048 LSTM + adaptive softmax (793,471 words), BPTT 20, batch 128: tokens/s fp32 and bf16."""
    if s.dry:
        spec, batch, bptt, steps = dict(vocab_size=2000, embedding_dim=16, hidden_size=32, cutoffs=(100, 500)), 4, 5, 3
    else:
        spec, batch, bptt, steps = dict(vocab_size=LM_VOCAB), 128, 20, 100
    vocab = spec["vocab_size"]
    s.formula("tokens_per_s", "batch x bptt x timed steps / their wall time")
    s.formula("host_syncs", HOST_SYNCS.replace("the call", "one training step"))
    s.note(
        f"vocabulary {vocab:,}; token ids drawn from Zipf(1) over frequency ranks (id 0 most frequent), the "
        "order the adaptive softmax's cutoffs assume; step = forward (dropout 0.1) + mean NLL, backward, hidden "
        "state carried and detached, radam_repro Adam (lr 1e-3, fused where supported); nn.LSTM runs cuDNN on CUDA"
    )
    torch.manual_seed(0)
    with torch.device(s.device):
        model = LSTMLanguageModel(**spec).train()
    opt = build_optimizer({"algorithm": "adam", "lr": 1e-3}, list(model.parameters()), True)
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float, device=s.device)
    windows = 8
    stream = torch.multinomial(zipf, (windows * bptt + 1) * batch, replacement=True).view(-1, batch)
    precisions = ("fp32", s.amp) if s.amp != "fp32" else ("fp32",)
    seen = {}
    model.lstm.register_forward_hook(lambda module, inputs, outputs: seen.update(lstm_dtype=str(outputs[0].dtype)))
    for index, precision in enumerate(precisions):
        hidden = None

        def step(i: int, precision=precision) -> None:
            nonlocal hidden
            start = (i % windows) * bptt
            with s.autocast(precision):
                log_probs, hidden = model(stream[start : start + bptt], stream[start + 1 : start + bptt + 1], hidden)
                loss = -log_probs.float().mean()
            loss.backward()
            hidden = tuple(h.detach() for h in hidden)
            opt.step()
            opt.zero_grad(set_to_none=True)

        warmup, warm_s = s.timed(step, 3, math.inf)
        syncs = s.host_syncs(lambda: step(0))
        opt.zero_grad(set_to_none=True)
        done, wall = s.timed(step, steps, s.left() / (len(precisions) - index) - 2)
        s.row(
            precision=precision,
            lstm_output=seen["lstm_dtype"].removeprefix("torch."),
            batch=batch,
            bptt=bptt,
            steps=done,
            first_3_steps_s=warm_s,
            tokens_per_s=batch * bptt * done / wall,
            host_syncs=syncs,
        )


# ---------------------------------------------------------------- 5. Adam-eps probe

PROBE_VARIANTS = ("adam", "adam_eps", "radam", "adam_warmup", "adam_preln")
PROBE_VOCAB, PROBE_LENGTH = 32, 12  # nmt_synthetic's task: chance = ln 32 nats per symbol


def paper_recipe(variant: str):
    """The composed config of the ablation cell ``+ablation=<variant> task=nmt``: the paper's IWSLT recipe for it."""
    from hydra import compose, initialize_config_dir

    from radam_repro.__main__ import register  # noqa: F401 - registers the config schema and resolvers

    with initialize_config_dir(config_dir=str(ROOT / "radam_repro" / "configs"), version_base="1.3"):
        return compose("radam_repro", overrides=["task=nmt", f"+ablation={variant}"])


def probe_section(s: Section) -> None:
    """IWSLT-size post-LN Transformer on nmt_synthetic with the paper's recipes: who leaves the ln V plateau?"""
    from omegaconf import OmegaConf

    chance = math.log(PROBE_VOCAB)
    sentences = 16 if s.dry else 4000 // (PROBE_LENGTH + 1)
    log_every = 5 if s.dry else 25
    s.formula("nll", "per-token NLL (nats) of each fresh training batch, averaged over log_every updates")
    s.formula("escaped", f"mean nll over the last 10% of updates < 0.5 ln V = {0.5 * chance:.3f} (ln V = chance)")
    s.formula(
        "frac_below_eps",
        "fraction of seen coordinates (v > 0) where the variant's eps outweighs the root it is added to: sqrt(v_t) "
        "(eps on sqrt(v), the recipes') or sqrt(v_t / (1 - beta2^t)) (on sqrt(v_hat)); the logs' "
        "adaptive_lr/eps_dominated (radam_repro.loggers.statistics.eps_dominated)",
    )
    s.formula("frac_below_1e-4", "the same against Adam-eps's eps = 1e-4 (what eps = 1e-4 would damp)")
    s.note(
        f"task nmt_synthetic (vocab {PROBE_VOCAB}, length {PROBE_LENGTH}, {sentences} sentences = "
        f"{sentences * (PROBE_LENGTH + 1)} target tokens per batch); model and optimizer from the composed "
        "config +ablation=<variant> task=nmt (transformer_iwslt_de_en, dropout 0.3, lr 3e-4, betas (0.9, 0.999), "
        "wd 1e-4, Adam-warmup: 4000 linear steps from 1e-8), label smoothing 0.1, clip 25, constant lr after "
        f"warmup (the 70k-update decay is flat here); {'fp32 toy model' if s.dry else 'bf16 autocast'}; every "
        "variant runs as many updates as Adam-vanilla fitted in its share of the budget"
    )
    updates, finals = None, {}
    for index, variant in enumerate(PROBE_VARIANTS):
        setup_start = time.perf_counter()
        cfg = paper_recipe(variant)
        model_cfg = OmegaConf.to_container(cfg.task.model)
        if s.dry:
            model_cfg.update(d_model=16, ffn_dim=32, heads=2, encoder_layers=1, decoder_layers=1)
        task_cfg = OmegaConf.create(
            dict(
                name="nmt_synthetic",
                vocab=PROBE_VOCAB,
                length=PROBE_LENGTH,
                batch_size=sentences,
                max_update=10**6,
                steps_per_epoch=10**6,
                decay_start=1.0,
                label_smoothing=cfg.task.label_smoothing,
                clip_norm=cfg.task.clip_norm,
                model=model_cfg,
            )
        )
        torch.manual_seed(1)
        task = tasks.build(task_cfg, seed=1, device=s.device)
        model = task.model.train()
        opt = build_optimizer(OmegaConf.to_container(cfg.optimizer), list(model.parameters()), True)
        scheduler = optim.lambda_lr(opt, optim.build_schedule(cfg.optimizer, task.decay, task.total_steps))
        eps = float(cfg.optimizer.eps)
        remaining = len(PROBE_VARIANTS) - index  # Adam-vanilla's share leaves time for the others' setup too
        seconds = (s.left() - (remaining - 1) * (time.perf_counter() - setup_start)) / remaining
        batches = task.train_batches(0)
        pending, curve, fractions = [], [], []
        start, step = time.perf_counter(), 0
        while (step < updates) if updates else (step < log_every or time.perf_counter() - start < seconds):
            with s.autocast(s.amp):
                loss, metrics = task.loss(model, next(batches))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), task.clip_norm)
            opt.step()
            scheduler.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            pending.append(metrics["nll_loss"].float())
            if step % log_every == 0:
                curve.append([step, torch.stack(pending).mean().item()])
                pending = []
            if step % (4 * log_every) == 0 or step == 1:
                fractions.append([step, eps_dominated(opt).item(), eps_dominated(opt, 1e-4).item()])
            if updates and s.left() < 0:
                s.note(f"{variant}: budget spent after {step} of {updates} updates")
                break
        wall = time.perf_counter() - start
        if fractions[-1][0] != step:
            fractions.append([step, eps_dominated(opt).item(), eps_dominated(opt, 1e-4).item()])
        updates = updates or step
        tail = ([nll for at, nll in curve if at > 0.9 * step] or [curve[-1][1]]) if curve else [float("nan")]
        finals[variant] = final = sum(tail) / len(tail)
        s.row(
            variant=variant,
            eps=eps,
            updates=step,
            seconds=wall,
            final_nll=final,
            escaped=final < 0.5 * chance,
            lr_end=opt.param_groups[0]["lr"],
            frac_below_eps=fractions[-1][1],
            **{"frac_below_1e-4": fractions[-1][2]},
            nll_curve=curve,
            frac_curve=fractions,
        )
        del task, model, opt, scheduler, batches
    escaped = {variant: final < 0.5 * chance for variant, final in finals.items()}
    answer = "yes" if escaped["adam_eps"] and not escaped["adam"] else "no"
    s.row(
        variant="verdict",
        adam_eps_escapes_where_adam_vanilla_does_not=answer,
        escaped=",".join(v for v, e in escaped.items() if e) or "none",
    )


# ---------------------------------------------------------------- 6. paper_nmt's first minutes

PAPER_NMT_UPDATES = 70_000


def paper_nmt_section(s: Section, data_dir: Path, out: Path) -> None:
    """``experiment=paper_nmt`` (RAdam, seed 1) through the CLI for the section's budget: its updates/s after the
    first logged rows, extrapolated to the paper's 70k updates and to the experiment's 30 runs."""
    from benchmarks.paper_cost import PEAK, nmt_flops

    run_dir = out / "paper_nmt_run"
    overrides = [
        "experiment=paper_nmt",
        "hydra.mode=RUN",
        "ablation=radam",
        f"hydra.run.dir={run_dir}",
        f"task.data_dir={data_dir}",
        f"task.cache_dir={out / 'cache'}",
        "trainer.eval_every=100000000",
        "trainer.checkpoint_every=100000000",
        "trainer.histograms=false",
        "trainer.progress=false",
        f"trainer.log_every={1 if s.dry else 50}",
        "trainer.resume=false",
    ]
    if not (data_dir / "train.de").is_file():
        overrides.append("task.train_split=valid")
        s.note(f"no train split in {data_dir}: trains on valid (same batch sizes, so the same updates/s)")
    if s.dry:
        overrides += ["trainer.device=cpu", "trainer.precision=fp32", "task.max_tokens=200"]
        overrides += ["task.model.layers=1", "task.model.d_model=32", "task.model.ffn_dim=64", "task.model.heads=2"]
    s.formula("updates_per_s", "median steps_per_s of metrics.jsonl's training rows after the first two")
    s.formula("hours_70k", f"{PAPER_NMT_UPDATES} / updates_per_s / 3600 (Adam-2k: 72k)")
    s.formula("mfu_implied", f"benchmarks.paper_cost.nmt_flops() x updates_per_s / {PEAK:.3g}")
    s.note("python -m radam_repro " + " ".join(overrides))
    proc = subprocess.Popen(
        [sys.executable, "-m", "radam_repro", *overrides],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics, rows, deadline = run_dir / "metrics.jsonl", [], time.perf_counter() + s.left() - 3
    try:
        while proc.poll() is None and time.perf_counter() < deadline and not (s.dry and len(rows) >= 4):
            time.sleep(0.5)
            lines = metrics.read_text().splitlines() if metrics.is_file() else []
            rows = [row for row in map(json.loads, lines) if row.get("split") == "train" and "steps_per_s" in row]
    finally:
        proc.terminate()
        _, stderr = proc.communicate()
    if len(rows) < 3:
        raise RuntimeError(f"paper_nmt logged {len(rows)} training rows in its budget; stderr: {stderr[-1500:]}")
    rate = statistics.median(row["steps_per_s"] for row in rows[2:])
    hours = PAPER_NMT_UPDATES / rate / 3600
    s.row(
        updates=rows[-1]["step"],
        updates_per_s=rate,
        hours_70k=hours,
        experiment_gpu_hours=hours * (25 + 5 * 72 / 70),  # 6 variants x 5 seeds, Adam-2k runs 72k
        mfu_implied=None if s.dry else nmt_flops() * rate / PEAK,
    )


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    parser.add_argument("--dry-run", action="store_true", help="CPU, 1 thread, toy sizes (< 1 minute)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument(
        "--cifar-dir",
        type=Path,
        default=Path(os.environ.get("RADAM_REPRO_DATA", "data")) / "cifar10",
        help="folder holding cifar-10-batches-py (random images of CIFAR's shape if absent)",
    )
    parser.add_argument(
        "--iwslt-dir",
        type=Path,
        default=Path(os.environ.get("RADAM_REPRO_DATA", "data")) / "iwslt14" / "iwslt14.tokenized.de-en",
        help="the prepare-iwslt14.sh folder for paper_nmt (without a train split it trains on valid)",
    )
    args = parser.parse_args(argv)
    chosen = args.sections.split(",")
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.dry_run:
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        parser.error("no CUDA device visible: this check needs a GPU (use --dry-run to exercise it on the CPU)")
    functions = {
        "optimizer": optimizer_section,
        "nmt": nmt_section,
        "lm": lm_section,
        "probe": probe_section,
        "cifar": lambda s: cifar_section(s, args.cifar_dir),
        "paper_nmt": lambda s: paper_nmt_section(s, args.iwslt_dir, args.out),
    }
    check = Check(args.out, args.dry_run)
    meta = check.data["meta"]
    print(
        f"device {meta['device_name']}; torch {meta['torch']}, CUDA {meta['cuda']}, cuDNN {meta['cudnn']}; "
        f"peak dense bf16 {meta['peak_bf16_flops']}",
        flush=True,
    )
    started = time.perf_counter()
    for name in SECTIONS:
        if name in chosen:
            check.run(name, functions[name], DRY_BUDGET_S.get(name, 8) if args.dry_run else BUDGET_S[name])
    meta["total_s"] = round(time.perf_counter() - started, 1)
    check.save()
    failed = [name for name, record in check.data["sections"].items() if record["status"] != "ok"]
    print(f"\n{meta['total_s']} s; wrote {check.path}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
