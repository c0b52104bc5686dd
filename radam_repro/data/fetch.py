"""``python -m radam_repro.data fetch NAME... [--root DIR] [--mirror URL] [--force]``: the paper's data sets.

Each data set of :data:`MANIFEST` is downloaded (streamed, with a progress bar; a partial file resumes with an
HTTP Range request), verified against its checksum, then extracted and prepared in a scratch folder beside its
destination and renamed into place at the end: an interrupted or refused fetch never leaves half a data set where
a task reads it. Downloads wait in ``$RADAM_REPRO_CACHE/downloads`` (default ``~/.cache/radam_repro``) until the
data set is in place. ``--mirror URL`` (or ``$RADAM_REPRO_MIRROR``) reads every file from
``<URL>/<data set>/<upstream file name>`` (http, https or file://) instead; checksums are still verified.

:func:`check_task_data` is the other side: a run whose task lacks its data stops before its run folder exists,
naming what is missing and the fetch command.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from radam_repro.errors import MissingData, UserError

MIRROR_ENV = "RADAM_REPRO_MIRROR"
CHUNK = 1 << 16
ATTEMPTS = 3  # tries per file while each one makes progress (a connection that drops mid-file)


@dataclass(frozen=True)
class RemoteFile:
    """One upstream file: its URL, size in bytes and checksum ``md5:``/``sha256:``/``git-blob:<hex>``.

    ``git-blob`` is ``git hash-object`` (sha1 of ``blob <size>\\0`` + content), for files pinned in a git
    repository. ``checksum=None``: not known here; the measured sha256 is printed on download.
    """

    url: str
    size: int | None
    checksum: str | None

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DataSet:
    """A data set: its files, the folder under ``data_root`` the tasks read by default, and how to build it."""

    name: str
    folder: str  # relative to data_root
    files: tuple[RemoteFile, ...]
    build: Callable[[dict[str, Path], Path], Path]  # (verified downloads by name, scratch dir) -> the built folder
    tasks: tuple[str, ...]
    note: str = ""


def untar(member: str) -> Callable[[dict[str, Path], Path], Path]:
    """Extract the one archive (tar's ``data`` filter: no absolute paths, links out or devices); keep ``member``."""

    def build(downloads: dict[str, Path], scratch: Path) -> Path:
        (archive,) = downloads.values()
        with tarfile.open(archive) as tar:
            tar.extractall(scratch, filter="data")
        if not (scratch / member).is_dir():
            raise UserError(f"{archive.name} holds no {member}/ folder; is it the right archive?")
        return scratch / member

    return build


def plain_files(downloads: dict[str, Path], scratch: Path) -> Path:
    """The downloaded files themselves, side by side."""
    folder = scratch / "files"
    folder.mkdir()
    for name, path in downloads.items():
        shutil.copyfile(path, folder / name)
    return folder


def build_iwslt14(downloads: dict[str, Path], scratch: Path) -> Path:
    """de-en.tgz -> the prepare-iwslt14.sh folder (tokenise, clean, valid/test split, joint BPE 10000)."""
    from radam_repro.data import prepare_iwslt14 as prep

    orig = untar("de-en")(downloads, scratch)
    out, langs = scratch / "iwslt14.tokenized.de-en", ("de", "en")
    print("[radam_repro] preparing IWSLT'14 De-En (Moses tokenisation, cleaning, joint BPE 10000)", flush=True)
    prep.prepare_devtest(orig, out / "tmp", langs)
    prep.prepare_train(orig, out / "tmp", langs)
    prep.prepare_bpe(out / "tmp", out, langs, 10000)
    return out


MULTI30K = "https://raw.githubusercontent.com/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/tok"
WIKITEXT2 = (
    "https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8"
    "/word_language_model/data/wikitext-2"
)
LM1B_NAME = "1-billion-word-language-modeling-benchmark-r13output"

MANIFEST: dict[str, DataSet] = {
    d.name: d
    for d in (
        DataSet(
            "cifar10",
            "cifar10/cifar-10-batches-py",
            (
                RemoteFile(
                    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    170498071,
                    "md5:c58f30108f718f92721af3b95e74349a",
                ),
            ),
            untar("cifar-10-batches-py"),
            ("cifar10",),
            "torchvision's archive and md5",
        ),
        DataSet(
            "iwslt14",
            "iwslt14/iwslt14.tokenized.de-en",
            (RemoteFile("https://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz", None, None),),
            build_iwslt14,
            ("nmt",),
            "the archive fairseq's prepare-iwslt14.sh points at since wit3.fbk.eu went away (fairseq #2984, #4361); "
            "checksum not known here (git blob aa8c3f40... at facebookresearch/fairseq@b3f176a4 is truncated in "
            "shared/data/SOURCES.md): the measured sha256 is printed",
        ),
        DataSet(
            "multi30k",
            "multi30k/data/task1/tok",
            tuple(
                RemoteFile(f"{MULTI30K}/{name}", size, f"sha256:{sha256}")
                for name, size, sha256 in (
                    (
                        "train.lc.norm.tok.de",
                        2150008,
                        "cb5a23529b65ec2061f1dc446192a9c37382b63cc75f81a0be59d34894b3a505",
                    ),
                    (
                        "train.lc.norm.tok.en",
                        1837696,
                        "08925f8e0572bcd5a006702fc5fe20e2d77c6917d4eebd576fc20de6693c2119",
                    ),
                    ("val.lc.norm.tok.de", 77273, "97232bd273eceb7207f689527386a97e4be2616b18ada47576bdaf96c8ae1f00"),
                    ("val.lc.norm.tok.en", 64608, "46573ce391ae227f1c72f873392436a20ef18e0a6d518098cfbd70b77c8572ec"),
                    (
                        "test_2016_flickr.lc.norm.tok.de",
                        71917,
                        "c6a33d39d48f9f510de147651316cd9d918e09ad0219df734a2f16b6baccacc4",
                    ),
                    (
                        "test_2016_flickr.lc.norm.tok.en",
                        63307,
                        "5b7f32627cf99eced828311b955dae9800bb52bc8b91cf8b6526829e605b29d2",
                    ),
                )
            ),
            plain_files,
            ("nmt_multi30k",),
            "multi30k/dataset@a3d2e0d2, task 1 tokenised and lowercased",
        ),
        DataSet(
            "wikitext2",
            "wikitext-2",
            (
                RemoteFile(f"{WIKITEXT2}/train.txt", None, "git-blob:2d84b35af79e411d73ea7cae83c73964c6ac83b4"),
                RemoteFile(
                    f"{WIKITEXT2}/valid.txt",
                    1121681,
                    "sha256:f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
                ),
                RemoteFile(
                    f"{WIKITEXT2}/test.txt",
                    1256449,
                    "sha256:d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
                ),
            ),
            plain_files,
            ("lm_wikitext2",),
            "pytorch/examples@77f55b91 word_language_model/data/wikitext-2 (train.txt: its git blob)",
        ),
        DataSet(
            "lm1b",
            f"lm1b/{LM1B_NAME}",
            (RemoteFile(f"https://www.statmt.org/lm-benchmark/{LM1B_NAME}.tar.gz", None, None),),
            untar(LM1B_NAME),
            ("lm1b", "lm1b_small"),
            "the official archive (about 1.7 GB); checksum not known here: the measured sha256 is printed",
        ),
    )
}


def file_hash(path: Path, algorithm: str) -> str:
    """The hex digest of ``path``: ``md5``, ``sha256`` or ``git-blob`` (git hash-object)."""
    if algorithm == "git-blob":
        digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    else:
        digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_url(dataset: DataSet, file: RemoteFile, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{dataset.name}/{file.name}" if mirror else file.url


def offline_help(dataset: DataSet) -> str:
    names = ", ".join(f.name for f in dataset.files)
    return (
        f"On a machine without internet, copy the files ({names}) from one that has it into "
        f"<mirror>/{dataset.name}/ and rerun with --mirror <mirror> (or {MIRROR_ENV}=<mirror>); "
        "the mirror may be http(s):// or file:// and the checksums are still verified."
    )


def _stream(url: str, part: Path, file: RemoteFile) -> None:
    """Append the rest of ``url`` to ``part`` (a Range request when part holds bytes), with a progress bar."""
    import requests
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with requests.get(url, headers=headers, stream=True, timeout=30) as response:
        if offset and response.status_code == 416:  # nothing past offset: the partial file is whole
            return
        response.raise_for_status()
        resumed = offset and response.status_code == 206
        start = offset if resumed else 0
        total = file.size or (start + int(response.headers.get("Content-Length", 0)) or None)
        with (
            part.open("ab" if resumed else "wb") as out,
            tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=file.name) as bar,
        ):
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def download(dataset: DataSet, file: RemoteFile, url: str, folder: Path) -> Path:
    """``folder/<name>``, verified: resumes ``<name>.part``; a checksum mismatch deletes it and raises."""
    import requests

    done, part = folder / file.name, folder / f"{file.name}.part"
    folder.mkdir(parents=True, exist_ok=True)
    if not done.is_file():
        if url.startswith("file://"):
            source = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
            if not source.is_file():
                raise MissingData(f"the mirror has no {source}. {offline_help(dataset)}")
            shutil.copyfile(source, part)
        else:
            for attempt in range(1, ATTEMPTS + 1):
                before = part.stat().st_size if part.exists() else 0
                try:
                    _stream(url, part, file)
                    break
                except requests.HTTPError as e:
                    raise UserError(
                        f"{url} answered {e.response.status_code} ({e.response.reason}). {offline_help(dataset)}"
                    ) from None
                except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                    got = part.stat().st_size if part.exists() else 0
                    if got > before and attempt < ATTEMPTS:
                        print(f"[radam_repro] {file.name}: connection lost at {got} bytes; resuming", flush=True)
                        continue
                    kept = f" {got} bytes are kept in {part}; rerun the same command to resume." if got else ""
                    raise UserError(
                        f"could not download {url}: {type(e).__name__}: {str(e)[:200]}.{kept} "
                        f"The machine may be offline or the server down. {offline_help(dataset)}"
                    ) from None
        os.replace(part, done)
    verify(file, done, url)
    return done


def verify(file: RemoteFile, path: Path, url: str) -> None:
    """Size and checksum of a downloaded file; a mismatch deletes it and raises naming both values."""
    size = path.stat().st_size
    if file.checksum is None:
        print(
            f"[radam_repro] no checksum is known for {file.name}; measured sha256:{file_hash(path, 'sha256')} "
            f"({size} bytes). Compare it with a trusted copy, and add it to radam_repro/data/fetch.py's MANIFEST.",
            flush=True,
        )
        return
    algorithm, expected = file.checksum.split(":", 1)
    actual = file_hash(path, algorithm)
    if actual != expected or (file.size is not None and size != file.size):
        path.unlink()
        raise UserError(
            f"{file.name} from {url} does not match the manifest: expected {algorithm} {expected}"
            + (f" ({file.size} bytes)" if file.size is not None else "")
            + f", got {algorithm} {actual} ({size} bytes). The file was deleted and nothing was installed; "
            "a damaged download or a changed upstream file: rerun, or use a trusted mirror (--mirror)."
        )


def fetch(
    names: list[str],
    root: Path,
    mirror: str | None = None,
    force: bool = False,
    manifest: dict[str, DataSet] | None = None,
) -> list[Path]:
    """Fetch, verify and build each named data set into ``root/<folder>``; returns the folders."""
    from radam_repro.data.bilingual import default_cache_dir  # torch: imported only when there is work

    manifest = MANIFEST if manifest is None else manifest
    unknown = [n for n in names if n not in manifest and n != "all"]
    if unknown:
        raise UserError(f"unknown data set(s) {', '.join(unknown)}; choose from {', '.join(manifest)} or all")
    wanted = list(manifest) if "all" in names else list(dict.fromkeys(names))
    folders = []
    for name in wanted:
        dataset, dest = manifest[name], root / manifest[name].folder
        folders.append(dest)
        if dest.exists() and not force:
            print(f"[radam_repro] {name}: {dest} exists; nothing to do (--force fetches it again)")
            continue
        cache = default_cache_dir() / "downloads" / name
        downloads = {f.name: download(dataset, f, source_url(dataset, f, mirror), cache) for f in dataset.files}
        dest.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetching-", dir=dest.parent))
        try:
            built = dataset.build(downloads, scratch)
            if dest.exists():
                dest.rename(scratch / "replaced")
            built.rename(dest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        print(f"[radam_repro] {name}: ready in {dest}")
    return folders


# --- what each task reads ------------------------------------------------------------------------------------


def _cifar_missing(task: DictConfig) -> list[Path]:
    if task.get("download"):
        return []
    folder = Path(task.data_dir) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return [folder / n for n in names if not (folder / n).is_file()]


def _nmt_missing(task: DictConfig) -> list[Path]:
    from radam_repro.data.fairseq_binarized import is_data_bin

    folder, src, tgt = Path(task.data_dir), task.source_lang, task.target_lang
    if is_data_bin(folder, src, tgt):
        return []
    if task.name == "nmt_multi30k":
        splits = ("train", "val", "test_2016_flickr")
        paths = [folder / f"{s}.lc.norm.tok.{lang}" for s in splits for lang in (src, tgt)]
    else:
        splits = dict.fromkeys([task.train_split, "valid", task.test_split])
        paths = [folder / f"{s}.{lang}" for s in splits for lang in (src, tgt)]
    return [p for p in paths if not p.is_file()]


def _lm_missing(task: DictConfig) -> list[Path]:
    folder = Path(task.data_dir)
    patterns = dict.fromkeys([*task.train_files, *task.valid_files, *task.test_files])
    return [folder / p for p in patterns if not any(q.is_file() for q in folder.glob(p))]


MISSING_FILES: dict[str, Callable[[DictConfig], list[Path]]] = {
    "cifar10": _cifar_missing,
    "nmt": _nmt_missing,
    "nmt_multi30k": _nmt_missing,
    "lm1b": _lm_missing,
    "lm1b_small": _lm_missing,
    "lm_wikitext2": _lm_missing,
}


def check_task_data(cfg: DictConfig) -> None:
    """Raise :class:`MissingData` when ``cfg.task`` lacks files it reads: what, where, and the fetch command."""
    task = cfg.task
    try:
        missing = MISSING_FILES.get(task.name, lambda _: [])(task)
    except (AttributeError, KeyError):  # a key this check reads is absent: the task's own validation names it
        return
    if not missing:
        return
    dataset = next(d for d in MANIFEST.values() if task.name in d.tasks)
    data_root = cfg.get("data_root", "data")
    default = Path(data_root) / dataset.folder
    by_folder: dict[Path, list[str]] = {}
    for path in missing:
        by_folder.setdefault(path.parent, []).append(path.name)
    shown = "; ".join(f"{folder}/{{{', '.join(names)}}}" for folder, names in by_folder.items())
    raise MissingData(
        f"task={task.name} (task.data_dir={task.data_dir}) is missing {shown}.\n"
        f"Fetch it into {default}, where the task's default task.data_dir reads it (data_root: $RADAM_REPRO_DATA):\n"
        f"  python -m radam_repro.data fetch {dataset.name} --root {data_root}\n"
        f"Offline: add --mirror URL (or {MIRROR_ENV}=URL), a copy laid out as URL/{dataset.name}/<file>. "
        "Or point task.data_dir at a complete copy."
        + (" (task.download=true also fetches CIFAR-10 through torchvision.)" if task.name == "cifar10" else "")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m radam_repro.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("fetch", help="download, verify and prepare data sets under data_root")
    sub.add_argument("names", nargs="+", metavar="NAME", help=f"{', '.join(MANIFEST)} or all")
    sub.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("RADAM_REPRO_DATA", "data")),
        help="data_root (default $RADAM_REPRO_DATA, else ./data)",
    )
    sub.add_argument("--mirror", default=os.environ.get(MIRROR_ENV), help=f"a mirror URL (default ${MIRROR_ENV})")
    sub.add_argument("--force", action="store_true", help="fetch again even if the folder exists")
    args = parser.parse_args(argv)
    try:
        fetch(args.names, args.root, args.mirror, args.force)
    except UserError as e:
        sys.exit(f"error: {e}")
