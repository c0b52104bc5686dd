"""One Billion Word (and WikiText) for the LSTM language model: file layout, caching, streaming batches.

Layout (the official archive, unpacked under ``data_dir``)::

    1-billion-word-language-modeling-benchmark-r13output/
      training-monolingual.tokenized.shuffled/news.en-000NN-of-00100        (99 training shards)
      heldout-monolingual.tokenized.shuffled/news.en.heldout-000NN-of-00050 (50 held-out shards)

WikiText-2/103 (``train.txt valid.txt test.txt`` or ``wiki.{train,valid,test}.tokens``) goes through the
same code with ``keep_blank=True``. The vocabulary and the encoded shards are cached under
``task.cache_dir``, else ``$RADAM_REPRO_CACHE/lm``, else the user's cache folder (``~/.cache/radam_repro/lm``):
never inside the data folder, which clusters often share read-only.

Training batches follow the official ``LargeDataset``: a shard's stream t_0..t_n is cut into
``batch_size`` contiguous rows of W·bptt tokens (W = ⌊n / (batch_size·bptt)⌋, the shorter tail
dropped); window j of row b holds inputs t[bR + j·bptt : bR + (j+1)·bptt] (R = W·bptt) and the
targets one token later, so every kept token is an input exactly once per epoch and the hidden
state of row b carries from window j to j+1. Shards come in a (seed, epoch)-seeded order.

Preparing the full corpus once: ``python -m radam_repro.data.lm1b --data-dir DIR`` (see
``launch/prepare_lm1b.sh``).
"""

from __future__ import annotations

import argparse
import bisect
import os
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from radam_repro.data.bilingual import default_cache_dir
from radam_repro.data.lm_corpus import TextFile, Vocabulary, cached_vocabulary, encoded

LM1B_ROOT = "1-billion-word-language-modeling-benchmark-r13output"
LM1B_TRAIN = "training-monolingual.tokenized.shuffled/news.en-?????-of-00100"
LM1B_HELDOUT = "heldout-monolingual.tokenized.shuffled/news.en.heldout-?????-of-00050"
LAYOUT_HELP = (f"the One-Billion-Word layout {LM1B_ROOT}/{{{LM1B_TRAIN}, {LM1B_HELDOUT}}} "
               "(download and encode it with launch/prepare_lm1b.sh), or WikiText's train/valid/test.txt")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$RADAM_REPRO_CACHE/lm``, else ``~/.cache/radam_repro/lm``."""
    return Path(cache_dir) if cache_dir else default_cache_dir() / "lm"


def resolve_files(data_dir: Path, patterns: Sequence[str], split: str, lines=(0.0, 1.0), keep_blank=False) -> list[TextFile]:
    """The files matching ``patterns`` (globs relative to ``data_dir``), sorted, each restricted to ``lines``."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"language-model data folder {data_dir} does not exist; it should hold "
                                f"{LAYOUT_HELP}; set task.data_dir (or RADAM_REPRO_DATA) to it")
    found = []
    for pattern in patterns:
        matches = sorted(p for p in data_dir.glob(pattern) if p.is_file())
        if not matches:
            raise FileNotFoundError(f"no {split} files match {pattern!r} under {data_dir}; expected "
                                    f"{LAYOUT_HELP}; or set task.{split}_files")
        found += matches
    start, end = lines
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"task.{split}_lines={list(lines)} must be fractions 0 <= start < end <= 1")
    return [TextFile(p, (float(start), float(end)), keep_blank) for p in found]


@dataclass
class Corpus:
    """A vocabulary and, per split, the token arrays of its files (read-only memory maps)."""

    vocab: Vocabulary
    splits: dict[str, list[np.ndarray]]


def open_corpus(data_dir: str | os.PathLike, files: dict[str, Sequence[str]], *, lines: dict[str, Sequence[float]] | None = None,
                keep_blank: bool = False, threshold: int = 3, vocab_file: str | None = None,
                cache_dir: str | None = None) -> Corpus:
    """Resolve ``files[split]`` globs, build (or load) the vocabulary from ``train``, encode every file once."""
    data_dir, lines = Path(data_dir), lines or {}
    if not files.get("train"):
        raise ValueError("no training files given: set task.train_files (globs relative to task.data_dir)")
    text_files = {split: resolve_files(data_dir, patterns, split, lines.get(split, (0.0, 1.0)), keep_blank)
                  for split, patterns in files.items() if patterns}
    cache = cache_root(cache_dir)
    if vocab_file:
        vocab = Vocabulary.load(Path(vocab_file), threshold)
    else:
        vocab = cached_vocabulary(text_files["train"], threshold, cache)
    return Corpus(vocab, {split: [encoded(f, vocab, cache) for f in fs] for split, fs in text_files.items()})


