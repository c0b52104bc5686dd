"""One-Billion-Word / WikiText data on the staged files: vocabulary, token arrays, streaming batches, errors."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from radam_repro.data.lm1b import LM1B_HELDOUT, LM1B_TRAIN, ShardStream, cache_root, open_corpus, resolve_files
from radam_repro.data.lm_corpus import EOS, UNK, TextFile, cached_vocabulary, encoded, unigram_perplexity

HELDOUT_0 = LM1B_HELDOUT.replace("?????", "00000")


def staged(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"staged data not found: {path}")
    return path


@pytest.fixture(scope="module")
def lm1b_dir(shared_data) -> Path:
    return staged(shared_data / "lm1b" / "1-billion-word-language-modeling-benchmark-r13output")


@pytest.fixture(scope="module")
def shard(lm1b_dir) -> Path:
    return lm1b_dir / HELDOUT_0


def reference_counts(path: Path, keep_blank: bool = False) -> Counter:
    """Independent count: words of each line plus one <eos> per (non-blank) line."""
    counts = Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if keep_blank or line.strip():
                counts.update(line.split() + [EOS])
    return counts


def test_vocabulary_matches_an_independent_count(shard, tmp_path):
    reference = reference_counts(shard)
    vocab = cached_vocabulary([TextFile(shard)], threshold=3, cache_dir=tmp_path)
    rare = {w for w, c in reference.items() if c <= 3}

    assert reference[EOS] == 6075  # one end-of-sentence per line
    assert sum(reference.values()) == 159_658  # the published 1B test-set size (words + </s>)
    assert set(vocab.words) == {w for w, c in reference.items() if c > 3} | {UNK, EOS}
    by_word = dict(zip(vocab.words, vocab.counts))
    assert all(by_word[w] == reference[w] for w in vocab.words if w != UNK)
    assert by_word[UNK] == sum(reference[w] for w in rare) > 0
    assert by_word[EOS] == 6075
    first_seen = [w for w in reference if w not in rare] + [UNK]  # Counter keeps first-occurrence order
    assert list(vocab.words) == sorted(first_seen, key=lambda w: -by_word[w])  # by count, ties by first occurrence
    assert sum(vocab.counts) == 159_658
    assert set(vocab.encode(sorted(rare))) == {vocab.unk}


def test_vocabulary_is_cached_once_with_threshold_and_inputs_in_its_name(shard, tmp_path):
    vocab = cached_vocabulary([TextFile(shard)], threshold=3, cache_dir=tmp_path)
    (path,) = tmp_path.glob("vocab-t3-*.tsv")
    mtime = path.stat().st_mtime_ns
    assert cached_vocabulary([TextFile(shard)], threshold=3, cache_dir=tmp_path) == vocab
    assert path.stat().st_mtime_ns == mtime  # loaded, not rebuilt
    cached_vocabulary([TextFile(shard, lines=(0.0, 0.5))], threshold=3, cache_dir=tmp_path)
    five = cached_vocabulary([TextFile(shard)], threshold=5, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("vocab-t3-*.tsv"))) == 2 and len(list(tmp_path.glob("vocab-t5-*.tsv"))) == 1
    assert len(five) < len(vocab)


def test_a_vocabulary_built_with_another_threshold_is_refused(lm1b_dir, tmp_path):
    open_corpus(lm1b_dir, {"train": [HELDOUT_0]}, threshold=3, cache_dir=tmp_path)
    (path,) = tmp_path.glob("vocab-t3-*.tsv")
    with pytest.raises(ValueError, match=r"built with unk threshold 3, but task.unk_threshold=5"):
        open_corpus(lm1b_dir, {"train": [HELDOUT_0]}, threshold=5, vocab_file=str(path), cache_dir=tmp_path)


def test_encoded_shard_is_an_int32_memory_map_of_the_text(shard, tmp_path):
    vocab = cached_vocabulary([TextFile(shard)], threshold=3, cache_dir=tmp_path)
    tokens = encoded(TextFile(shard), vocab, tmp_path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.int32
    expected = [vocab.index.get(w, vocab.unk) for line in shard.read_text("utf-8").splitlines() for w in line.split() + [EOS]]
    np.testing.assert_array_equal(tokens, expected)
    assert len(list(tmp_path.glob(f"tokens-{vocab.digest}/{shard.name}-*.npy"))) == 1


def test_line_ranges_split_the_file_without_overlap(shard):
    lines = shard.read_text("utf-8").splitlines()
    train, valid = TextFile(shard, (0.0, 0.9)).read_lines(), TextFile(shard, (0.9, 1.0)).read_lines()
    assert len(train) == int(0.9 * 6075) and train + valid == lines


def test_wikitext_layout_gives_every_line_an_eos(shared_data, tmp_path):
    valid = staged(shared_data / "wikitext-2" / "valid.txt")
    corpus = open_corpus(valid.parent, {"train": ["valid.txt"]}, keep_blank=True, threshold=0, cache_dir=tmp_path)
    (tokens,) = corpus.splits["train"]
    reference = reference_counts(valid, keep_blank=True)
    assert len(tokens) == sum(reference.values()) == 217_646  # the WikiText-2 paper's valid size
    assert dict(zip(corpus.vocab.words, corpus.vocab.counts)) == dict(reference) | {UNK: reference[UNK]}


def batches_by_shard(stream: ShardStream, epoch: int):
    order, out = stream.shard_order(epoch), {}
    position = -1
    for batch in stream.batches(epoch):
        position += batch.reset
        out.setdefault(order[position], []).append(batch)
    return out


def test_stream_yields_every_token_once_in_order_across_rows(shard, tmp_path):
    """Four shards (quarters of the staged file), odd batch/bptt: reconstruct each shard from its windows."""
    vocab = cached_vocabulary([TextFile(shard)], threshold=3, cache_dir=tmp_path)
    quarters = [encoded(TextFile(shard, (i / 4, (i + 1) / 4)), vocab, tmp_path) for i in range(4)]
    batch_size, bptt = 7, 5
    stream = ShardStream(quarters, batch_size, bptt, seed=11)
    word_count = len(shard.read_text("utf-8").split()) + 6075
    assert sum(len(q) for q in quarters) == word_count

    for epoch in range(2):
        batches = list(stream.batches(epoch))
        assert len(batches) == stream.steps_per_epoch and [b.index for b in batches] == list(range(len(batches)))
        assert all(b.inputs.shape == (bptt, batch_size) for b in batches)
        for s, shard_batches in batches_by_shard(stream, epoch).items():
            tokens = np.asarray(quarters[s])
            inputs = np.concatenate([b.inputs.numpy() for b in shard_batches])  # (windows*bptt, rows)
            targets = np.concatenate([b.targets.numpy() for b in shard_batches])
            used = inputs.size
            assert len(tokens) - 1 - batch_size * bptt < used <= len(tokens) - 1  # only the tail is dropped
            np.testing.assert_array_equal(inputs.T.reshape(-1), tokens[:used])  # row after row: the stream
            np.testing.assert_array_equal(targets.T.reshape(-1), tokens[1 : used + 1])
            assert [b.reset for b in shard_batches] == [True] + [False] * (len(shard_batches) - 1)

    orders = [stream.shard_order(e) for e in range(6)]
    assert orders == [ShardStream(quarters, batch_size, bptt, seed=11).shard_order(e) for e in range(6)]
    assert len({tuple(o) for o in orders}) > 1 and all(sorted(o) == [0, 1, 2, 3] for o in orders)


def test_stream_resumes_mid_epoch_at_the_same_batch(shard, tmp_path):
    vocab = cached_vocabulary([TextFile(shard)], threshold=3, cache_dir=tmp_path)
    halves = [encoded(TextFile(shard, (i / 2, (i + 1) / 2)), vocab, tmp_path) for i in range(2)]
    stream = ShardStream(halves, batch_size=16, bptt=20, seed=3)
    full = list(stream.batches(epoch=4))
    boundary = next(i for i, b in enumerate(full) if b.index > 0 and b.reset)
    for start in (1, boundary - 1, boundary, boundary + 2, len(full) - 1):
        resumed = list(stream.batches(epoch=4, start=start))
        assert [b.index for b in resumed] == list(range(start, len(full)))
        assert all(a.reset == b.reset and a.inputs.equal(b.inputs) and a.targets.equal(b.targets)
                   for a, b in zip(resumed, full[start:]))


def test_unigram_perplexity_formula():
    counts, tokens = np.array([2, 1, 1]), np.array([0, 1, 0, 2])
    expected = math.exp(-(2 * math.log(0.5) + 2 * math.log(0.25)) / 4)
    assert unigram_perplexity(counts, tokens) == pytest.approx(expected, rel=1e-12)


def test_cache_goes_to_the_cache_dir_never_into_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RADAM_REPRO_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    (data / "heldout").mkdir(parents=True)
    (data / "heldout" / "part").write_text("a b a\n\nb c a\n", encoding="utf-8")
    corpus = open_corpus(data, {"train": ["heldout/part"]}, threshold=0)
    assert cache_root() == tmp_path / "cache" / "lm"
    assert len(list((tmp_path / "cache" / "lm").glob("vocab-t0-*.tsv"))) == 1
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == [Path("heldout"), Path("heldout/part")]
    monkeypatch.delenv("RADAM_REPRO_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "radam_repro" / "lm"
    assert corpus.vocab.words == ("a", EOS, "b", "c", UNK) and corpus.vocab.counts == (3, 2, 2, 1, 0)
    np.testing.assert_array_equal(corpus.splits["train"][0], [0, 2, 0, 1, 2, 3, 0, 1])  # blank line skipped


def test_missing_shard_folder_names_the_layout_and_the_prepare_script(lm1b_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no train files match .*training-monolingual.*prepare_lm1b\.sh"):
        resolve_files(lm1b_dir, [LM1B_TRAIN], "train")
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(missing))} does not exist.*prepare_lm1b\.sh"):
        open_corpus(missing, {"train": [LM1B_TRAIN]})


@pytest.mark.parametrize("content, problem", [
    (b"", "empty shard"), (b"\n  \n\t\n", "empty shard"),
    (b"some words\x00\x01\x02 here\n", "NUL bytes"), (b"caf\xe9 au lait\n", "not valid UTF-8"),
])
def test_empty_or_binary_shards_are_refused(tmp_path, content, problem):
    (tmp_path / "shard").write_bytes(content)
    with pytest.raises(ValueError, match=rf"shard.*{problem}"):
        open_corpus(tmp_path, {"train": ["shard"]}, cache_dir=tmp_path / "cache")
