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

BLUR_KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).div_(16).view(1, 1, 3, 3)


class PhotoAugment:
    """`augment(images, labels, generator)`: normalised (B, 1, 28, 28) in, the same shape out, per-image transforms."""

    def __init__(self, cfg: DictConfig, mean: float, std: float, footwear: tuple[int, ...] = (), size: int = 28) -> None:
        self.cfg, self.mean, self.std, self.footwear = cfg, mean, std, torch.tensor(footwear, dtype=torch.long)
        centres = (torch.arange(size) * 2 + 1) / size - 1  # pixel centres in [-1, 1], as align_corners=False
        self.coordinates = torch.meshgrid(centres, centres, indexing="ij")

    @staticmethod
    def wanted(cfg: DictConfig) -> bool:
        return cfg.p > 0 or cfg.footwear_from_above > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        c = self.cfg
        pixels = images * self.std + self.mean  # [0, 1], garment light on black, as preprocess makes tiles
        if c.footwear_from_above > 0 and len(self.footwear):
            pixels = self.from_above(pixels, torch.isin(labels, self.footwear), g)
        chosen = torch.rand(len(images), generator=g) < c.p
        pixels = self.warp(pixels, chosen, g)
        if list(c.gamma) != [1, 1] or list(c.contrast) != [1, 1] or c.texture > 0 or c.blur > 0:
            pixels = self.tone(pixels, chosen, g)
        return (pixels - self.mean) / self.std

    def warp(self, pixels: torch.Tensor, chosen: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Rotation, scale, aspect (wider or narrower), shear and shift of the chosen images, in one sampling."""
        c, n = self.cfg, len(pixels)
        angle = uniform(n, -c.rotate, c.rotate, g)[chosen] * (math.pi / 180)  # drawn for all: the same draws whichever are chosen
        scale = log_uniform(n, *c.scale, g)[chosen]
        aspect = log_uniform(n, *c.aspect, g)[chosen]
        shear = uniform(n, -c.shear, c.shear, g)[chosen]
        shift = uniform(2 * n, -c.translate, c.translate, g).view(n, 2)[chosen]
        if not chosen.any():
            return pixels
        cos, sin = torch.cos(angle), torch.sin(angle)
        sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
        # grid_sample maps output to input coordinates, so this is the inverse of the transform applied
        rotate_scale = torch.stack([torch.stack([cos / sx, -sin / sx], 1), torch.stack([sin / sy, cos / sy], 1)], 1)
        shear_matrix = torch.eye(2).repeat(len(angle), 1, 1)
        shear_matrix[:, 0, 1] = shear
        theta = torch.cat([rotate_scale @ shear_matrix, shift.unsqueeze(2)], dim=2).view(-1, 6, 1, 1)
        # what F.affine_grid computes, as six broadcast products: its batched matmul is twice as slow on a CPU
        ys, xs = self.coordinates
        grid = torch.stack([theta[:, 0] * xs + theta[:, 1] * ys + theta[:, 2], theta[:, 3] * xs + theta[:, 4] * ys + theta[:, 5]], dim=3)
        out = pixels.clone()
        out[chosen] = F.grid_sample(pixels[chosen], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out

    def from_above(self, pixels: torch.Tensor, footwear: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Shoes as people photograph them, from above: upright, alone or as a pair side by side.

        Fashion-MNIST's shoes are all side views lying across the tile; photos of shoes on a floor show them
        standing up the picture, mostly two at once.  A quarter turn, and for a pair a half-width copy beside its
        mirror image, is the nearest a side view comes to that."""
        picked = footwear & (torch.rand(len(pixels), generator=g) < self.cfg.footwear_from_above)
        if not picked.any():
            return pixels
        shoes = pixels[picked]
        turn = torch.where(torch.rand(len(shoes), generator=g) < 0.5, 1, -1).view(-1, 1, 1, 1)
        upright = torch.where(turn > 0, shoes.rot90(1, (2, 3)), shoes.rot90(-1, (2, 3)))
        half = upright.unflatten(3, (-1, 2)).mean(dim=4)  # half width: each pair of columns averaged
        pair = torch.cat([half, half.flip(3)], dim=3)
        alone = (torch.rand(len(shoes), generator=g) < 0.5).view(-1, 1, 1, 1)
        out = pixels.clone()
        out[picked] = torch.where(alone, upright, pair)
        return out

    def tone(self, pixels: torch.Tensor, chosen: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Gamma and contrast (a photo's garment is often brighter and flatter), blur or sharpen, fabric texture."""
        c, n = self.cfg, len(pixels)
        per_image = chosen.view(n, 1, 1, 1)
        garment = pixels > 0
        gamma = torch.where(per_image, log_uniform(n, *c.gamma, g).view(n, 1, 1, 1), 1.0)
        contrast = torch.where(per_image, uniform(n, *c.contrast, g).view(n, 1, 1, 1), 1.0)
        pixels = (pixels.clamp(min=1e-6).pow(gamma) * contrast).clamp(0, 1) * garment
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
