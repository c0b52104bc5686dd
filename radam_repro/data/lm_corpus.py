"""Word-level corpora for language modelling: text files -> vocabulary -> cached token arrays.

Follows the official One-Billion-Word preprocessing of the RAdam code (``gene_map.py``,
``encode_data2folder.py``): a line's tokens are ``line.split()`` followed by the end-of-line token
``<eos>`` (their ``'\\n'``); words seen at most ``threshold`` times in the training files become
``<unk>``; ids are sorted by count, most frequent first (ties: first occurrence), which is the
order an adaptive softmax's cutoffs rely on. Token arrays are ``int32`` ``.npy`` files, written
once (atomically) and read back with ``np.load(mmap_mode="r")``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radam_repro.run_dir import atomic_write

EOS, UNK = "<eos>", "<unk>"
VOCAB_FORMAT = "radam_repro.lm_vocab/1"


@dataclass(frozen=True)
class TextFile:
    """One tokenised text file, or the fraction ``lines = (start, end)`` of its lines.

    ``keep_blank=False`` skips blank lines (One Billion Word, as the official code);
    ``True`` gives a blank line a lone ``<eos>`` (WikiText, matching its published token counts).
    """

    path: Path
    lines: tuple[float, float] = (0.0, 1.0)
    keep_blank: bool = False

    def read_lines(self) -> list[str]:
        """The selected lines; a clear error for an empty, binary or non-UTF-8 file."""
        data = self.path.read_bytes()
        if b"\0" in data:
            raise ValueError(
                f"{self.path} contains NUL bytes: it is a binary file, not a tokenised text "
                "shard; re-extract the archive (see launch/prepare_lm1b.sh)"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{self.path} is not valid UTF-8 ({err}); re-extract the archive (see launch/prepare_lm1b.sh)"
            ) from None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline ends the last line
        if not self.keep_blank:
            lines = [line for line in lines if line and not line.isspace()]
        if not any(line.split() for line in lines):
            raise ValueError(
                f"{self.path} holds no words (empty shard); re-extract the archive (see launch/prepare_lm1b.sh)"
            )
        start, end = self.lines
        selected = lines[int(start * len(lines)) : int(end * len(lines))]
        if not selected:
            raise ValueError(
                f"lines {list(self.lines)} of {self.path} ({len(lines)} lines) select none; widen the range"
            )
        return selected

    def tokens(self, lines_per_chunk: int = 100_000) -> Iterator[list[str]]:
        """The selection's tokens (each line's words, then ``<eos>``), in chunks of lines to bound memory."""
        lines = self.read_lines()
        for start in range(0, len(lines), lines_per_chunk):
            yield f" {EOS} ".join(lines[start : start + lines_per_chunk]).split() + [EOS]

    def fingerprint(self) -> str:
        """Identifies the selection cheaply: name, size, line range and hashes of the first and last 64 KiB."""
        digest = hashlib.sha256(f"{self.path.name}|{self.lines}|{self.keep_blank}|".encode())
        size = self.path.stat().st_size
        with self.path.open("rb") as f:
            digest.update(f"{size}|".encode() + f.read(1 << 16))
            f.seek(max(0, size - (1 << 16)))
            digest.update(f.read())
        return digest.hexdigest()[:16]


def fingerprint(files: Iterable[TextFile]) -> str:
    return hashlib.sha256("|".join(f.fingerprint() for f in files).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Vocabulary:
    """Words by id (most frequent first) with their training counts (``<unk>`` holds the rare words' total)."""

    words: tuple[str, ...]
    counts: tuple[int, ...]
    threshold: int
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "index", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    @property
    def eos(self) -> int:
        return self.index[EOS]

    @property
    def unk(self) -> int:
        return self.index[UNK]

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.words).encode()).hexdigest()[:16]

    @classmethod
    def from_counts(cls, counts: Counter, threshold: int) -> Vocabulary:
        """Keep words with count > threshold; the rest (and a literal ``<unk>``) pool into ``<unk>``."""
        kept = {w: c for w, c in counts.items() if (c > threshold or w == EOS) and w != UNK}
        kept.setdefault(EOS, 0)
        kept[UNK] = counts.get(UNK, 0) + sum(c for w, c in counts.items() if c <= threshold and w not in (EOS, UNK))
        ordered = sorted(kept.items(), key=lambda wc: -wc[1])  # stable: ties keep first occurrence
        return cls(tuple(w for w, _ in ordered), tuple(c for _, c in ordered), threshold)

    def encode(self, tokens: list[str]) -> list[int]:
        get, unk = self.index.get, self.unk
        return [get(w, unk) for w in tokens]

    def save(self, path: Path, inputs: str) -> None:
        """Text file: a JSON header line, then ``word<TAB>count`` per id."""
        header = json.dumps({"format": VOCAB_FORMAT, "threshold": self.threshold, "inputs": inputs, "size": len(self)})
        body = "".join(f"{w}\t{c}\n" for w, c in zip(self.words, self.counts))
        atomic_write(path, (header + "\n" + body).encode("utf-8"))

    @classmethod
    def load(cls, path: Path, threshold: int) -> Vocabulary:
        """Load a saved vocabulary; refuse one built with another ``<unk>`` threshold."""
        with path.open(encoding="utf-8") as f:
            header = json.loads(f.readline())
            if header.get("format") != VOCAB_FORMAT:
                raise ValueError(f"{path} is not a radam_repro vocabulary (header {header}); delete it to rebuild")
            if header["threshold"] != threshold:
                raise ValueError(
                    f"vocabulary {path} was built with unk threshold {header['threshold']}, but "
                    f"task.unk_threshold={threshold}; set task.unk_threshold={header['threshold']}, "
                    "or point task.vocab_file elsewhere / delete it so that it is rebuilt"
                )
            rows = [line.rstrip("\n").split("\t") for line in f]
        return cls(tuple(w for w, _ in rows), tuple(int(c) for _, c in rows), threshold)


