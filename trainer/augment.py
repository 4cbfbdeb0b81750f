"""Photo-robust augmentation of in-memory training batches: each image its own random affine and tone.

A garment photographed by a person reaches the model, through `trainer.preprocess`, wider (laid flat,
sleeves spread), tilted, brighter or harsher in tone, and more textured than Zalando's product shots.
These transforms show the network such tiles while it still learns from Fashion-MNIST only.

Every image gets its own parameters, drawn from a generator the loader seeds per batch, so a resumed run
augments exactly as an uninterrupted one.  torchvision's v2 transforms draw one set of parameters per call
(per batch); PyTorch's `affine_grid` and `grid_sample` warp every image of a batch by its own matrix at once.
"""

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

SLEEVE_ANGLE = (10.0, 60.0)  # degrees a hanging sleeve is raised, as flat-laid tops show them
SLEEVE_PIVOT = (0.35, 0.5)  # the shoulder's distance from the middle, in half-widths of the tile
SHOULDER = -0.75  # the shoulders' height, from -1 (top) to 1 (bottom)
ERASE_AREA = (0.02, 0.4)  # share of the tile a random erasing covers (Zhong et al.'s defaults)
ERASE_ASPECT = (0.3, 3.3)
BLUR_KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).div_(16).view(1, 1, 3, 3)


