"""fairseq's ``examples/translation/prepare-iwslt14.sh`` with PyPI tools (sacremoses, subword-nmt).

The steps, as the original script (Moses perl scripts replaced by sacremoses):

1. train: drop the ``<url>``, ``<talkid>``, ``<keywords>`` lines of ``train.tags.de-en.{de,en}``,
   strip ``<title>``/``<description>`` tags, Moses-tokenise (``tokenizer.perl -l <lang>``);
   ``clean-corpus-n.perl -ratio 1.5 ... 1 175`` (collapse whitespace, drop pairs with an empty side,
   more than 175 or fewer than 1 words, or a length ratio above 1.5); lowercase;
2. dev/test: the ``<seg id>`` lines of ``IWSLT14.TED*.{de,en}.xml`` with ’ -> ', tokenised, lowercased;
3. valid = every 23rd training line, train = the rest; test = dev2010 + TEDX.dev2012 + tst2010 +
   tst2011 + tst2012;
4. joint BPE: ``learn_bpe -s 10000`` on train.de + train.en, applied to every split.

``python -m radam_repro.data.prepare_iwslt14 --orig <dir with de-en/> --out <dir>`` runs it all;
``--devtest-only`` runs step 2 alone (to compare with a reference ``tmp/`` folder, ``--compare``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from radam_repro.data.bilingual import apply_bpe, learn_joint_bpe, read_lines

TEST_SETS = (
    "IWSLT14.TED.dev2010",
    "IWSLT14.TEDX.dev2012",
    "IWSLT14.TED.tst2010",
    "IWSLT14.TED.tst2011",
    "IWSLT14.TED.tst2012",
)
TRAIN_DROP = ("<url>", "<talkid>", "<keywords>")
TRAIN_STRIP = re.compile(r"</?title>|</?description>")
SEGMENT_OPEN = re.compile(r'<seg id="[0-9]*">\s*')
SEGMENT_CLOSE = re.compile(r"\s*</seg>\s*")


FINAL_PERIOD = re.compile(r"([^.\s])\.$")  # a final period after a non-period: perl splits it off


def moses_tokenize_lowercase(lines: Iterable[str], lang: str, lowercase: bool = True) -> list[str]:
    """``tokenizer.perl -l lang`` (default options: escaping on, no aggressive hyphen splitting), then ``lowercase.perl``.

    tokenizer.perl always splits the period off a line's last word ("u.s.a." -> "u.s.a ."), even
    after a non-breaking prefix; sacremoses 0.1 does not, so that rule is applied here.
    """
    from sacremoses import MosesTokenizer

    tokenizer = MosesTokenizer(lang=lang)
    out = [FINAL_PERIOD.sub(r"\1 .", tokenizer.tokenize(line, return_str=True, escape=True)) for line in lines]
    return [line.lower() for line in out] if lowercase else out


def train_text(lines: Iterable[str]) -> list[str]:
    """The grep -v / sed filters applied to ``train.tags.de-en.<lang>``."""
    return [TRAIN_STRIP.sub("", line) for line in lines if not any(tag in line for tag in TRAIN_DROP)]


def xml_segments(path: Path) -> list[str]:
    """``grep '<seg id' | sed`` on an IWSLT XML file: the segment texts, ’ normalised to '."""
    segments = []
    for line in read_lines(path):
        if "<seg id" in line:
            segments.append(SEGMENT_CLOSE.sub("", SEGMENT_OPEN.sub("", line)).replace("\u2019", "'"))
    return segments