def count_words(files: Iterable[TextFile]) -> Counter:
    """Word counts over ``files`` in order; ``<eos>`` counts the lines."""
    counts: Counter = Counter({EOS: 0})
    for text_file in files:
        for tokens in text_file.tokens():
            counts.update(tokens)
    return counts


def cached_vocabulary(files: list[TextFile], threshold: int, cache_dir: Path) -> Vocabulary:
    """The vocabulary of ``files``, built once and cached as ``vocab-t{threshold}-{inputs hash}.tsv``."""
    inputs = fingerprint(files)
    path = cache_dir / f"vocab-t{threshold}-{inputs}.tsv"
    if path.exists():
        return Vocabulary.load(path, threshold)
    vocab = Vocabulary.from_counts(count_words(files), threshold)
    vocab.save(path, inputs)
    return vocab


def encoded(text_file: TextFile, vocab: Vocabulary, cache_dir: Path) -> np.ndarray:
    """The file's token ids as a read-only memory map, encoding it once into ``cache_dir``."""
    path = cache_dir / f"tokens-{vocab.digest}" / f"{text_file.path.name}-{text_file.fingerprint()}.npy"
    if not path.exists():
        tokens = np.concatenate([np.array(vocab.encode(tokens), dtype=np.int32) for tokens in text_file.tokens()])
        atomic_write(path, lambda f: np.save(f, tokens))
    return np.load(path, mmap_mode="r")


def unigram_perplexity(counts: np.ndarray, tokens: np.ndarray) -> float:
    """Perplexity of ``tokens`` under the maximum-likelihood unigram model p(w) = c(w) / sum(c)."""
    log_probs = np.log(np.asarray(counts, dtype=np.float64) / np.sum(counts))
    return math.exp(-float(np.mean(log_probs[np.asarray(tokens)])))
