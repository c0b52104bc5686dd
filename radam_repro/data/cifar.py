"""CIFAR-10 from torchvision's standard layout, held as uint8 tensors on the training device.

Augmentation (random crop 32 with zero padding 4, horizontal flip, drawn per sample) runs on the
device as airbench does: no worker processes, and every draw is a pure function of
(seed, epoch, batch index), which makes resumed runs replay the same batches. The batch files are
unpickled with an allow-list (numpy arrays only): a damaged or foreign file is an error naming it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from radam_repro.errors import CorruptFile

MEAN = (0.4914, 0.4822, 0.4465)  # the official recipe's normalisation
STD = (0.2023, 0.1994, 0.2010)
NUM_CLASSES = 10


FOLDER = "cifar-10-batches-py"
FETCH_HINT = (
    "download it with task.download=true (needs internet), or fetch "
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it into task.data_dir"
)
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch (dicts, lists, numpy arrays) and refuses any other global: no code runs."""

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data uint8 [N, 3072], labels int64 [N] in 0..9) of one python batch file; :class:`CorruptFile` otherwise."""
    redo = f"replace it with a good copy ({FETCH_HINT})"
    if path.stat().st_size == 0:
        raise CorruptFile(path, f"CIFAR-10 batch {path} is empty; {redo}")
    try:
        with path.open("rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
        data, labels = entry["data"], np.asarray(entry["labels"])
    except Exception as e:  # noqa: BLE001 - truncated, random bytes, another format: all mean a bad file
        raise CorruptFile(
            path,
            f"CIFAR-10 batch {path} is damaged or not a CIFAR-10 python batch "
            f"({type(e).__name__}: {str(e)[:100]}); {redo}",
        ) from None
    shape = getattr(data, "shape", None)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or shape[1] != 3 * 32 * 32:
        raise CorruptFile(
            path,
            f"CIFAR-10 batch {path} holds data of type {type(data).__name__} {getattr(data, 'dtype', '')} "
            f"shape {shape}, not N x 3072 uint8 pixels; {redo}",
        )
    if labels.ndim != 1 or len(labels) != len(data) or labels.dtype.kind not in "iu":
        raise CorruptFile(
            path,
            f"CIFAR-10 batch {path} holds {labels.size} labels of type {labels.dtype} for {len(data)} images, "
            f"not one integer label per image; {redo}",
        )
    if len(labels) and not (0 <= labels.min() and labels.max() < NUM_CLASSES):
        bad = labels[(labels < 0) | (labels >= NUM_CLASSES)]
        raise CorruptFile(
            path,
            f"CIFAR-10 batch {path} holds labels outside 0..{NUM_CLASSES - 1} ({', '.join(map(str, bad[:5]))}); {redo}",
        )
    return data, labels.astype(np.int64)


def load_cifar10(data_dir: str | Path, train: bool, *, download: bool = False, check_integrity: bool = True):
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) from ``data_dir/cifar-10-batches-py``."""
    from torchvision.datasets import CIFAR10  # here: the config schemas import this module, torchvision is slow
    from torchvision.datasets.utils import check_integrity as check_md5

    folder = Path(data_dir) / FOLDER
    if download:
        CIFAR10(str(data_dir), train=train, download=True)
    files = CIFAR10.train_list if train else CIFAR10.test_list
    missing = [name for name, _ in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not usable at {folder}: missing {', '.join(missing)} (expected data_batch_1..5 and "
            f"test_batch); {FETCH_HINT}. Set task.data_dir to the folder that contains {FOLDER}."
        )
    if check_integrity:
        bad = [name for name, md5 in files if not check_md5(str(folder / name), md5)]
        if bad:
            raise ValueError(
                f"CIFAR-10 files in {folder} fail torchvision's md5 check: {', '.join(bad)}. If this copy is "
                "deliberately different (e.g. a partial or re-cut set such as ../shared/data/cifar10/partial) add "
                f"task.check_integrity=false; else {FETCH_HINT}"
            )
    batches = [read_batch(folder / name) for name, _ in files]
    images = torch.from_numpy(np.concatenate([data for data, _ in batches]).reshape(-1, 3, 32, 32))
    return images, torch.from_numpy(np.concatenate([labels for _, labels in batches]))


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip, one draw per sample, on the images' device."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(3, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]
