"""Damaged inputs are refused by name, through the CLI where a user meets them (issue 21, items 9, 12, 13).

CIFAR-10 labels out of range; fairseq data-bin folders (``.bin`` cut short, ``.idx`` cut short or claiming
more sentences, negative ids, dictionaries with flags or without counts, empty splits); fairseq checkpoints
without a parameter, and averages of checkpoints of different shapes. fairseq is not needed: data-bin
files are written here with numpy in fairseq's ``MMapIndexedDataset`` format (:func:`write_indexed`).
"""

from __future__ import annotations

import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_transformer
from test_trust import cli

from radam_repro.data.bilingual import Dictionary, load_bilingual, read_lines
from radam_repro.data.fairseq_binarized import DTYPES, MAGIC, load_data_bin, read_indexed
from radam_repro.errors import CorruptFile
from radam_repro.models import fairseq_checkpoint
from radam_repro.models.transformer import Transformer
from radam_repro.tasks.translation import average_checkpoints

SENTENCES = 200
TINY_NMT = [
    "task=nmt",
    "optimizer=radam",
    "task.model.layers=1",
    "task.model.d_model=32",
    "task.model.ffn_dim=64",
    "task.model.heads=4",
    "task.max_update=2",
    "trainer.max_steps=2",
]


# -- 9. CIFAR-10 labels out of range --------------------------------------------------------------------------------
def test_cifar_labels_out_of_range_fail_at_loading_naming_the_file(tmp_path, cifar_dir):
    data = tmp_path / "cifar"
    shutil.copytree(cifar_dir / "cifar-10-batches-py", data / "cifar-10-batches-py")
    batch = data / "cifar-10-batches-py" / "data_batch_2"
    entry = pickle.loads(batch.read_bytes(), encoding="latin1")
    entry["labels"][17] = 99
    batch.write_bytes(pickle.dumps(entry))
    proc = cli(
        "task=cifar10",
        f"task.data_dir={data}",
        "task.check_integrity=false",
        "trainer.max_steps=2",
        run_dir=tmp_path / "run",
        check=False,
    )
    assert proc.returncode != 0
    assert f"CIFAR-10 batch {batch} holds labels outside 0..9 (99)" in proc.stderr, proc.stderr[-3000:]
    assert "IndexError" not in proc.stderr


# -- 12. fairseq data-bin folders -----------------------------------------------------------------------------------
def write_indexed(prefix: Path, sentences: list[list[int]], dtype=np.uint16) -> None:
    """``prefix.bin``/``prefix.idx`` as fairseq's ``MMapIndexedDatasetBuilder`` writes them (sentences back to back)."""
    code = next(code for code, kind in DTYPES.items() if kind == dtype)
    sizes = np.array([len(s) for s in sentences], dtype=np.int32)
    pointers = (np.cumsum(sizes, dtype=np.int64) - sizes) * np.dtype(dtype).itemsize
    Path(f"{prefix}.bin").write_bytes(np.array([t for s in sentences for t in s], dtype=dtype).tobytes())
    header = MAGIC + struct.pack("<QBQ", 1, code, len(sizes))
    Path(f"{prefix}.idx").write_bytes(header + sizes.tobytes() + pointers.tobytes())


@pytest.fixture(scope="module")
def data_bin(iwslt, tmp_path_factory) -> dict:
    """A data-bin folder of the first 200 staged IWSLT'14 valid pairs as train, valid and test (fairseq-preprocess's
    dictionaries and ids: ``Dictionary.build`` and ``encode`` equal them, reference/FAIRSEQ.md)."""
    out = tmp_path_factory.mktemp("data-bin") / "bin"
    out.mkdir()
    lines = {lang: read_lines(iwslt / f"valid.{lang}")[:SENTENCES] for lang in ("de", "en")}
    ids = {}
    for lang, text in lines.items():
        dictionary = Dictionary.build(text)
        dictionary.save(out / f"dict.{lang}.txt")
        ids[lang] = [dictionary.encode(line) for line in text]
        for split in ("train", "valid", "test"):
            write_indexed(out / f"{split}.de-en.{lang}", ids[lang])
    return {"dir": out, "ids": ids}


