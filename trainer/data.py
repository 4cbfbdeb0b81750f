"""Fashion-MNIST as in-memory tensors, split into train/validation/test, served in shuffled batches.

The whole dataset is 47 MB as uint8, so it is normalised once and kept in memory: per-sample PIL
transforms in a DataLoader (the tutorial's way) cost far more than LeNet-5's own compute on a CPU.
"""

import contextlib
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from PIL import Image

from trainer.errors import UserError

# Zalando's label order, as torchvision's FashionMNIST names them
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FOOTWEAR = tuple(CLASS_NAMES.index(name) for name in ("Sandal", "Sneaker", "Ankle boot"))
SLEEVED = tuple(CLASS_NAMES.index(name) for name in ("T-shirt/top", "Pullover", "Coat", "Shirt"))
MEAN, STD = 0.2860, 0.3530
# Images per forward pass where no gradient is kept (validation, tests, calibration): on a CPU, batches of 1024
# run 2.5-3x slower per image than batches of 256, which stay in its cache (docs/performance.md).
EVAL_BATCH_SIZE = 256

# name -> (magic, number of dimensions, SHA-256 of the official file). Other sizes are allowed (tests write
# tiny hermetic sets), but the header must agree with the size; files of the official size must be the official files.
RAW_FILES = {
    "train-images-idx3-ubyte": (0x803, 3, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte": (0x801, 1, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte": (0x803, 3, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte": (0x801, 1, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
OFFICIAL_COUNTS = {"train": 60_000, "t10k": 10_000}


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
    counts = {}
    for name, (magic, ndim, sha256) in RAW_FILES.items():
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"Fashion-MNIST file {path} is missing: put the four uncompressed IDX files "
                f"({', '.join(RAW_FILES)}) in {folder}, or point data.root (or FASHION_MNIST_ROOT) "
                f"at the folder that contains FashionMNIST/raw"
            )
        with open(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
        dims = idx_dims(header, ndim)
        if len(header) < 4 + 4 * ndim or int.from_bytes(header[:4], "big") != magic or dims[1:] not in ([], [28, 28]):
            raise DataError(f"Fashion-MNIST file {path} does not start with a valid IDX header: it is not a Fashion-MNIST file")
        expected = 4 + 4 * ndim + math.prod(dims)
        actual = path.stat().st_size
        if actual != expected:
            raise DataError(f"Fashion-MNIST file {path} has {actual} bytes but its header promises {expected}: it is truncated or damaged")
        if dims[0] == OFFICIAL_COUNTS[name.split("-")[0]] and file_sha256(path) != sha256:
            raise DataError(f"Fashion-MNIST file {path} differs from the official release (SHA-256 mismatch): it has been altered")
        counts[name] = dims[0]
    for split in OFFICIAL_COUNTS:
        if counts[f"{split}-images-idx3-ubyte"] != counts[f"{split}-labels-idx1-ubyte"]:
            raise DataError(f"Fashion-MNIST files in {folder}: the {split} images and labels hold different numbers of items")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_downloaded(root: str | Path, download: bool) -> None:
    """Download into `root` only when a file is missing (torchvision's downloader, imported only then: it costs
    every run 1.5 s of start-up otherwise); without network, say what to do instead."""
    folder = raw_folder(root)
    if all((folder / name).is_file() for name in RAW_FILES) or not download:
        return
    from torchvision.datasets import FashionMNIST

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


def normalise(images_uint8: torch.Tensor, mean: float = MEAN, std: float = STD) -> torch.Tensor:
    """(N, H, W) grey levels as the network's (N, 1, H, W) input; the one place it is done, for training and photos."""
    return images_uint8.float().div_(255).sub_(mean).div_(std).unsqueeze(1).contiguous()


# A black pixel as `normalise` makes it, to the last bit: -MEAN / STD, computed in double and rounded once, differs
# from it in the last place, and the attribution maps tell the garment from the background by equality.
BLACK = normalise(torch.zeros(1, 1, dtype=torch.uint8)).item()


def load_splits(root: str | Path, val_size: int, seed: int, download: bool = True) -> Splits:
    """Hold `val_size` training images out for validation, chosen by `seed`; the test split stays untouched."""
    ensure_downloaded(root, download)
    check_raw_files(root)
    train_images, labels = read_idx(root, "train-images-idx3-ubyte"), read_idx(root, "train-labels-idx1-ubyte").long()
    if val_size >= len(labels):
        raise DataError(f"data.val_size={val_size} leaves no training images out of {len(labels)}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    images = normalise(train_images)
    return Splits(
        train=(images[train_idx], labels[train_idx]),
        val=(images[val_idx], labels[val_idx]),
        test=(normalise(read_idx(root, "t10k-images-idx3-ubyte")), read_idx(root, "t10k-labels-idx1-ubyte").long()),
    )


def read_idx(root: str | Path, name: str) -> torch.Tensor:
    """One IDX file's uint8 array, shaped by its header (`check_raw_files` has vouched for both), read straight
    into the tensor's buffer."""
    _, ndim, _ = RAW_FILES[name]
    with open(raw_folder(root) / name, "rb") as f:
        dims = idx_dims(f.read(4 + 4 * ndim), ndim)
        pixels = bytearray(math.prod(dims))
        f.readinto(pixels)
    return torch.frombuffer(pixels, dtype=torch.uint8).view(*dims)


def idx_dims(header: bytes, ndim: int) -> list[int]:
    """The sizes an IDX header gives after its 4-byte magic number, big-endian."""
    return [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Back to [0, 1] pixels, garments light on dark, for showing images to a person."""
    return (images * STD + MEAN).clamp_(0, 1)


def grey_image(pixels: torch.Tensor) -> Image.Image:
    """A (1, H, W) image of [0, 1] pixels as an 8-bit greyscale PIL image, to save or draw on."""
    return Image.fromarray(pixels[0].mul(255).round().to(torch.uint8).numpy())


class InMemoryLoader:
    """Batches over in-memory tensors, sharded across distributed ranks.

    The order of an epoch is a pure function of (seed, epoch): a resumed run sees exactly the batches an
    uninterrupted one would, from any iteration. Rank r takes every world_size-th sample of the shuffled
    order, so the ranks' shards are disjoint and together cover the split in every epoch (with `drop_last`, but for
    each rank's incomplete last batch). `hflip` mirrors half the images, but never those of `unflipped_classes`:
    Fashion-MNIST's shoes all face one way, and a mirrored one is an image its test set never shows.
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
        hflip: bool = False,
        unflipped_classes: tuple[int, ...] = (),
        max_shift: int = 0,
        augment: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        self.images, self.labels, self.hflip, self.max_shift, self.augment = images, labels, hflip, max_shift, augment
        self.unflipped_classes = torch.tensor(unflipped_classes, dtype=labels.dtype)
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
        # Drawn for the whole epoch up front, so a run resumed in mid-epoch draws the same.
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 50_021)
        flips = None
        if self.hflip:
            flips = (torch.rand(len(idx), generator=g) < 0.5) & ~torch.isin(self.labels[idx], self.unflipped_classes)
        shifts = torch.randint(0, 2 * self.max_shift + 1, (self.num_batches, 2), generator=g) if self.max_shift else None
        for b in range(self.start_batch, self.num_batches):
            rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
            images = self.images[idx[rows]]
            if flips is not None:
                images = torch.where(flips[rows].view(-1, 1, 1, 1), images.flip(3), images)
            if shifts is not None:
                images = shift_batch(images, self.max_shift, *shifts[b].tolist())
            labels = self.labels[idx[rows]]
            if self.augment is not None:  # its own generator per batch: the same draws after a resume in mid-epoch
                # strides as wide as the batches and the processes, so no two batches share draws (at least 1,009
                # and 64: the seeds every run so far was trained with), within the 63 bits a generator's seed takes
                seed = ((self.seed * 100_003 + self.epoch) * max(1_009, self.num_batches) + b) * max(64, self.world_size) + self.rank
                seed %= 2**63
                images = self.augment(images, labels, torch.Generator().manual_seed(seed))
            yield images, labels
        self.start_batch = 0


def shift_batch(images: torch.Tensor, max_shift: int, dy: int, dx: int) -> torch.Tensor:
    """Move a whole batch by (dy, dx) - max_shift pixels, filling with black: cheap augmentation for bigger models."""
    padded = torch.nn.functional.pad(images, (max_shift,) * 4, value=BLACK)
    return padded[:, :, dy : dy + images.shape[2], dx : dx + images.shape[3]]
