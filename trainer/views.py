"""Test-time views: the tile and its mirror image, and for a photo the tile shrunk and thinned as well, one place for
the classifier and its explanations.

Garments are nearly symmetric and training flips them, so the mirror image is an equally good look at the same
garment (not for a model trained with `train.hflip_footwear=false`, which never saw a mirrored shoe: such a model is
read without its mirror images, `mirror=False`); averaging the logits of the two makes the answers on photos steadier
(docs/real_photos.md). A photo's garment is fitted to the whole tile, where a Fashion-MNIST garment leaves a margin at
its sides, and training rescales the garments by 0.8-1.1: averaging the photo's tile at two sizes, the smaller with a
black margin (`PHOTO_SIZES`), makes it right more often and ranks its answers better by confidence
(docs/real_photos.md, "Fourth round"). A photo's tile is also seen thinned (`thinned`, "Sixteenth round"), and its
tighter cut-out shrunk ("Thirteenth round"). Fashion-MNIST's own tiles are better read at full size only (`TILE_SIZES`).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

TILE_SIZES = (28,)  # a tile that already looks like Fashion-MNIST's
PHOTO_SIZES = (28, 22)  # the tile a photo was cut out to, in pixels a side
TIGHTER_SIZES = (22,)  # a photo's tighter cut-outs (trainer.preprocess.THRESHOLDS): shrunk only
THINNED_SIZES = (28, 22)  # the photo's tile thinned (`thinned`), at both of its sizes


def shrunk(tiles: torch.Tensor, size: int, background: float) -> torch.Tensor:
    """(N, 1, H, W) tiles resized to size x size in the middle of a tile of `background` (the normalised black)."""
    if size == tiles.shape[-1]:
        return tiles
    small = F.interpolate(tiles - background, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    middle = _middle(tiles.shape[-1], size)
    out = torch.full_like(tiles, background)
    out[..., middle, middle] = small + background
    return out


def _middle(full: int, size: int) -> slice:
    """Where a view shrunk to `size` lies in its `full`-sized tile, along either axis."""
    before = (full - size) // 2
    return slice(before, before + size)


def thinned(tiles: torch.Tensor, background: float) -> torch.Tensor:
    """(N, 1, H, W) tiles averaged with their 3x3 grey-level erosion: the outline darkens and recedes, and texture
    darkens towards its local minimum while flat areas keep their grey (a photo's tiles: mean grey 157 -> 129)."""
    garment = tiles - background
    eroded = -F.max_pool2d(-garment, 3, stride=1, padding=1)  # the tile's edge is not eroded from outside it
    return background + 0.5 * (garment + eroded)


def views(tiles: torch.Tensor, sizes: tuple[int, ...] = TILE_SIZES, background: float = 0.0, mirror: bool = True) -> torch.Tensor:
    """(N, 1, H, W) -> (2SN, 1, H, W) for S sizes: the tiles at each size, then the mirror images of all of them
    (without `mirror`, (SN, 1, H, W): for a model whose training did not mirror every class)."""
    each = torch.cat([shrunk(tiles, size, background) for size in sizes])
    return torch.cat([each, each.flip(-1)]) if mirror else each


def averaged_logits(
    model: nn.Module, tiles: torch.Tensor, sizes: tuple[int, ...] = TILE_SIZES, background: float = 0.0, mirror: bool = True,
) -> torch.Tensor:
    """The model's logits for (N, 1, H, W) normalised tiles, averaged over their views: what the demo classifies with."""
    logits = model(views(tiles, sizes, background, mirror))
    return logits.view(-1, len(tiles), logits.shape[-1]).mean(0)


def photo_logits(model: nn.Module, tile: torch.Tensor, tighter: torch.Tensor, background: float = 0.0, mirror: bool = True) -> torch.Tensor:
    """A photo's logits (1, C): its (1, 1, H, W) tile at PHOTO_SIZES, the tile thinned at THINNED_SIZES, and its
    (K, 1, H, W) tighter cut-outs at TIGHTER_SIZES, each view with its mirror image (with `mirror`), averaged in one batch.  Where a
    photo's garment ends is uncertain; the tighter cut-out, without its shadow and pale edges, shrunk as the smaller view
    is, makes the answers right more often and ranks them better by confidence; at full size it does not help
    (docs/real_photos.md, "Thirteenth round").  The thinned views make pullovers and shoes right more often, at some
    cost to coats (docs/real_photos.md, "Sixteenth round")."""
    every_view = torch.cat([
        views(tile, PHOTO_SIZES, background, mirror),
        views(thinned(tile, background), THINNED_SIZES, background, mirror),
        views(tighter, TIGHTER_SIZES, background, mirror),
    ])
    return model(every_view).mean(0, keepdim=True)


def averaged_maps(maps: torch.Tensor, sizes: tuple[int, ...] = TILE_SIZES, mirror: bool = True) -> torch.Tensor:
    """Per-view (2SN, H, W) maps over the pixels of `views(tiles, sizes, mirror=mirror)` ((SN, H, W) without `mirror`)
    -> (N, H, W) over the tiles' own pixels: mirrored back, and the smaller views' squares stretched back to the whole
    tile."""
    full, copies = maps.shape[-1], 2 if mirror else 1
    per_view = maps.view(copies, len(sizes), -1, full, full)
    per_view = torch.cat([per_view[0], per_view[1].flip(-1)]) if mirror else per_view[0]
    back = []
    for size, view_maps in zip(sizes * copies, per_view, strict=True):
        middle = _middle(full, size)
        square = view_maps[:, middle, middle]
        back.append(square if size == full else F.interpolate(square[:, None], size=(full, full), mode="bilinear", align_corners=False)[:, 0])
    return torch.stack(back).mean(0)