def damaged(data_bin: dict, tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    shutil.copytree(data_bin["dir"], folder)
    return folder


def test_an_intact_data_bin_folder_reads_back_its_sentences(data_bin):
    data = load_data_bin(data_bin["dir"], "de", "en", ["train", "valid", "test"])
    for side, lang in (("src", "de"), ("tgt", "en")):
        text = getattr(data.splits["train"], side)
        assert [text[i].tolist() for i in range(len(text))] == data_bin["ids"][lang]


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_a_halved_bin_file_stops_the_cli_naming_it(data_bin, tmp_path):
    folder = damaged(data_bin, tmp_path)
    target = folder / "train.de-en.en.bin"
    size = target.stat().st_size
    target.write_bytes(target.read_bytes()[: size // 2])
    proc = cli(*TINY_NMT, f"task.data_dir={folder}", run_dir=tmp_path / "run", check=False)
    assert proc.returncode != 0
    message = f"{target} has {size // 2} bytes but its index {folder / 'train.de-en.en.idx'} describes {size}"
    assert message in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_an_empty_valid_split_stops_the_cli_naming_its_files(data_bin, tmp_path):
    folder = damaged(data_bin, tmp_path)
    for lang in ("de", "en"):
        write_indexed(folder / f"valid.de-en.{lang}", [])
    proc = cli(*TINY_NMT, f"task.data_dir={folder}", run_dir=tmp_path / "run", check=False)
    assert proc.returncode != 0 and "ZeroDivisionError" not in proc.stderr
    assert f"the valid split is empty ({folder / 'valid.de-en.de.bin'}, " in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_a_dict_line_without_a_count_stops_the_cli_naming_the_file_and_line(data_bin, tmp_path):
    folder = damaged(data_bin, tmp_path)
    path = folder / "dict.en.txt"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0]  # "word" instead of "word 12"
    path.write_text("\n".join(lines) + "\n")
    proc = cli(*TINY_NMT, f"task.data_dir={folder}", run_dir=tmp_path / "run", check=False)
    assert proc.returncode != 0
    assert f"{path} line 5: {lines[4]!r} is not '<symbol> <count> [#fairseq:overwrite]'" in proc.stderr


def cut_index(folder: Path) -> Path:
    index = folder / "train.de-en.en.idx"
    index.write_bytes(index.read_bytes()[:-40])
    return index


def index_claims_a_million(folder: Path) -> Path:
    index = folder / "train.de-en.en.idx"
    raw = bytearray(index.read_bytes())
    raw[18:26] = struct.pack("<Q", 10**6)
    index.write_bytes(bytes(raw))
    return index


def negative_int16_id(folder: Path) -> Path:
    prefix = folder / "train.de-en.en"
    text = read_indexed(prefix)
    sentences = [text[i].tolist() for i in range(len(text))]
    sentences[5][0] = -1  # int16 lets a flipped sign bit through; it used to decode as the last symbol
    write_indexed(prefix, sentences, dtype=np.int16)
    return Path(f"{prefix}.bin")


def id_beyond_the_dictionary(folder: Path) -> Path:
    prefix = folder / "train.de-en.en"
    text = read_indexed(prefix)
    sentences = [text[i].tolist() for i in range(len(text))]
    sentences[7][1] = 60000
    write_indexed(prefix, sentences)
    return Path(f"{prefix}.bin")


def size_without_its_offsets(folder: Path) -> Path:
    index = folder / "train.de-en.en.idx"
    raw = bytearray(index.read_bytes())
    size = struct.unpack_from("<i", raw, 26 + 4 * 3)[0]
    struct.pack_into("<i", raw, 26 + 4 * 3, size - 1)  # sentence 3 one token shorter: it used to read so
    index.write_bytes(bytes(raw))
    return index


@pytest.mark.parametrize(
    "damage, expected",
    [
        (cut_index, r"claims 200 sentences \(2426 bytes\) but has 2386 bytes"),
        (size_without_its_offsets, r"holds sentence sizes and offsets that disagree"),
        (index_claims_a_million, r"claims 1000000 sentences \(12000026 bytes\) but has 2426 bytes"),
        (negative_int16_id, r"holds token ids outside its dictionary's 0\.\.\d+ \(-1\)"),
        (id_beyond_the_dictionary, r"holds token ids outside its dictionary's 0\.\.\d+ \(60000\)"),
    ],
)
def test_a_damaged_index_or_id_is_refused_naming_the_file(data_bin, tmp_path, damage, expected):
    folder = damaged(data_bin, tmp_path)
    path = damage(folder)
    with pytest.raises(CorruptFile, match=expected) as error:
        load_data_bin(folder, "de", "en", ["train", "valid"])
    assert error.value.path == path and str(path) in str(error.value)


def test_dict_overwrite_flag_is_honoured_as_fairseq_does_and_a_repeat_without_it_is_refused(tmp_path):
    path = tmp_path / "dict.en.txt"
    path.write_text("hallo 5\nwelt 3\nhallo 2 #fairseq:overwrite\n<unk> 0 #fairseq:overwrite\n")
    dictionary = Dictionary.load(path)
    # fairseq Dictionary.add_from_file: an overwrite appends a new entry and the symbol maps to it from then on
    assert dictionary.symbols == ["<s>", "<pad>", "</s>", "<unk>", "hallo", "welt", "hallo", "<unk>"]
    assert dictionary.counts[4:] == [5, 3, 2, 0]
    assert dictionary.encode("hallo welt tschüss") == [6, 5, 3, 2]  # an unknown word is still id 3, as in fairseq
    path.write_text("hallo 5\nwelt 3\nhallo 2\n")
    with pytest.raises(CorruptFile, match=rf"{path} line 3: symbol 'hallo' is listed twice.*#fairseq:overwrite"):
        Dictionary.load(path)
    path.write_text("hallo 5\n\n")  # fairseq refuses an empty line too
    with pytest.raises(CorruptFile, match=rf"{path} line 2: '' is not '<symbol> <count> \[#fairseq:overwrite\]'"):
        Dictionary.load(path)
    path.write_text("hallo\x0bwelt 5\n")  # only newlines end a line (fairseq's readlines), not \x0b
    assert Dictionary.load(path).symbols[4:] == ["hallo\x0bwelt"]


def test_a_text_split_that_is_not_utf8_is_refused_naming_it(iwslt, tmp_path):
    for name in ("train.de", "train.en", "valid.de", "valid.en", "test.de", "test.en"):
        (tmp_path / name).write_text("".join(line + "\n" for line in read_lines(iwslt / f"valid.{name[-2:]}")[:20]))
    (tmp_path / "valid.en").write_bytes((tmp_path / "valid.en").read_bytes() + b"caf\xe9 .\n")  # Latin-1, not UTF-8
    with pytest.raises(CorruptFile, match=rf"{tmp_path / 'valid.en'} is not UTF-8 text") as error:
        load_bilingual(tmp_path, "de", "en", cache_dir=tmp_path / "cache")
    assert error.value.path == tmp_path / "valid.en"


# -- 13. fairseq checkpoint import ---------------------------------------------------------------------------------
def one_layer(src_vocab: int, tgt_vocab: int) -> Transformer:
    """The Transformer of TINY_NMT on dictionaries of these sizes."""
    return tiny_transformer(src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, encoder_layers=1, decoder_layers=1)


def exported(path: Path, model: Transformer, drop: str | None = None) -> Path:
    fairseq_checkpoint.export(model, path, source_lang="de", target_lang="en")
    if drop:
        checkpoint = torch.load(path, weights_only=True)
        del checkpoint["model"][drop]
        torch.save(checkpoint, path)
    return path


@pytest.mark.slow  # moved out of the default suite (<= 10 min on the slower 2-core AMD EPYC): CI runs it
def test_init_from_a_checkpoint_without_fc1_names_the_file_and_the_key(data_bin, tmp_path):
    sizes = [len(Dictionary.load(data_bin["dir"] / f"dict.{lang}.txt")) for lang in ("de", "en")]
    checkpoint = exported(tmp_path / "checkpoint_last.pt", one_layer(*sizes), "encoder.layers.0.fc1.weight")
    proc = cli(
        *TINY_NMT,
        f"task.data_dir={data_bin['dir']}",
        f"task.init_from={checkpoint}",
        run_dir=tmp_path / "run",
        check=False,
    )
    assert proc.returncode != 0 and "KeyError" not in proc.stderr, proc.stderr[-3000:]
    expected = f"fairseq checkpoint {checkpoint}: the checkpoint lacks encoder.layers.0.fc1.weight"
    assert expected in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize(
    "drop, expected",
    [
        ("decoder.layers.1.self_attn.q_proj.weight", r"decoder_layers\.1\.self_attn lack q_proj"),
        ("decoder.layers.1.fc2.bias", r'Missing key\(s\) in state_dict: "decoder_layers\.1\.ffn\.fc2\.bias"'),
    ],
)
def test_a_checkpoint_without_any_parameter_names_the_file_and_the_key(tmp_path, drop, expected):
    """What ``task.init_from`` calls (fairseq_checkpoint.initialise), for a parameter of a later layer."""
    checkpoint = exported(tmp_path / "checkpoint_last.pt", tiny_transformer(), drop)
    with pytest.raises(CorruptFile, match=rf"fairseq checkpoint {checkpoint}.*{expected}") as error:
        fairseq_checkpoint.initialise(tiny_transformer(), checkpoint)
    assert error.value.path == checkpoint


def test_the_intact_checkpoint_loads_with_the_same_weights(tmp_path):
    model = tiny_transformer()
    loaded = fairseq_checkpoint.load_model(exported(tmp_path / "checkpoint.pt", model))
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_averaging_checkpoints_of_different_shapes_is_refused_naming_file_and_key(tmp_path):
    first = exported(tmp_path / "a.pt", tiny_transformer())
    second = exported(tmp_path / "b.pt", tiny_transformer(ffn_dim=96))
    with pytest.raises(CorruptFile, match=r"b\.pt: encoder_layers\.0\.ffn\.fc1\.weight has shape \[96, 32\] but"):
        fairseq_checkpoint.load_model([first, second])
    # a [64, 1] tensor would broadcast against [64, 32] in a plain sum: our own checkpoints are checked as well
    torch.save({"model": {"w": torch.ones(64, 32)}}, tmp_path / "step_1.pt")
    torch.save({"model": {"w": torch.ones(64, 1)}}, tmp_path / "step_2.pt")
    with pytest.raises(CorruptFile, match=r"step_2\.pt: w has shape \[64, 1\] but \[64, 32\] in .*step_1\.pt"):
        average_checkpoints([tmp_path / "step_1.pt", tmp_path / "step_2.pt"])
