"""The networks, and a registry so the config can pick one by name."""

from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.data import BLACK
from trainer.errors import UserError


class LeNet5(nn.Module):
    """The LeNet-5 variant of the PyTorch "TensorBoard support" tutorial, for 1x28x28 inputs.

    `conv1` and `conv2` set the convolutions' channels (the tutorial's 6 and 16): wider ones give the network
    room to learn the many shapes a photo-robust training shows it. `conv2_kernel` is the second convolution's
    size (the tutorial's 5): at 3 it costs a third as much per channel, so it can have more channels for the same
    time, and it leaves the fully connected layers a 5x5 map instead of 4x4. `batch_norm` normalises each convolution's
    output (Ioffe and Szegedy, 2015), which lets the small network fit augmented data better in the same epochs.
    `dropout` drops that share of fc2's and fc3's inputs while training (Srivastava et al., 2014): the classic
    regulariser of this network, measured in docs/search.md. `conv1_padding` pads the first convolution's input:
    at 2 the network sees a 28x28 image as LeCun et al. (1998) fed LeNet-5 a 32x32 one, so a pixel on the image's
    edge reaches three times as many positions of the first map (a corner nine times), and fc1 reads a 5x5 map
    (16 x 5 x 5 = 400 inputs; the tutorial's 4x4 is 256). `margin` scales the image down inside a border of that
    many black pixels before the first convolution, which keeps the tutorial's layers and their 28x28 input: at 1
    the garment's outer pixels, which an unpadded 5x5 convolution reads at one position or a few, fall where it
    reads them at more (docs/search.md measures it).
    """

    def __init__(
        self, num_classes: int = 10, conv1: int = 6, conv2: int = 16, batch_norm: bool = False, dropout: float = 0.0,
        conv2_kernel: int = 5, conv1_padding: int = 0, margin: int = 0,
    ) -> None:
        super().__init__()
        _check_channels(conv1=conv1, conv2=conv2)
        _check_dropout(dropout)
        if not isinstance(batch_norm, bool):  # "false" from a YAML string would switch it on
            raise ValueError(f"batch_norm must be true or false (got {batch_norm!r})")
        if not _whole(conv1_padding) or not 0 <= conv1_padding <= 2:
            raise ValueError(f"conv1_padding must be 0-2 (got {conv1_padding!r})")
        if not _whole(margin) or not 0 <= margin <= 4:
            raise ValueError(f"margin must be a whole number of pixels, 0-4 (got {margin!r})")
        self.margin = margin
        first_map = 12 + conv1_padding  # 28 + 2 x padding -> conv1 -> pool
        if not _whole(conv2_kernel) or not 1 <= conv2_kernel < first_map:
            raise ValueError(
                f"conv2_kernel must be 1-{first_map - 1} for a {first_map}x{first_map} input to the second convolution "
                f"(got {conv2_kernel!r})"
            )
        self.conv1 = nn.Conv2d(1, conv1, 5, padding=conv1_padding)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(conv1, conv2, conv2_kernel)
        # modules only when asked for: the tutorial's network keeps exactly the tutorial's layers
        self.bn1, self.bn2 = (nn.BatchNorm2d(conv1), nn.BatchNorm2d(conv2)) if batch_norm else (None, None)
        side = (first_map - conv2_kernel + 1) // 2  # -> conv2 -> pool
        self.fc1 = nn.Linear(conv2 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.dropout = nn.Dropout(dropout) if dropout else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 84-d penultimate activations, which the TensorBoard projector shows."""
        if self.margin:
            x = _scale_into_margin(x, self.margin)
        x = self.pool(F.relu(_optional(self.bn1, self.conv1(x))))
        x = self.pool(F.relu(_optional(self.bn2, self.conv2(x))))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.relu(self.fc2(_optional(self.dropout, x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(_optional(self.dropout, self.features(x)))


def _scale_into_margin(x: torch.Tensor, margin: int) -> torch.Tensor:
    """The images scaled down (antialiased, as a photo is shrunk) to leave `margin` black pixels on every side."""
    size = (x.shape[-2] - 2 * margin, x.shape[-1] - 2 * margin)
    x = F.interpolate(x - BLACK, size=size, mode="bilinear", antialias=True, align_corners=False)
    return F.pad(x, (margin, margin, margin, margin)) + BLACK


def _whole(value: Any) -> bool:
    """An int and not a bool: `true` passes a range check as 1, then fails deep in the first forward pass."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_channels(**counts: int) -> None:
    """PyTorch builds a layer of 0 channels and only fails on the first batch: refuse it while the model is built."""
    for name, count in counts.items():
        if not _whole(count) or count < 1:
            raise ValueError(f"{name} must be a whole number of channels, at least 1 (got {count!r})")


def _check_dropout(dropout: float) -> None:
    """A share below 1: at 1 (or `true`, which Python counts as 1) nothing reaches the next layer while training."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a share of at least 0 and below 1 (got {dropout!r})")


def _optional(module: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return x if module is None else module(x)


class SmallCNN(nn.Module):
    """A stronger, still small network: two conv blocks with batch norm, and dropout."""

    def __init__(self, num_classes: int = 10, width: int = 32, dropout: float = 0.25) -> None:
        super().__init__()
        _check_channels(width=width)
        _check_dropout(dropout)

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.block1 = block(1, width)
        self.block2 = block(width, 2 * width)
        self.fc1 = nn.Linear(2 * width * 7 * 7, 128)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(x))
        return F.relu(self.fc1(self.dropout(torch.flatten(x, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.features(x)))


MODELS: dict[str, Callable[..., nn.Module]] = {"lenet5": LeNet5, "small_cnn": SmallCNN}


class UnknownModelError(UserError, ValueError):
    pass


def build_model(name: str, **kwargs: Any) -> nn.Module:
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}: model.name must be one of {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**kwargs)
    except (TypeError, ValueError) as exc:  # an unknown keyword, or a value out of range such as dropout 1.5
        hint = " (model.kwargs={...} on the command line replaces a config file's)" if isinstance(exc, TypeError) else ""
        raise UnknownModelError(f"model {name!r} cannot be built from these model.kwargs: {exc}{hint}") from None
