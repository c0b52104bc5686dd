"""Parallel text in the prepare-iwslt14.sh layout, read the way fairseq-preprocess/fairseq-train do.

A data folder holds ``{train,valid,test}.{src,tgt}`` (one sentence per line, tokens separated by
spaces, BPE pieces marked by a trailing ``@@``) and the BPE ``code`` file. From it:

* :class:`Dictionary`: fairseq's ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, then the training
  symbols by descending count (ties in code-point order), padded with ``madeupwordNNNN`` to a
  multiple of ``padding_factor`` (8, as ``fairseq-preprocess``); one per language, built from the
  training split once and cached in fairseq's ``dict.<lang>.txt`` format under a key made of the
  training files' sha256;
* :class:`TokenizedText`: every line as token ids plus ``</s>``;
* :func:`batch_by_size`: fairseq's token-bucketed batches, at most ``max_tokens`` tokens including
  padding (``n_sentences * max(len)``, ``len`` = the longer side), sentences sorted by (source,
  target) length with seeded random tie-breaking, sizes rounded down to a multiple of 8;
* :func:`remove_bpe`: fairseq's ``--remove-bpe``.

Multi30k (lowercased tokenised text, no BPE) gets joint BPE learned by subword-nmt on its
training split (:func:`prepare_multi30k`), cached, then goes through the same reader.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from radam_repro.errors import CorruptFile
from radam_repro.run_dir import atomic_write

BOS, PAD, EOS, UNK = 0, 1, 2, 3
SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")
SPLITS = ("train", "valid", "test")
MULTI30K_FILES = {"train": "train", "valid": "val", "test": "test_2016_flickr"}


def default_cache_dir() -> Path:
    """``$RADAM_REPRO_CACHE`` or ``~/.cache/radam_repro``."""
    return Path(os.environ.get("RADAM_REPRO_CACHE", Path.home() / ".cache" / "radam_repro"))


def remove_bpe(line: str, marker: str = "@@ ") -> str:
    """fairseq ``--remove-bpe``: ``(line + " ").replace("@@ ", "").rstrip()``."""
    return (line + " ").replace(marker, "").rstrip()


def files_sha256(paths: Iterable[Path], extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


class Dictionary:
    """fairseq's ``Dictionary``: symbol <-> index, specials first."""

    def __init__(self, symbols: list[str], counts: list[int]):
        self.symbols, self.counts = symbols, counts
        self.indices = {symbol: i for i, symbol in enumerate(symbols)}

    @classmethod
    def build(cls, lines: Iterable[str], padding_factor: int = 8) -> Dictionary:
        counter = Counter(token for line in lines for token in line.split())
        if not counter:
            raise ValueError("empty vocabulary: the training text has no tokens; check the training files")
        ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
        symbols = list(SPECIAL_SYMBOLS) + [symbol for symbol, _ in ranked]
        counts = [0] * len(SPECIAL_SYMBOLS) + [count for _, count in ranked]
        filler = 0
        while len(symbols) % padding_factor:
            symbols.append(f"madeupword{filler:04d}")
            counts.append(0)
            filler += 1
        return cls(symbols, counts)

    @classmethod
    def load(cls, path: Path) -> Dictionary:
        """Read fairseq's ``dict.<lang>.txt`` as ``Dictionary.add_from_file`` does; :class:`CorruptFile` otherwise.

        Each line is ``symbol count`` (specials implied); ``symbol count #fairseq:overwrite`` adds a symbol
        already present (a special, or an earlier line) as a new entry that the symbol then maps to; any other
        repeated symbol is an error, as in fairseq.
        """
        symbols, counts = list(SPECIAL_SYMBOLS), [0] * len(SPECIAL_SYMBOLS)
        seen = set(symbols)
        try:  # as fairseq: readlines() splits at newlines only (str.splitlines would also split at \x0b, \x85, ...)
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
        except UnicodeDecodeError as e:
            raise CorruptFile(path, f"{path} is not UTF-8 text ({e}); it is not a fairseq dict.<lang>.txt") from None
        for number, line in enumerate(lines, 1):
            try:
                symbol, field = line.rstrip().rsplit(" ", 1)
                overwrite = field == "#fairseq:overwrite"
                if overwrite:
                    symbol, field = symbol.rsplit(" ", 1)
                count = int(field)
            except ValueError:
                raise CorruptFile(
                    path, f"{path} line {number}: {line.rstrip()[:80]!r} is not '<symbol> <count> [#fairseq:overwrite]'"
                ) from None
            if symbol in seen and not overwrite:
                raise CorruptFile(
                    path,
                    f"{path} line {number}: symbol {symbol!r} is listed twice; fairseq refuses this too, unless the "
                    "line ends with the flag #fairseq:overwrite",
                )
            seen.add(symbol)
            symbols.append(symbol)
            counts.append(count)
        return cls(symbols, counts)

    def save(self, path: Path) -> None:
        body = zip(self.symbols[len(SPECIAL_SYMBOLS) :], self.counts[len(SPECIAL_SYMBOLS) :])
        atomic_write(Path(path), "".join(f"{symbol} {count}\n" for symbol, count in body))

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.symbols).encode()).hexdigest()

    def encode(self, line: str) -> list[int]:
        """Token ids of a line with ``</s>`` appended; unknown symbols map to ``<unk>``."""
        return [self.indices.get(token, UNK) for token in line.split()] + [EOS]

    def string(self, tokens: Iterable[int]) -> str:
        """Symbols up to the first ``</s>``, padding skipped."""
        words = []
        for token in tokens:
            token = int(token)
            if token == EOS:
                break
            if token != PAD:
                words.append(self.symbols[token])
        return " ".join(words)


