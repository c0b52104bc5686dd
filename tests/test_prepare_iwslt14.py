"""launch/prepare_iwslt14.sh: the prepare-iwslt14.sh pipeline with sacremoses and subword-nmt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from radam_repro.data.bilingual import apply_bpe, read_lines, remove_bpe
from radam_repro.data.prepare_iwslt14 import TEST_SETS, clean_corpus, main, moses_tokenize_lowercase, xml_segments

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def staged(shared_data) -> Path:
    path = shared_data / "iwslt14"
    if not (path / "orig" / "de-en" / "IWSLT14.TED.dev2010.de-en.de.xml").is_file():
        pytest.skip(f"staged IWSLT'14 XML files not found at {path}/orig/de-en")
    return path


def test_devtest_tokenisation_reproduces_the_moses_output_line_by_line(staged, tmp_path):
    """The script on the staged XML dev/test files vs the staged prepare-iwslt14.sh (Moses perl) output."""
    reference = staged / "iwslt14.tokenized.de-en" / "tmp"
    proc = subprocess.run(
        [
            "bash",
            "launch/prepare_iwslt14.sh",
            str(staged / "orig" / "de-en"),
            str(tmp_path),
            "--devtest-only",
            "--compare",
            str(reference),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},  # this environment's interpreter, activated or not
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for lang in ("de", "en"):
        ours, theirs = read_lines(tmp_path / "tmp" / f"test.{lang}"), read_lines(reference / f"test.{lang}")
        assert len(ours) == len(theirs) == 6750
        identical = sum(a == b for a, b in zip(ours, theirs))
        assert identical == 6750, f"test.{lang}: {identical}/6750 lines identical"
        for name in TEST_SETS:
            assert read_lines(tmp_path / "tmp" / f"{name}.de-en.{lang}") == read_lines(
                reference / f"{name}.de-en.{lang}"
            )
    assert "test.en: 6750/6750 lines identical" in proc.stdout


def test_staged_bpe_code_reproduces_the_staged_bpe_text(staged):
    folder = staged / "iwslt14.tokenized.de-en"
    for lang in ("de", "en"):
        tokenised = read_lines(folder / "tmp" / f"test.{lang}")[:2000]
        assert apply_bpe(folder / "code", tokenised) == read_lines(folder / f"test.{lang}")[:2000]


def test_clean_corpus_applies_length_and_ratio_limits():
    src = ["a b c", "", "a  b", "a b c d", " ".join(["w"] * 176), "x"]
    tgt = ["x y z", "y", "x  y ", "x y", " ".join(["v"] * 176), "y"]
    # kept: 3/3, 2/2 (whitespace collapsed), 1/1; dropped: empty side, ratio 4/2 = 2 > 1.5, 176 words > 175
    assert clean_corpus(src, tgt) == (["a b c", "a b", "x"], ["x y z", "x y", "y"])
    with pytest.raises(ValueError, match="line-aligned"):
        clean_corpus(["a"], [])


def write_train_tags(path: Path, title: str, description: str, segments: list[str]) -> None:
    """A train.tags file as de-en.tgz ships it: talk metadata lines around plain-text lines."""
    lines = [
        "<url>http://www.ted.com/talks/x.html</url>",
        "<keywords>talks</keywords>",
        "<talkid>1</talkid>",
        f"<title>{title}</title>",
        f"<description>{description}</description>",
        *segments,
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_full_pipeline_on_train_tags(staged, tmp_path):
    """Train text built from real segments (dev2010): filters, clean, every 23rd line to valid, joint BPE."""
    orig = tmp_path / "de-en"
    orig.mkdir()
    for xml in (staged / "orig" / "de-en").glob("*.xml"):
        (orig / xml.name).symlink_to(xml)
    segments = {lang: xml_segments(orig / f"IWSLT14.TED.dev2010.de-en.{lang}.xml")[:400] for lang in ("de", "en")}
    segments["de"][7] = "ein sehr langer satz mit vielen , vielen , vielen wörtern und noch mehr wörtern"
    segments["en"][7] = "short"  # ratio far above 1.5: cleaned away
    write_train_tags(orig / "train.tags.de-en.de", "Ein Titel", "Eine Beschreibung.", segments["de"])
    write_train_tags(orig / "train.tags.de-en.en", "A title", "A description.", segments["en"])
    out = tmp_path / "out"
    main(["--orig", str(orig), "--out", str(out), "--bpe-tokens", "200"])

    tmp = out / "tmp"
    lines = {lang: read_lines(tmp / f"train.{lang}") + read_lines(tmp / f"valid.{lang}") for lang in ("de", "en")}
    # the title and description lines (tags stripped) and the 400 segments, cleaned; every 23rd line to valid
    texts = {lang: ["Ein Titel", "Eine Beschreibung.", *segments[lang]] for lang in ("de", "en")}
    texts["en"][:2] = ["A title", "A description."]
    cleaned = clean_corpus(*(moses_tokenize_lowercase(texts[lang], lang, lowercase=False) for lang in ("de", "en")))
    for lang, side in zip(("de", "en"), cleaned):
        side = [line.lower() for line in side]
        assert read_lines(tmp / f"valid.{lang}") == side[22::23]
        assert read_lines(tmp / f"train.{lang}") == [line for i, line in enumerate(side, 1) if i % 23]
    assert read_lines(tmp / "train.de")[0] == "ein titel" and not any("<" in line for line in lines["de"])
    assert "short" not in lines["en"]
    assert all(line == line.lower() for line in lines["en"])
    assert sum(1 for line in read_lines(out / "code") if not line.startswith("#")) == 200
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            assert [remove_bpe(line) for line in read_lines(out / f"{split}.{lang}")] == read_lines(
                tmp / f"{split}.{lang}"
            )
    assert len(read_lines(out / "test.en")) == 6750