def clean_corpus(
    src: list[str], tgt: list[str], min_len: int = 1, max_len: int = 175, ratio: float = 1.5
) -> tuple[list[str], list[str]]:
    """``clean-corpus-n.perl -ratio 1.5 corpus src tgt out 1 175`` (words longer than 1000 characters drop a pair too)."""
    if len(src) != len(tgt):
        raise ValueError(f"the two sides have {len(src)} and {len(tgt)} lines; they must be line-aligned")
    kept_src, kept_tgt = [], []
    for f, e in zip(src, tgt):
        f, e = " ".join(f.replace("|", "").split()), " ".join(e.replace("|", "").split())
        if not f or not e:
            continue
        fc, ec = len(f.split(" ")), len(e.split(" "))
        if not (min_len <= fc <= max_len and min_len <= ec <= max_len) or ec / fc > ratio or fc / ec > ratio:
            continue
        if max(map(len, f.split(" ") + e.split(" "))) > 1000:
            continue
        kept_src.append(f)
        kept_tgt.append(e)
    return kept_src, kept_tgt


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def prepare_devtest(orig: Path, tmp: Path, langs: tuple[str, str]) -> None:
    """Step 2 and the test concatenation of step 3: ``tmp/IWSLT14.*.de-en.<lang>`` and ``tmp/test.<lang>``."""
    for lang in langs:
        test = []
        for name in TEST_SETS:
            xml = orig / f"{name}.de-en.{lang}.xml"
            if not xml.is_file():
                raise FileNotFoundError(f"{xml} is missing: --orig must hold the de-en/ folder of de-en.tgz")
            lines = moses_tokenize_lowercase(xml_segments(xml), lang)
            write_lines(tmp / f"{name}.de-en.{lang}", lines)
            test += lines
        write_lines(tmp / f"test.{lang}", test)


def prepare_train(orig: Path, tmp: Path, langs: tuple[str, str]) -> None:
    """Steps 1 and 3: ``tmp/train.<lang>`` and ``tmp/valid.<lang>``."""
    sides = []
    for lang in langs:
        raw = orig / f"train.tags.de-en.{lang}"
        if not raw.is_file():
            raise FileNotFoundError(f"{raw} is missing: --orig must hold the de-en/ folder of de-en.tgz")
        sides.append(moses_tokenize_lowercase(train_text(read_lines(raw)), lang, lowercase=False))
    cleaned = clean_corpus(*sides)
    for lang, lines in zip(langs, cleaned):
        lines = [line.lower() for line in lines]
        write_lines(tmp / f"valid.{lang}", lines[22::23])
        write_lines(tmp / f"train.{lang}", [line for i, line in enumerate(lines, 1) if i % 23])


def prepare_bpe(tmp: Path, out: Path, langs: tuple[str, str], merges: int) -> None:
    """Step 4: ``out/code`` and ``out/{train,valid,test}.<lang>``."""
    learn_joint_bpe([tmp / f"train.{lang}" for lang in langs], out / "code", merges)
    for lang in langs:
        for split in ("train", "valid", "test"):
            write_lines(out / f"{split}.{lang}", apply_bpe(out / "code", read_lines(tmp / f"{split}.{lang}")))


def compare(ours: Path, reference: Path) -> dict[str, tuple[int, int]]:
    """Exactly matching lines per file present in both folders: ``{name: (matches, lines)}``."""
    result = {}
    for path in sorted(reference.iterdir()):
        if (ours / path.name).is_file():
            a, b = read_lines(ours / path.name), read_lines(path)
            result[path.name] = (sum(x == y for x, y in zip(a, b)), max(len(a), len(b)))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orig", type=Path, required=True, help="the de-en/ folder extracted from de-en.tgz")
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (iwslt14.tokenized.de-en); tokenised text in <out>/tmp"
    )
    parser.add_argument("--bpe-tokens", type=int, default=10000, help="joint BPE merges (default 10000)")
    parser.add_argument(
        "--devtest-only", action="store_true", help="only tokenise the XML dev/test files into <out>/tmp"
    )
    parser.add_argument("--compare", type=Path, help="a reference tmp/ folder: report exactly matching lines per file")
    args = parser.parse_args(argv)
    langs, tmp = ("de", "en"), args.out / "tmp"
    prepare_devtest(args.orig, tmp, langs)
    if not args.devtest_only:
        prepare_train(args.orig, tmp, langs)
        prepare_bpe(tmp, args.out, langs, args.bpe_tokens)
    if args.compare:
        for name, (matches, total) in compare(tmp, args.compare).items():
            print(f"{name}: {matches}/{total} lines identical ({100 * matches / max(total, 1):.2f} %)")


if __name__ == "__main__":
    main(sys.argv[1:])
