"""CIFAR-10 from torchvision's standard layout, held as uint8 tensors on the training device.

Augmentation (random crop 32 with zero padding 4, horizontal flip, drawn per sample) runs on the
device as airbench does: no worker processes, and every draw is a pure function of
(seed, epoch, batch index), which makes resumed runs replay the same batches.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import CIFAR10

MEAN = (0.4914, 0.4822, 0.4465)  # the official recipe's normalisation
STD = (0.2023, 0.1994, 0.2010)


class _UncheckedCIFAR10(CIFAR10):
    """Accepts md5-different batch files (e.g. re-cut or partial copies); only presence is checked."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)


def load_cifar10(data_dir: str | Path, train: bool, *, download: bool = False, check_integrity: bool = True):
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) from ``data_dir/cifar-10-batches-py``."""
    data_dir = Path(data_dir)
    dataset_cls = CIFAR10 if check_integrity else _UncheckedCIFAR10
    try:
        dataset = dataset_cls(str(data_dir), train=train, download=download)
    except RuntimeError as e:
        folder = data_dir / "cifar-10-batches-py"
        present = folder.is_dir() and any(folder.iterdir())
        hint = (
            "the files are there but fail torchvision's md5 check; if this copy is deliberately different "
            "(e.g. a partial or re-cut set such as ../shared/data/cifar10/partial) add task.check_integrity=false"
            if present
            else "download with task.download=true (needs internet), or fetch "
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it into that folder"
        )
        raise FileNotFoundError(
            f"CIFAR-10 not usable at {folder} (expected data_batch_1..5, test_batch, batches.meta): {hint}. "
            f"Set task.data_dir to the folder that contains cifar-10-batches-py. [{e}]"
        ) from e
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(dataset.targets, dtype=torch.long)


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