class PhotoAugment:
    """`augment(images, labels, generator)`: normalised (B, 1, 28, 28) in, the same shape out, per-image transforms."""

    def __init__(
        self, cfg: DictConfig, mean: float, std: float, footwear: tuple[int, ...] = (), sleeved: tuple[int, ...] = (), size: int = 28
    ) -> None:
        self.cfg, self.mean, self.std = cfg, mean, std
        self.footwear, self.sleeved = torch.tensor(footwear, dtype=torch.long), torch.tensor(sleeved, dtype=torch.long)
        centres = (torch.arange(size) * 2 + 1) / size - 1  # pixel centres in [-1, 1], as align_corners=False
        self.coordinates = torch.meshgrid(centres, centres, indexing="ij")

    @staticmethod
    def wanted(cfg: DictConfig) -> bool:
        return cfg.p > 0 or cfg.footwear_from_above > 0 or cfg.sleeves_spread > 0 or cfg.erase > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        c = self.cfg
        pixels = images * self.std + self.mean  # [0, 1], garment light on black, as preprocess makes tiles
        if c.footwear_from_above > 0 and len(self.footwear):
            pixels = self.from_above(pixels, torch.isin(labels, self.footwear), g)
        chosen = torch.rand(len(images), generator=g) < c.p
        spread = torch.isin(labels, self.sleeved) & (torch.rand(len(images), generator=g) < c.sleeves_spread)
        pixels = self.warp(pixels, chosen, spread, g)
        if list(c.gamma) != [1, 1] or list(c.contrast) != [1, 1] or c.texture > 0 or c.blur > 0:
            pixels = self.tone(pixels, chosen, g)
        if c.erase > 0:
            pixels = erase(pixels, torch.rand(len(images), generator=g) < c.erase, g)
        return (pixels - self.mean) / self.std

    def warp(self, pixels: torch.Tensor, chosen: torch.Tensor, spread: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Rotation, scale, aspect (wider or narrower), shear and shift of the chosen images, and the sleeves of
        the `spread` ones raised, in one sampling."""
        c, n = self.cfg, len(pixels)
        moved = chosen | spread
        # drawn for all images: the same draws whichever are chosen
        angle = uniform(n, -c.rotate, c.rotate, g) * (math.pi / 180)
        scale, aspect = log_uniform(n, *c.scale, g), log_uniform(n, *c.aspect, g)
        shear = uniform(n, -c.shear, c.shear, g)
        shift = uniform(2 * n, -c.translate, c.translate, g).view(n, 2)
        raise_by = torch.where(spread, uniform(n, *SLEEVE_ANGLE, g) * (math.pi / 180), 0.0)[moved]
        pivot = uniform(n, *SLEEVE_PIVOT, g)[moved]
        if not moved.any():
            return pixels
        keep = ~chosen[moved]  # moved only to spread their sleeves: no affine
        angle, shear = angle[moved].masked_fill(keep, 0.0), shear[moved].masked_fill(keep, 0.0)
        scale, aspect = scale[moved].masked_fill(keep, 1.0), aspect[moved].masked_fill(keep, 1.0)
        shift = shift[moved].masked_fill(keep.unsqueeze(1), 0.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
        # grid_sample maps output to input coordinates, so this is the inverse of the transform applied
        rotate_scale = torch.stack([torch.stack([cos / sx, -sin / sx], 1), torch.stack([sin / sy, cos / sy], 1)], 1)
        shear_matrix = torch.eye(2).repeat(len(angle), 1, 1)
        shear_matrix[:, 0, 1] = shear
        theta = torch.cat([rotate_scale @ shear_matrix, shift.unsqueeze(2)], dim=2).view(-1, 6, 1, 1)
        # what F.affine_grid computes, as six broadcast products: its batched matmul is twice as slow on a CPU
        ys, xs = self.coordinates
        x, y = theta[:, 0] * xs + theta[:, 1] * ys + theta[:, 2], theta[:, 3] * xs + theta[:, 4] * ys + theta[:, 5]
        if spread.any():
            x, y = raise_sleeves(x, y, raise_by.view(-1, 1, 1), pivot.view(-1, 1, 1))
        out = pixels.clone()
        out[moved] = F.grid_sample(pixels[moved], torch.stack([x, y], dim=3), mode="bilinear", padding_mode="zeros", align_corners=False)
        return out

    def from_above(self, pixels: torch.Tensor, footwear: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Shoes as people photograph them, from above: upright, alone or as a pair side by side.

        Fashion-MNIST's shoes are all side views lying across the tile; photos of shoes on a floor show them
        standing up the picture, mostly two at once.  A quarter turn, and for a pair the shoe beside its mirror
        image, a few pixels apart and one a little ahead, fitted to the tile as `preprocess` fits a photo's
        garment, is the nearest a side view comes to that."""
        picked = footwear & (torch.rand(len(pixels), generator=g) < self.cfg.footwear_from_above)
        if not picked.any():
            return pixels
        shoes = pixels[picked]
        turn = torch.where(torch.rand(len(shoes), generator=g) < 0.5, 1, -1).view(-1, 1, 1, 1)
        upright = torch.where(turn > 0, shoes.rot90(1, (2, 3)), shoes.rot90(-1, (2, 3)))
        alone = (torch.rand(len(shoes), generator=g) < 0.5).view(-1, 1, 1, 1)
        out = pixels.clone()
        out[picked] = torch.where(alone, upright, side_by_side(upright, g))
        return out

    def tone(self, pixels: torch.Tensor, chosen: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Gamma and contrast (a photo's garment is often brighter and flatter), blur or sharpen, fabric texture."""
        c, n = self.cfg, len(pixels)
        per_image = chosen.view(n, 1, 1, 1)
        gamma, contrast = log_uniform(n, *c.gamma, g)[chosen].view(-1, 1, 1, 1), uniform(n, *c.contrast, g)[chosen].view(-1, 1, 1, 1)
        picked = pixels[chosen]
        # x ** gamma as exp(gamma * log x): a third of the cost of pow with a per-image exponent on a CPU
        toned = (torch.exp(torch.log(picked.clamp(min=1e-6)) * gamma) * contrast).clamp(0, 1) * (picked > 0)
        pixels = pixels.clone()
        pixels[chosen] = toned
        if c.texture > 0:  # smooth random light and shade inside the garment: folds, prints, wrinkles
            shade = F.interpolate(torch.randn(n, 1, 7, 7, generator=g), size=pixels.shape[-2:], mode="bilinear", align_corners=False)
            strength = uniform(n, 0.0, c.texture, g).view(n, 1, 1, 1) * per_image
            pixels = (pixels + strength * shade * (pixels > 0.05)).clamp(0, 1)
        if c.blur > 0:  # negative: sharpen (unsharp mask), positive: blur
            blurred = F.conv2d(pixels, BLUR_KERNEL, padding=1)
            amount = uniform(n, -c.blur, c.blur, g).view(n, 1, 1, 1) * per_image
            pixels = (pixels + amount * (blurred - pixels)).clamp(0, 1)
        return pixels


def uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def log_uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.exp(uniform(n, math.log(low), math.log(high), g))


def erase(pixels: torch.Tensor, chosen: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al., 2017): a rectangle of 2-40% of the tile, of any aspect from 1:3 to 3:1, filled
    with noise, in each chosen image: a regulariser that makes the network use the whole garment, not one part."""
    n, size = len(pixels), pixels.shape[-1]
    area = uniform(n, *ERASE_AREA, g) * size * size
    aspect = log_uniform(n, *ERASE_ASPECT, g)
    h = (area * aspect).sqrt().round().clamp(1, size)
    w = (area / aspect).sqrt().round().clamp(1, size)
    top = (torch.rand(n, generator=g) * (size - h + 1)).floor()
    left = (torch.rand(n, generator=g) * (size - w + 1)).floor()
    noise = torch.rand(pixels.shape, generator=g)
    index = torch.arange(size)
    rows = (index >= top.view(n, 1)) & (index < (top + h).view(n, 1))
    cols = (index >= left.view(n, 1)) & (index < (left + w).view(n, 1))
    inside = (rows.view(n, 1, size, 1) & cols.view(n, 1, 1, size)) & chosen.view(n, 1, 1, 1)
    return torch.where(inside, noise, pixels)


def raise_sleeves(x: torch.Tensor, y: torch.Tensor, angle: torch.Tensor, pivot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling coordinates that turn what lies outside the shoulders (|x| > pivot) up and out about them.

    A top laid flat spreads its sleeves; a product shot's hang down its sides.  The tile is zoomed out so the
    raised sleeves stay in it, and what the turn would bring in from between the shoulders is left empty: the
    armpit's gap.  A point under a raised sleeve whose turn reaches past the other shoulder takes what is there, a few
    pixels of cloth under the arm: leaving those empty too measured worse on real photos (docs/real_photos.md,
    "Twenty-fifth round").  An angle of 0 leaves the coordinates as they are.
    """
    zoom = 1 + 0.6 * torch.sin(angle)
    x, y = x * zoom, y * zoom
    side, cos, sin = torch.sign(x), torch.cos(angle), torch.sin(angle)
    dx, dy = x - side * pivot, y - SHOULDER
    source_x = side * pivot + dx * cos - dy * sin * side
    source_y = SHOULDER + dy * cos + dx * sin * side
    outside = x.abs() > pivot
    source_x = torch.where(outside, torch.where(source_x.abs() > pivot, source_x, 2.0), x)  # 2: off the tile, empty
    return source_x, torch.where(outside, source_y, y)


def side_by_side(upright: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each upright shoe beside its mirror image, 0-3 pixels apart and up to 3 ahead, cropped and fitted to the tile."""
    n, size = len(upright), upright.shape[-1]
    on = upright[:, 0] > 0.05
    index = torch.arange(size)
    rows, cols = on.any(dim=2), on.any(dim=1)
    top, bottom = torch.where(rows, index, size).amin(1), torch.where(rows, index + 1, 0).amax(1)
    left, right = torch.where(cols, index, size).amin(1), torch.where(cols, index + 1, 0).amax(1)
    empty = bottom <= top
    top, left = top.masked_fill(empty, 0), left.masked_fill(empty, 0)
    bottom, right = bottom.masked_fill(empty, size), right.masked_fill(empty, size)
    gap = torch.randint(0, 4, (n,), generator=g)
    ahead = torch.randint(-3, 4, (n,), generator=g)
    h, w = (bottom - top).float(), (right - left).float()
    height, width = h + ahead.abs(), 2 * w + gap
    side = torch.maximum(height, width)
    first_left, first_top = (side - width) / 2, (side - height) / 2 + ahead.clamp(min=0)
    second_left, second_top = first_left + w + gap, (side - height) / 2 + (-ahead).clamp(min=0)
    mirrored_left = size - right  # the mirror image's crop starts here

    def placed(source: torch.Tensor, crop_left: torch.Tensor, at_left: torch.Tensor, at_top: torch.Tensor) -> torch.Tensor:
        # output pixel-edge u in [0, size] shows source pixel crop_left + u * side / size - at_left; in [-1, 1] units:
        k = side / size
        zero = torch.zeros(n)
        rows = [torch.stack([k, zero, k + 2 * (crop_left - at_left) / size - 1], 1), torch.stack([zero, k, k + 2 * (top - at_top) / size - 1], 1)]
        return F.grid_sample(source, F.affine_grid(torch.stack(rows, 1), list(source.shape), align_corners=False), align_corners=False)

    first = placed(upright, left.float(), first_left, first_top)
    return torch.maximum(first, placed(upright.flip(3), mirrored_left.float(), second_left, second_top))
