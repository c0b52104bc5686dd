"""fairseq ``data-bin`` folders (``fairseq-preprocess`` output) read with numpy, without fairseq.

A folder for ``src``-``tgt`` holds ``dict.{src,tgt}.txt`` and, per split, ``{split}.{src}-{tgt}.{lang}.idx``
and ``.bin`` (``{split}.{tgt}-{src}.*`` is accepted too, as fairseq does). The ``.idx`` file of
fairseq's default ``mmap`` dataset implementation (``MMapIndexedDataset``) is::

    b"MMIDIDX\\x00\\x00"   magic (9 bytes)
    <Q version (1)   <B dtype code   <Q n   int32 sizes[n]   int64 byte pointers[n]

and the ``.bin`` file is the sentences' token ids (``</s>`` included) back to back in that dtype. A pair
whose sizes do not match (a cut or damaged file) or whose ids fall outside the dictionary is refused
with :class:`~radam_repro.errors.CorruptFile` naming the file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from radam_repro.data.bilingual import (
    EOS,
    PAD,
    UNK,
    BilingualData,
    Dictionary,
    ParallelSplit,
    TokenizedText,
    checked_split,
)
from radam_repro.errors import CorruptFile

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


HEADER = len(MAGIC) + 8 + 1 + 8
REDO = "re-run fairseq-preprocess for this split (or restore the file)"


def read_indexed(prefix: Path, vocab_size: int | None = None) -> TokenizedText:
    """All sentences of ``prefix.idx``/``prefix.bin`` (fairseq ``MMapIndexedDataset``), as token ids.

    The index must describe the ``.bin`` file byte for byte and every id must lie in ``[0, vocab_size)``
    (``int32`` without a dictionary); else :class:`CorruptFile` names the file.
    """
    idx, bin_path = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    index = idx.read_bytes()
    if index[: len(MAGIC)] != MAGIC:
        raise CorruptFile(
            idx,
            f"{idx} is not a fairseq mmap index (magic {index[:9]!r}); re-run fairseq-preprocess with "
            "the default --dataset-impl mmap",
        )
    if len(index) < HEADER:
        raise CorruptFile(idx, f"{idx} is cut short ({len(index)} bytes, the header alone has {HEADER}); {REDO}")
    (version,), code, (n,) = struct.unpack_from("<Q", index, 9), index[17], struct.unpack_from("<Q", index, 18)
    if version != 1 or code not in DTYPES:
        raise CorruptFile(idx, f"{idx}: unsupported version {version} or dtype code {code}; {REDO}")
    if len(index) != HEADER + 12 * n:
        raise CorruptFile(
            idx,
            f"{idx} claims {n} sentences ({HEADER + 12 * n} bytes) but has {len(index)} bytes: it is damaged; {REDO}",
        )
    dtype = np.dtype(DTYPES[code])
    sizes = np.frombuffer(index, np.int32, n, HEADER).astype(np.int64)
    pointers = np.frombuffer(index, np.int64, n, HEADER + 4 * n)
    ends = np.cumsum(sizes) * dtype.itemsize
    if n and (sizes.min() < 0 or not np.array_equal(pointers, ends - sizes * dtype.itemsize)):
        raise CorruptFile(
            idx, f"{idx} holds sentence sizes and offsets that disagree (fairseq writes them back to back): {REDO}"
        )
    expected, actual = int(ends[-1]) if n else 0, bin_path.stat().st_size
    if actual != expected:
        raise CorruptFile(
            bin_path,
            f"{bin_path} has {actual} bytes but its index {idx} describes {expected}: one of the two is cut short, "
            f"damaged or from another run; {REDO}",
        )
    tokens = np.fromfile(bin_path, dtype=dtype)
    limit = np.iinfo(np.int32).max + 1 if vocab_size is None else vocab_size
    valid = (tokens >= 0) & (tokens < limit)
    if dtype.kind == "f":  # fairseq's float64 codes: ids must still be whole numbers
        valid &= tokens == np.floor(tokens)
    bad = tokens[~valid]
    if len(bad):
        raise CorruptFile(
            bin_path,
            f"{bin_path} holds token ids outside its dictionary's 0..{limit - 1} ({', '.join(map(str, bad[:5]))}): "
            "it is damaged, or the data and dict.*.txt come from different fairseq-preprocess runs",
        )
    return TokenizedText.from_flat(tokens, sizes)


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
        src, tgt = (read_indexed(prefix, len(dictionary)) for prefix, dictionary in zip(prefixes, dicts))
        if len(src) != len(tgt):
            raise CorruptFile(
                f"{prefixes[1]}.idx",
                f"{prefixes[0]}.idx holds {len(src)} sentences but {prefixes[1]}.idx holds {len(tgt)}: "
                f"the two sides of split {split} must align; {REDO}",
            )
        loaded[split] = checked_split(ParallelSplit(src, tgt), split, [Path(f"{p}.bin") for p in prefixes])
    if missing:
        raise FileNotFoundError(
            f"fairseq data-bin folder {data_dir} lacks {', '.join(missing)}; binarise those "
            f"splits with fairseq-preprocess (--trainpref/--validpref/--testpref) or pick "
            f"others with task.train_split / task.test_split"
        )
    return BinarizedData(data_dir, src_lang, tgt_lang, dicts[0], dicts[1], loaded)
