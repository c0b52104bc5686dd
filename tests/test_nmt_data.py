"""Parallel data: the prepare-iwslt14.sh reader, fairseq dictionaries and batches, Multi30k BPE, synthetic task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from radam_repro.data.bilingual import (
    Dictionary,
    batch_by_size,
    load_bilingual,
    prepare_multi30k,
    read_lines,
    remove_bpe,
)
from radam_repro.data.synthetic_translation import SyntheticTranslation
from radam_repro.tasks.translation import build, build_synthetic

torch.set_num_threads(1)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def iwslt_data(iwslt, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return load_bilingual(iwslt, "de", "en", splits=["valid", "test"], dict_split="valid", cache_dir=cache)


def test_staged_iwslt_line_and_token_counts_match_fairseq_preprocess(iwslt_data):
    """fairseq-preprocess logs (tokens include one </s> per sentence): valid.de 7283 sents 182592 tokens,
    valid.en 178622, test.de 6750 sents 161838 tokens, test.en 156928."""
    valid, test = iwslt_data.splits["valid"], iwslt_data.splits["test"]
    assert (len(valid), len(test)) == (7283, 6750)
    assert int(valid.src.lengths.sum()) == 182_592 and int(valid.tgt.lengths.sum()) == 178_622
    assert int(test.src.lengths.sum()) == 161_838 and int(test.tgt.lengths.sum()) == 156_928


def test_bpe_removal_restores_the_tokenised_text(iwslt, iwslt_data):
    for split in ("valid", "test"):
        for lang in ("de", "en"):
            bpe, tokenised = read_lines(iwslt / f"{split}.{lang}"), read_lines(iwslt / "tmp" / f"{split}.{lang}")
            assert [remove_bpe(line) for line in bpe] == tokenised
    # through the dictionary (built from valid, so valid has no <unk>)
    valid, dictionary = iwslt_data.splits["valid"], iwslt_data.tgt_dict
    decoded = [remove_bpe(dictionary.string(valid.tgt[i])) for i in range(len(valid))]
    assert decoded == read_lines(iwslt / "tmp" / "valid.en")


def test_dictionary_order_padding_and_fairseq_format(tmp_path):
    dictionary = Dictionary.build(["b a c@@ a", "c@@ b a", "z"], padding_factor=8)
    assert dictionary.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert dictionary.symbols[4:8] == ["a", "b", "c@@", "z"]  # by count 3, 2, 2, 1; ties in code-point order
    assert dictionary.symbols[8:] == [] and len(dictionary) == 8
    padded = Dictionary.build(["x y z w v"], padding_factor=8)  # 4 + 5 symbols -> 16
    assert len(padded) == 16 and padded.symbols[9:] == [f"madeupword{i:04d}" for i in range(7)]
    assert dictionary.encode("a zz c@@") == [4, 3, 6, 2]
    assert dictionary.string([4, 6, 1, 2, 5]) == "a c@@"
    dictionary.save(tmp_path / "dict.xx.txt")
    assert (tmp_path / "dict.xx.txt").read_text().splitlines() == ["a 3", "b 2", "c@@ 2", "z 1"]
    assert Dictionary.load(tmp_path / "dict.xx.txt").symbols == dictionary.symbols
    with pytest.raises(ValueError, match="empty vocabulary"):
        Dictionary.build(["", "  "])


def test_dictionary_is_cached_by_content(iwslt, tmp_path):
    first = load_bilingual(iwslt, "de", "en", splits=["valid"], dict_split="valid", cache_dir=tmp_path)
    cached = sorted(tmp_path.glob("dict-*/dict.*.txt"), key=lambda p: p.name)
    assert [p.name for p in cached] == ["dict.de.txt", "dict.en.txt"]
    stamp = [p.stat().st_mtime_ns for p in cached]
    second = load_bilingual(iwslt, "de", "en", splits=["valid"], dict_split="valid", cache_dir=tmp_path)
    assert [p.stat().st_mtime_ns for p in cached] == stamp  # read back, not rebuilt
    assert second.src_dict.symbols == first.src_dict.symbols and second.tgt_dict.sha256 == first.tgt_dict.sha256


def test_token_batches_respect_max_tokens_and_cover_every_sentence(iwslt_data):
    valid = iwslt_data.splits["valid"]
    rng = np.random.RandomState(0)
    indices = rng.permutation(len(valid))
    batches = batch_by_size(indices, valid.num_tokens, 4000)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(valid)))
    assert all(len(b) * valid.num_tokens[b].max() <= 4000 for b in batches)
    assert all(len(b) % 8 == 0 or len(b) < 8 for b in batches[:-1])  # fairseq keeps multiples of 8


def nmt_task(iwslt: Path, tmp_path: Path, seed: int):
    cfg = OmegaConf.create(
        {
            "name": "nmt",
            "data_dir": str(iwslt),
            "train_split": "valid",
            "cache_dir": str(tmp_path),
            "model": {"layers": 1, "d_model": 16, "ffn_dim": 32, "heads": 2},
        }
    )
    return build(cfg, seed=seed, device=CPU)


def test_training_batches_are_deterministic_resumable_and_shuffled_per_epoch(iwslt, tmp_path):
    task, again, other = nmt_task(iwslt, tmp_path, 1), nmt_task(iwslt, tmp_path, 1), nmt_task(iwslt, tmp_path, 2)
    first = [b["indices"].tolist() for b in task.train_batches(0)]
    assert len(first) == task.steps_per_epoch
    assert first == [b["indices"].tolist() for b in again.train_batches(0)]
    assert first[5:] == [b["indices"].tolist() for b in task.train_batches(0, start=5)]
    assert first != [b["indices"].tolist() for b in task.train_batches(1)]
    assert first != [b["indices"].tolist() for b in other.train_batches(0)]
    batch = next(task.train_batches(0))
    assert torch.equal(batch["prev_output_tokens"][:, 0], torch.full_like(batch["prev_output_tokens"][:, 0], 2))
    mask = batch["target"].ne(1)
    assert int(batch["ntokens"]) == int(mask.sum())
    assert torch.equal(batch["prev_output_tokens"][:, 1:][mask[:, 1:]], batch["target"][:, :-1][mask[:, 1:]])


def test_checkpoint_from_another_vocabulary_is_refused(iwslt, tmp_path):
    task = nmt_task(iwslt, tmp_path, 1)
    task.load_state_dict(task.state_dict())
    with pytest.raises(ValueError, match="other dictionaries"):
        task.load_state_dict({"src_dict_sha256": "0" * 64, "tgt_dict_sha256": task.state_dict()["tgt_dict_sha256"]})


def test_missing_files_are_named_with_the_fix(tmp_path):
    (tmp_path / "valid.de").write_text("a\n")
    with pytest.raises(FileNotFoundError) as error:
        load_bilingual(tmp_path, "de", "en", cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "train.de" in message and "test.en" in message and "valid.en" in message and "prepare_iwslt14.sh" in message


def test_mismatched_line_counts_are_refused(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.de").write_text("a b\nc\n")
        (tmp_path / f"{split}.en").write_text("x\n" if split == "valid" else "x\ny\n")
    with pytest.raises(ValueError, match="valid.de has 2 lines but valid.en has 1"):
        load_bilingual(tmp_path, "de", "en", cache_dir=tmp_path / "cache")


def test_multi30k_joint_bpe_is_learned_once_reversible_and_trains(multi30k, tmp_path):
    folder = prepare_multi30k(multi30k, "de", "en", merges=300, cache_dir=tmp_path)
    assert sum(1 for line in read_lines(folder / "code") if not line.startswith("#")) == 300
    counts = {split: len(read_lines(folder / f"{split}.en")) for split in ("train", "valid", "test")}
    assert counts == {"train": 29000, "valid": 1014, "test": 1000}
    for split, name in (("valid", "val"), ("test", "test_2016_flickr")):
        for lang in ("de", "en"):
            bpe = read_lines(folder / f"{split}.{lang}")
            assert [remove_bpe(line) for line in bpe] == read_lines(multi30k / f"{name}.lc.norm.tok.{lang}")
    assert any("@@ " in line for line in read_lines(folder / "valid.de"))
    stamp = (folder / "code").stat().st_mtime_ns
    assert prepare_multi30k(multi30k, "de", "en", merges=300, cache_dir=tmp_path) == folder
    assert (folder / "code").stat().st_mtime_ns == stamp

    # task=nmt_multi30k on the cached BPE: a few Adam steps of a tiny model lower the validation loss
    cfg = OmegaConf.create(
        {
            "name": "nmt_multi30k",
            "data_dir": str(multi30k),
            "cache_dir": str(tmp_path),
            "bpe_merges": 300,
            "model": {"layers": 1, "d_model": 32, "ffn_dim": 64, "heads": 2, "dropout": 0.0},
        }
    )
    torch.manual_seed(0)
    task = build(cfg, seed=1, device=CPU)
    before = task.evaluate(task.model)["valid/loss"]
    optimizer = torch.optim.Adam(task.model.parameters(), lr=3e-3)
    for _, batch in zip(range(30), task.train_batches(0)):
        task.loss(task.model, batch)[0].backward()
        optimizer.step()
        optimizer.zero_grad()
    after = task.evaluate(task.model)
    assert after["valid/loss"] < before - 1.0 and after["valid/ppl"] == pytest.approx(np.exp(after["valid/nll_loss"]))


def test_synthetic_batches_are_a_function_of_seed_and_step():
    data = SyntheticTranslation(vocab=32, length=12, task_seed=0)
    a, b = data.batch(seed=3, step=7, size=16), data.batch(seed=3, step=7, size=16)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["src_tokens"], data.batch(seed=3, step=8, size=16)["src_tokens"])
    assert not torch.equal(a["src_tokens"], data.batch(seed=4, step=7, size=16)["src_tokens"])
    symbols = a["src_tokens"][:, :-1] - 4
    assert sorted(data.permutation.tolist()) == list(range(32))
    assert torch.equal(a["target"][:, :-1] - 4, data.permutation[symbols.flip(1)])
    assert torch.equal(a["prev_output_tokens"][:, 1:], a["target"][:, :-1])
    assert (a["src_tokens"][:, -1] == 2).all() and (a["target"][:, -1] == 2).all()
    assert not torch.equal(data.permutation, SyntheticTranslation(32, 12, task_seed=1).permutation)


def test_synthetic_task_stream_resumes_exactly_and_decays_linearly_to_zero_over_the_run():
    task = build_synthetic(OmegaConf.create({"name": "nmt_synthetic", "model": {"layers": 1}}), seed=5, device=CPU)
    full = [b["src_tokens"] for b in task.train_batches(2)]
    resumed = [b["src_tokens"] for b in task.train_batches(2, start=40)]
    assert len(full) == task.steps_per_epoch == 100 and all(torch.equal(x, y) for x, y in zip(full[40:], resumed))
    assert (task.total_steps, task.decay.kind, task.decay.start, task.decay.min_lr_ratio) == (500, "linear", None, 0.0)
    metrics = task.evaluate(task.model)
    assert set(metrics) == {"valid/loss", "valid/nll_loss", "valid/ppl", "valid/acc"}
    loss, extras = task.loss(task.model, next(task.train_batches(0)))
    assert loss.ndim == 0 and set(extras) == {"nll_loss", "ntokens", "acc"}
    with pytest.raises(Exception, match="vocabz"):
        build_synthetic(OmegaConf.create({"name": "nmt_synthetic", "vocabz": 3}), seed=1, device=CPU)