@dataclass
class LMBatch:
    """One BPTT window: ``inputs`` and ``targets`` of shape (bptt, batch_size)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    reset: bool  # first window of a shard: the hidden state starts from zero
    epoch: int
    index: int  # batch index within the epoch

    def to(self, device: torch.device) -> LMBatch:
        return LMBatch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True),
                       self.reset, self.epoch, self.index)


def stream_rows(tokens: np.ndarray, rows: int, bptt: int, full_windows: bool) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets of shape (rows, R): row b is the contiguous slice t[bR : (b+1)R] (targets +1).

    R = ⌊(n−1)/rows⌋, cut to a multiple of ``bptt`` when ``full_windows``; views into ``tokens``.
    """
    length = (len(tokens) - 1) // rows
    if full_windows:
        length -= length % bptt
    used = rows * length
    return tokens[:used].reshape(rows, length), tokens[1 : used + 1].reshape(rows, length)


def windows(inputs: np.ndarray, targets: np.ndarray, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive (≤bptt, rows) int64 windows over the columns of ``stream_rows``' output."""
    for start in range(0, inputs.shape[1], bptt):
        yield (torch.from_numpy(inputs[:, start : start + bptt].T.astype(np.int64)),
               torch.from_numpy(targets[:, start : start + bptt].T.astype(np.int64)))


class ShardStream:
    """Training batches over token shards, shard order shuffled per (seed, epoch), resumable by batch index."""

    def __init__(self, shards: Sequence[np.ndarray], batch_size: int, bptt: int, seed: int):
        self.shards, self.batch_size, self.bptt, self.seed = list(shards), batch_size, bptt, seed
        self.windows = [(len(s) - 1) // (batch_size * bptt) if len(s) else 0 for s in self.shards]
        self.steps_per_epoch = sum(self.windows)
        if self.steps_per_epoch == 0:
            tokens = sum(len(s) for s in self.shards)
            raise ValueError(f"the training split has {tokens} tokens, fewer than batch_size*bptt+1 = "
                             f"{batch_size * bptt + 1} in every shard; lower task.batch_size or task.bptt")

    def shard_order(self, epoch: int) -> list[int]:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.shards)).tolist()

    def batches(self, epoch: int, start: int = 0) -> Iterator[LMBatch]:
        """Batches ``start``, ``start+1``, ... of ``epoch``, reading only the shards from ``start`` on."""
        order = self.shard_order(epoch)
        ends = list(accumulate(self.windows[s] for s in order))
        first = bisect.bisect_right(ends, start)
        for position in range(first, len(order)):
            shard = order[position]
            offset = ends[position] - self.windows[shard]
            inputs, targets = stream_rows(self.shards[shard], self.batch_size, self.bptt, full_windows=True)
            skip = max(0, start - offset)
            for j, (x, y) in enumerate(windows(inputs[:, skip * self.bptt :], targets[:, skip * self.bptt :], self.bptt), skip):
                yield LMBatch(x, y, reset=(j == 0), epoch=epoch, index=offset + j)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the One-Billion-Word vocabulary and encode every shard once.")
    parser.add_argument("--data-dir", required=True, help=f"the folder holding {LM1B_ROOT}/ (or that folder itself)")
    parser.add_argument("--threshold", type=int, default=3, help="words seen at most this often become <unk>")
    parser.add_argument("--cache-dir", default=None,
                        help="where to cache (default: $RADAM_REPRO_CACHE/lm, else ~/.cache/radam_repro/lm)")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    if (data_dir / LM1B_ROOT).is_dir():
        data_dir = data_dir / LM1B_ROOT
    corpus = open_corpus(data_dir, {"train": [LM1B_TRAIN], "valid": [LM1B_HELDOUT]},
                         threshold=args.threshold, cache_dir=args.cache_dir)
    sizes = {split: sum(len(a) for a in arrays) for split, arrays in corpus.splits.items()}
    print(f"vocabulary: {len(corpus.vocab)} words (threshold {args.threshold}); tokens: {sizes}; "
          f"cache: {cache_root(args.cache_dir)}")


if __name__ == "__main__":
    main()
