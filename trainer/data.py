"""Fashion-MNIST as in-memory tensors, split into train/validation/test, served in shuffled batches.

The whole dataset is 47 MB as uint8, so it is normalised once and kept in memory: per-sample PIL
transforms in a DataLoader (the tutorial's way) cost far more than LeNet-5's own compute on a CPU.
"""

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torchvision.datasets import FashionMNIST

from trainer.errors import UserError

CLASS_NAMES = list(FashionMNIST.classes)
MEAN, STD = 0.2860, 0.3530

# name -> (bytes, magic, dims): what the official uncompressed IDX files hold.
RAW_FILES = {
    "train-images-idx3-ubyte": (47_040_016, 0x803, (60_000, 28, 28)),
    "train-labels-idx1-ubyte": (60_008, 0x801, (60_000,)),
    "t10k-images-idx3-ubyte": (7_840_016, 0x803, (10_000, 28, 28)),
    "t10k-labels-idx1-ubyte": (10_008, 0x801, (10_000,)),
}


class DataError(UserError):
    pass


@dataclass
class Splits:
    """Normalised images (N, 1, 28, 28) float32 and labels (N,) int64 of each split."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


def raw_folder(root: str | Path) -> Path:
    return Path(root) / "FashionMNIST" / "raw"


def check_raw_files(root: str | Path) -> None:
    """Refuse missing, truncated or altered files up front, naming the file, rather than train on garbage."""
    folder = raw_folder(root)
    for name, (size, magic, dims) in RAW_FILES.items():
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"Fashion-MNIST file {path} is missing: put the four uncompressed IDX files "
                f"({', '.join(RAW_FILES)}) in {folder}, or point data.root (or FASHION_MNIST_ROOT) "
                f"at the folder that contains FashionMNIST/raw"
            )
        actual = path.stat().st_size
        if actual != size:
            raise DataError(f"Fashion-MNIST file {path} has {actual} bytes instead of {size}: it is truncated or not the official file")
        with open(path, "rb") as f:
            header = f.read(4 + 4 * len(dims))
        found_magic = int.from_bytes(header[:4], "big")
        found_dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(len(dims)))
        if found_magic != magic or found_dims != dims:
            raise DataError(f"Fashion-MNIST file {path} has a wrong header (magic {found_magic:#x}, dims {found_dims}): it is not the official file")


def ensure_downloaded(root: str | Path, download: bool) -> None:
    """Download into `root` only when a file is missing; without network, say what to do instead."""
    folder = raw_folder(root)
    if all((folder / name).is_file() for name in RAW_FILES) or not download:
        return
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for train in (True, False):
                FashionMNIST(str(root), train=train, download=True)
    except Exception:  # any network or disk failure ends the same way: tell the user where the files go
        raise DataError(
            f"Fashion-MNIST is not in {folder} and could not be downloaded: put the four uncompressed IDX files "
            f"({', '.join(RAW_FILES)}) there, or set data.root=DIR (or FASHION_MNIST_ROOT=DIR) to a folder "
            f"that contains FashionMNIST/raw"
        ) from None


def normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float().div_(255).sub_(MEAN).div_(STD).unsqueeze(1).contiguous()


def load_splits(root: str | Path, val_size: int, seed: int, download: bool = True) -> Splits:
    """Hold `val_size` training images out for validation, chosen by `seed`; the test split stays untouched."""
    ensure_downloaded(root, download)
    check_raw_files(root)
    train = FashionMNIST(str(root), train=True, download=False)
    test = FashionMNIST(str(root), train=False, download=False)
    order = torch.randperm(len(train.targets), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    images, labels = normalise(train.data), train.targets
    return Splits(
        train=(images[train_idx], labels[train_idx]),
        val=(images[val_idx], labels[val_idx]),
        test=(normalise(test.data), test.targets.clone()),
    )


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Back to [0, 1] pixels, garments light on dark, for showing images to a person."""
    return (images * STD + MEAN).clamp_(0, 1)


class InMemoryLoader:
    """Batches over in-memory tensors, sharded across distributed ranks.

    The order of an epoch is a pure function of (seed, epoch): a resumed run sees exactly the batches an
    uninterrupted one would, from any iteration. Rank r takes every world_size-th sample of the shuffled
    order, so the ranks' shards are disjoint and together cover the split in every epoch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch, self.start_batch = 1, 0
        shard = len(range(rank, len(labels), world_size))
        # Training drops each rank's incomplete last batch, so all ranks run the same number of steps.
        self.num_batches = len(labels) // world_size // batch_size if drop_last else -(-shard // batch_size)
        if self.num_batches == 0:
            raise DataError(
                f"{len(labels)} images cannot fill one batch of {batch_size} on each of {world_size} processes: "
                f"lower train.batch_size or the number of processes"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in order."""
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.indices()
        for b in range(self.start_batch, self.num_batches):
            batch = idx[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.images[batch], self.labels[batch]
        self.start_batch = 0
