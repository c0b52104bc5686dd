"""fairseq ``data-bin`` folders (``fairseq-preprocess`` output) read with numpy, without fairseq.

A folder for ``src``-``tgt`` holds ``dict.{src,tgt}.txt`` and, per split, ``{split}.{src}-{tgt}.{lang}.idx``
and ``.bin`` (``{split}.{tgt}-{src}.*`` is accepted too, as fairseq does). The ``.idx`` file of
fairseq's default ``mmap`` dataset implementation (``MMapIndexedDataset``) is::

    b"MMIDIDX\\x00\\x00"   magic (9 bytes)
    <Q version (1)   <B dtype code   <Q n   int32 sizes[n]   int64 byte pointers[n]   (document index)

and the ``.bin`` file is the sentences' token ids (``</s>`` included) back to back in that dtype.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from radam_repro.data.bilingual import EOS, PAD, UNK, BilingualData, Dictionary, ParallelSplit, TokenizedText

MAGIC = b"MMIDIDX\x00\x00"
DTYPES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float64,
    8: np.uint16,
    9: np.uint32,
    10: np.uint64,
}


def read_indexed(prefix: Path) -> TokenizedText:
    """All sentences of ``prefix.idx``/``prefix.bin`` (fairseq ``MMapIndexedDataset``), as token ids."""
    index = Path(f"{prefix}.idx").read_bytes()
    if index[: len(MAGIC)] != MAGIC:
        raise ValueError(
            f"{prefix}.idx is not a fairseq mmap index (magic {index[:9]!r}); re-run fairseq-preprocess with "
            "the default --dataset-impl mmap"
        )
    (version,), code, (n,) = struct.unpack_from("<Q", index, 9), index[17], struct.unpack_from("<Q", index, 18)
    if version != 1 or code not in DTYPES:
        raise ValueError(f"{prefix}.idx: unsupported version {version} or dtype code {code}")
    dtype = np.dtype(DTYPES[code])
    sizes = np.frombuffer(index, np.int32, n, 26).astype(np.int64)
    pointers = np.frombuffer(index, np.int64, n, 26 + 4 * n)
    data = np.fromfile(f"{prefix}.bin", dtype=dtype)
    starts = pointers // dtype.itemsize
    if not np.array_equal(starts, np.concatenate([[0], np.cumsum(sizes)[:-1]])):  # not back to back: gather
        data = np.concatenate([data[s : s + k] for s, k in zip(starts, sizes)]) if n else data[:0]
    return TokenizedText.from_flat(data[: int(sizes.sum())], sizes)


def split_prefix(data_dir: Path, split: str, src: str, tgt: str, lang: str) -> Path | None:
    """``{split}.{src}-{tgt}.{lang}`` or ``{split}.{tgt}-{src}.{lang}``, whichever has an ``.idx``; else None."""
    for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
        prefix = Path(data_dir) / f"{split}.{pair}.{lang}"
        if Path(f"{prefix}.idx").is_file():
            return prefix
    return None


def is_data_bin(data_dir: Path, src: str, tgt: str) -> bool:
    """Whether ``data_dir`` is a fairseq data-bin folder for ``src``-``tgt``: it has ``dict.{src,tgt}.txt``."""
    return all((Path(data_dir) / f"dict.{lang}.txt").is_file() for lang in (src, tgt))


class BinarizedData(BilingualData):
    """:class:`BilingualData` whose text lines are decoded from the ids (as ``fairseq-generate`` prints targets)."""

    def lines(self, split: str, lang: str) -> list[str]:
        side = self.splits[split].src if lang == self.src_lang else self.splits[split].tgt
        dictionary = self.src_dict if lang == self.src_lang else self.tgt_dict
        return [decode(dictionary, side[i]) for i in range(len(side))]


def decode(dictionary: Dictionary, tokens: Iterable[int]) -> str:
    """fairseq ``Dictionary.string(tokens, escape_unk=True)``: symbols before ``</s>``, ``<unk>`` as ``<<unk>>``."""
    words = []
    for token in map(int, tokens):
        if token == EOS:
            break
        if token != PAD:
            words.append("<<unk>>" if token == UNK else dictionary.symbols[token])
    return " ".join(words)


def load_data_bin(data_dir: Path, src_lang: str, tgt_lang: str, splits: Iterable[str]) -> BinarizedData:
    """The dictionaries and ``splits`` of a fairseq data-bin folder; errors name the missing files."""
    data_dir, splits = Path(data_dir), list(splits)
    dicts = [Dictionary.load(data_dir / f"dict.{lang}.txt") for lang in (src_lang, tgt_lang)]
    loaded, missing = {}, []
    for split in splits:
        prefixes = [split_prefix(data_dir, split, src_lang, tgt_lang, lang) for lang in (src_lang, tgt_lang)]
        if None in prefixes:
            missing.append(f"{split}.{src_lang}-{tgt_lang}.{{{src_lang},{tgt_lang}}}.{{bin,idx}}")
            continue
        src, tgt = (read_indexed(prefix) for prefix in prefixes)
        if len(src) != len(tgt):
            raise ValueError(f"{data_dir}: split {split} has {len(src)} source but {len(tgt)} target sentences")
        for side, dictionary, prefix in ((src, dicts[0], prefixes[0]), (tgt, dicts[1], prefixes[1])):
            if len(side.tokens) and int(side.tokens.max()) >= len(dictionary):
                raise ValueError(
                    f"{prefix}.bin holds ids beyond its dictionary ({len(dictionary)} symbols): "
                    "the data and dict.*.txt come from different fairseq-preprocess runs"
                )
        loaded[split] = ParallelSplit(src, tgt)
    if missing:
        raise FileNotFoundError(
            f"fairseq data-bin folder {data_dir} lacks {', '.join(missing)}; binarise those "
            f"splits with fairseq-preprocess (--trainpref/--validpref/--testpref) or pick "
            f"others with task.train_split / task.test_split"
        )
    return BinarizedData(data_dir, src_lang, tgt_lang, dicts[0], dicts[1], loaded)
