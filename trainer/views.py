"""Test-time views: the tile and its mirror image, one place for the classifier and its explanations.

Garments are nearly symmetric and training flips them, so the mirror image is an equally good look at the same
garment; averaging the logits of the two makes the answers on photos steadier (docs/real_photos.md). Views
turned 8 degrees either way were measured too (docs/real_photos.md, "Test-time views"): a little more right on
photos, but less sure of them under the same temperature, and less right on Fashion-MNIST's upright tiles.
"""

import torch
import torch.nn as nn


def views(tiles: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> (2N, 1, H, W): the tiles, then their mirror images."""
    return torch.cat([tiles, tiles.flip(-1)])


def averaged_logits(model: nn.Module, tiles: torch.Tensor) -> torch.Tensor:
    """The model's logits for (N, 1, H, W) normalised tiles, averaged over their views: what the demo classifies with."""
    return model(views(tiles)).view(2, len(tiles), -1).mean(0)


def averaged_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-view (2N, H, W) maps over the pixels of `views(tiles)` -> (N, H, W) over the tiles' own pixels."""
    plain, mirrored = maps.view(2, -1, *maps.shape[1:])
    return (plain + mirrored.flip(-1)) / 2
