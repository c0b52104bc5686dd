"""Tasks ``lm1b`` and ``lm1b_small``: the paper's One-Billion-Word LSTM language model (§1.4, App. B).

Recipe (official ``train_1bw.py``): BPTT 20, batch 128, clip 5, 14 epochs, lr ×0.1 from the
start of the 10th epoch; the hidden state is carried across batches (detached) and reset at
every shard's start; perplexity exp(mean NLL per token) over the whole held-out set after every
epoch. ``lm1b_small`` is the same code on the staged held-out shard with a small model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import nn

from radam_repro import tasks
from radam_repro.data.lm1b import LM1B_HELDOUT, LM1B_TRAIN, LMBatch, ShardStream, open_corpus, stream_rows, windows
from radam_repro.data.lm_corpus import unigram_perplexity
from radam_repro.distributed import shard_rows
from radam_repro.models.lstm_lm import Hidden, LSTMLanguageModel
from radam_repro.tasks.base import Decay, Task, bounded, perplexity


@dataclass
class LSTMConfig:
    embedding_dim: int = 300
    hidden_size: int = 2048
    num_layers: int = 2
    dropout: float = 0.1
    cutoffs: list[int] = field(default_factory=lambda: [4000, 40000, 200000])
    div_value: float = 4.0


@dataclass
class LanguageModelConfig:
    name: str = "lm1b"
    data_dir: str = MISSING
    train_files: list[str] = field(default_factory=lambda: [LM1B_TRAIN])  # globs relative to data_dir
    valid_files: list[str] = field(default_factory=lambda: [LM1B_HELDOUT])
    test_files: list[str] = field(default_factory=list)
    train_lines: list[float] = field(default_factory=lambda: [0.0, 1.0])  # fraction of each file's lines
    valid_lines: list[float] = field(default_factory=lambda: [0.0, 1.0])
    test_lines: list[float] = field(default_factory=lambda: [0.0, 1.0])
    keep_blank_lines: bool = False  # False: One Billion Word; True: WikiText (a blank line is a lone <eos>)
    unk_threshold: int = bounded(3, 0)
    vocab_file: Optional[str] = None
    cache_dir: Optional[str] = None
    batch_size: int = bounded(128, 1)
    bptt: int = bounded(20, 1)
    eval_batch_size: int = bounded(1, 1)
    eval_bptt: int = bounded(128, 1)
    epochs: int = bounded(14, 1)
    decay_epochs: list[int] = field(default_factory=lambda: [9])  # 0-based: ×gamma from the 10th epoch on
    decay_gamma: float = bounded(0.1, 0.0)
    clip_norm: float = bounded(5.0, 0.0)
    model: LSTMConfig = field(default_factory=LSTMConfig)


class LanguageModelTask(Task):
    def __init__(self, cfg: LanguageModelConfig, *, seed: int, device: torch.device):
        self.cfg, self.device = cfg, device
        splits = ("train", "valid", "test")
        self.corpus = open_corpus(
            cfg.data_dir,
            {s: getattr(cfg, f"{s}_files") for s in splits},
            lines={s: getattr(cfg, f"{s}_lines") for s in splits},
            keep_blank=cfg.keep_blank_lines,
            threshold=cfg.unk_threshold,
            vocab_file=cfg.vocab_file,
            cache_dir=cfg.cache_dir,
        )
        self.vocab = self.corpus.vocab
        self.stream = ShardStream(self.corpus.splits["train"], cfg.batch_size, cfg.bptt, seed)
        self.model = LSTMLanguageModel(len(self.vocab), **asdict(cfg.model)).to(device)
        self.steps_per_epoch = self.stream.steps_per_epoch
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.clip_norm = cfg.clip_norm
        self.decay = Decay(
            kind="step", milestones=[e * self.steps_per_epoch for e in cfg.decay_epochs], gamma=cfg.decay_gamma
        )
        self.hidden: Hidden | None = None
        self.position: tuple[int, int] | None = None  # (epoch, index) of the batch that produced self.hidden

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[LMBatch]:
        for batch in self.stream.batches(epoch, start):
            if batch.index == start and not batch.reset and self.position != (epoch, start - 1):
                raise RuntimeError(
                    f"the task's hidden state belongs to batch {self.position} (epoch, index), but training "
                    f"continues at batch {start} of epoch {epoch}; load the task state_dict saved with that step"
                )
            yield batch.to(self.device)

    def shard(self, batch: LMBatch, rank: int, world: int) -> LMBatch:
        """Rank ``rank``'s equal share of the ``batch_size`` token streams: columns of the (bptt, batch) window.

        Each rank carries the hidden state of its own streams; the mean NLL over equal shards
        averages to the global batch's mean exactly.
        """
        return replace(
            batch,
            inputs=shard_rows(batch.inputs, rank, world, dim=1),
            targets=shard_rows(batch.targets, rank, world, dim=1),
        )

    def loss(self, model: nn.Module, batch: LMBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean NLL per token of the window; the hidden state carries on to the next window."""
        log_probs, hidden = model(batch.inputs, batch.targets, None if batch.reset else self.hidden)
        self.hidden = tuple(h.detach() for h in hidden)
        self.position = (batch.epoch, batch.index)
        nll = -log_probs.float().mean()
        return nll, {"ppl": nll.detach().exp(), "ntokens": nll.new_tensor(float(batch.targets.numel()))}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``{split}/loss`` = mean NLL per token over every file of the split, ``{split}/ppl`` = exp(loss)."""
        was_training = model.training
        model.eval()
        results = {}
        for split in ("valid", "test"):
            if split not in self.corpus.splits:
                continue
            total, count = torch.zeros((), dtype=torch.float64, device=self.device), 0
            for tokens in self.corpus.splits[split]:
                hidden = None  # each file is its own stream, as each training shard
                rows = stream_rows(tokens, self.cfg.eval_batch_size, self.cfg.eval_bptt, full_windows=False)
                for inputs, targets in windows(*rows, self.cfg.eval_bptt):
                    log_probs, hidden = model(inputs.to(self.device), targets.to(self.device), hidden)
                    total -= log_probs.double().sum()
                    count += targets.numel()
            if count == 0:
                raise ValueError(f"the {split} split has fewer than task.eval_batch_size+1 tokens per file")
            results[f"{split}/loss"] = total.item() / count
            results[f"{split}/ppl"] = perplexity(results[f"{split}/loss"])
        model.train(was_training)
        return results

    def unigram_perplexity(self, split: str = "valid") -> float:
        """Baseline for ``{split}/ppl``: the split under the unigram model of the vocabulary's training counts."""
        return unigram_perplexity(np.array(self.vocab.counts), np.concatenate(self.corpus.splits[split]))

    def state_dict(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        hidden = state["hidden"]
        self.hidden = None if hidden is None else tuple(h.to(self.device) for h in hidden)
        self.position = None if state["position"] is None else tuple(state["position"])


def build(cfg: DictConfig, *, seed: int, device: torch.device) -> LanguageModelTask:
    """``lm1b`` / ``lm1b_small``; the config goes through :func:`radam_repro.tasks.config`."""
    return LanguageModelTask(OmegaConf.to_object(tasks.config(cfg)), seed=seed, device=device)