class TokenizedText:
    """One side of a split: all sentences' ids in one flat tensor, sentence ``i`` at ``offsets[i]:offsets[i+1]``."""

    def __init__(self, sentences: list[list[int]]):
        self.lengths = np.array([len(s) for s in sentences], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.tokens = torch.tensor([token for sentence in sentences for token in sentence], dtype=torch.int32)

    @classmethod
    def from_flat(cls, tokens: np.ndarray, lengths: np.ndarray) -> TokenizedText:
        """Sentences stored back to back in ``tokens`` with the given ``lengths`` (fairseq's .bin layout)."""
        text = cls.__new__(cls)
        text.lengths = np.asarray(lengths, dtype=np.int64)
        text.offsets = np.concatenate([[0], np.cumsum(text.lengths)])
        text.tokens = torch.from_numpy(np.asarray(tokens).astype(np.int32))
        return text

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


@dataclass
class ParallelSplit:
    src: TokenizedText
    tgt: TokenizedText

    def __len__(self) -> int:
        return len(self.src)

    @property
    def num_tokens(self) -> np.ndarray:
        """fairseq's ``num_tokens``: the longer side, ``</s>`` included."""
        return np.maximum(self.src.lengths, self.tgt.lengths)


@dataclass
class BilingualData:
    data_dir: Path
    src_lang: str
    tgt_lang: str
    src_dict: Dictionary
    tgt_dict: Dictionary
    splits: dict[str, ParallelSplit]

    def lines(self, split: str, lang: str) -> list[str]:
        return read_lines(self.data_dir / f"{split}.{lang}")


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; :class:`CorruptFile` naming it if it is not UTF-8."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]
    except UnicodeDecodeError as e:
        raise CorruptFile(
            path, f"{path} is not UTF-8 text ({e}); restore it or re-run the preparation script"
        ) from None


def check_files(data_dir: Path, names: list[str], how_to_prepare: str) -> None:
    """Raise FileNotFoundError naming every missing file and how to produce them."""
    missing = [name for name in names if not (Path(data_dir) / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"data folder {data_dir} lacks {', '.join(missing)} (expected {', '.join(names)}). {how_to_prepare}"
        )


def load_dictionary(train_file: Path, lang: str, cache_dir: Path, padding_factor: int = 8) -> Dictionary:
    """The dictionary of one training file, built once and cached as ``<cache>/dict-<sha>/dict.<lang>.txt``."""
    key = files_sha256([train_file], extra=f"padding_factor={padding_factor}")[:16]
    path = Path(cache_dir) / f"dict-{key}" / f"dict.{lang}.txt"
    if path.is_file():
        return Dictionary.load(path)
    try:
        dictionary = Dictionary.build(read_lines(train_file), padding_factor)
    except ValueError as e:
        raise CorruptFile(train_file, f"{train_file}: {e}") from None
    dictionary.save(path)
    return dictionary


def load_bilingual(
    data_dir: Path,
    src_lang: str,
    tgt_lang: str,
    *,
    splits: Iterable[str] = SPLITS,
    dict_split: str = "train",
    cache_dir: Path | None = None,
    padding_factor: int = 8,
    how_to_prepare: str = "Run `bash launch/prepare_iwslt14.sh` (see its --help) to produce this layout.",
) -> BilingualData:
    """Read ``{split}.{lang}`` files of ``data_dir`` with dictionaries built from ``dict_split``."""
    data_dir, splits = Path(data_dir), list(splits)
    names = [f"{split}.{lang}" for split in dict.fromkeys([dict_split, *splits]) for lang in (src_lang, tgt_lang)]
    check_files(data_dir, names, how_to_prepare)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    src_dict = load_dictionary(data_dir / f"{dict_split}.{src_lang}", src_lang, cache_dir, padding_factor)
    tgt_dict = load_dictionary(data_dir / f"{dict_split}.{tgt_lang}", tgt_lang, cache_dir, padding_factor)
    loaded = {}
    for split in splits:
        src_lines, tgt_lines = (
            read_lines(data_dir / f"{split}.{src_lang}"),
            read_lines(data_dir / f"{split}.{tgt_lang}"),
        )
        if len(src_lines) != len(tgt_lines):
            raise ValueError(
                f"{data_dir}/{split}.{src_lang} has {len(src_lines)} lines but {split}.{tgt_lang} has {len(tgt_lines)}: "
                "the two sides must be line-aligned; re-run the preparation script"
            )
        src = TokenizedText([src_dict.encode(line) for line in src_lines])
        tgt = TokenizedText([tgt_dict.encode(line) for line in tgt_lines])
        files = [data_dir / f"{split}.{lang}" for lang in (src_lang, tgt_lang)]
        loaded[split] = checked_split(ParallelSplit(src, tgt), split, files)
    return BilingualData(data_dir, src_lang, tgt_lang, src_dict, tgt_dict, loaded)


def checked_split(split: ParallelSplit, name: str, files: list[Path]) -> ParallelSplit:
    """``split`` itself; :class:`CorruptFile` naming its ``files`` if it has no sentence (nothing to train or score)."""
    if not len(split):
        raise CorruptFile(
            files[0],
            f"the {name} split is empty ({', '.join(map(str, files))} hold no sentences); restore the files or "
            "choose another split (task.train_split / task.test_split)",
        )
    return split


def length_sorted_indices(split: ParallelSplit, seed: int | None) -> np.ndarray:
    """fairseq ``LanguagePairDataset.ordered_indices``: by source then target length, random ties if seeded."""
    indices = np.arange(len(split)) if seed is None else np.random.RandomState(seed).permutation(len(split))
    indices = indices[np.argsort(split.tgt.lengths[indices], kind="mergesort")]
    return indices[np.argsort(split.src.lengths[indices], kind="mergesort")]


def batch_by_size(
    indices: np.ndarray,
    num_tokens: np.ndarray,
    max_tokens: int | None,
    max_sentences: int | None = None,
    required_batch_size_multiple: int = 8,
) -> list[np.ndarray]:
    """fairseq ``data_utils.batch_by_size``: consecutive ``indices`` while ``n * max_len <= max_tokens``.

    A full batch keeps a multiple of ``required_batch_size_multiple`` sentences (or its
    remainder if smaller) and passes the rest on to the next batch.
    """
    max_tokens = max_tokens or np.iinfo(np.int64).max
    max_sentences = max_sentences or np.iinfo(np.int64).max
    batches, batch, lengths = [], [], []
    for index in indices:
        length = int(num_tokens[index])
        if length > max_tokens:
            raise ValueError(
                f"sentence {index} has {length} tokens, more than max_tokens={max_tokens}; raise max_tokens"
            )
        lengths.append(length)
        if batch and (len(batch) == max_sentences or (len(batch) + 1) * max(lengths) > max_tokens):
            multiple = required_batch_size_multiple
            keep = max(multiple * (len(batch) // multiple), len(batch) % multiple)
            batches.append(np.array(batch[:keep]))
            batch, lengths = batch[keep:], lengths[keep:]
        batch.append(int(index))
    if batch:
        batches.append(np.array(batch))
    return batches


def collate(split: ParallelSplit, indices: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A right-padded batch: ``src_tokens``, ``prev_output_tokens`` (``</s>`` + target[:-1]), ``target``, ``ntokens``."""

    def pad(sentences: list[torch.Tensor]) -> torch.Tensor:
        return torch.nn.utils.rnn.pad_sequence(sentences, batch_first=True, padding_value=PAD)

    targets = [split.tgt[i].long() for i in indices]
    src = pad([split.src[i].long() for i in indices])
    target = pad(targets)
    prev = pad([torch.cat([t[-1:], t[:-1]]) for t in targets])  # fairseq move_eos_to_beginning
    batch = {"src_tokens": src, "prev_output_tokens": prev, "target": target, "indices": torch.as_tensor(indices)}
    batch["ntokens"] = target.ne(PAD).sum()
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def learn_joint_bpe(train_files: list[Path], code_path: Path, merges: int) -> None:
    """subword-nmt ``learn_bpe -s merges`` on the concatenated training files (prepare-iwslt14.sh)."""
    from subword_nmt.learn_bpe import learn_bpe

    lines = [line for path in train_files for line in read_lines(path)]
    codes = io.StringIO()
    learn_bpe([line + "\n" for line in lines], codes, merges)
    atomic_write(code_path, codes.getvalue())


def apply_bpe(code_path: Path, lines: Iterable[str]) -> list[str]:
    """subword-nmt ``apply_bpe -c code`` on each line."""
    from subword_nmt.apply_bpe import BPE

    with open(code_path, encoding="utf-8") as codes:
        bpe = BPE(codes)
    return [bpe.process_line(line + "\n").rstrip("\n") for line in lines]


def prepare_multi30k(tok_dir: Path, src_lang: str, tgt_lang: str, merges: int, cache_dir: Path | None = None) -> Path:
    """Multi30k task 1 ``tok/*.lc.norm.tok.*`` with joint BPE (learned on train) in the prepare-iwslt14.sh layout.

    Returns the cached folder ``<cache>/multi30k-bpe<merges>-<sha>/`` with ``{train,valid,test}.{src,tgt}`` and ``code``.
    """
    tok_dir = Path(tok_dir)
    names = {
        (split, lang): f"{stem}.lc.norm.tok.{lang}"
        for split, stem in MULTI30K_FILES.items()
        for lang in (src_lang, tgt_lang)
    }
    check_files(
        tok_dir,
        list(names.values()),
        "Point task.data_dir at multi30k/data/task1/tok of https://github.com/multi30k/dataset.",
    )
    sources = [tok_dir / name for name in names.values()]
    out_dir = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / (
        f"multi30k-bpe{merges}-" + files_sha256(sources, extra=f"merges={merges}")[:16]
    )
    done = out_dir / "DONE"
    if done.is_file():
        return out_dir
    code = out_dir / "code"
    learn_joint_bpe([tok_dir / names["train", src_lang], tok_dir / names["train", tgt_lang]], code, merges)
    for (split, lang), name in names.items():
        atomic_write(
            out_dir / f"{split}.{lang}", "".join(line + "\n" for line in apply_bpe(code, read_lines(tok_dir / name)))
        )
    done.write_text("ok\n")
    return out_dir
