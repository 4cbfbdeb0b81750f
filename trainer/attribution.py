"""Attribution maps of a network's 28x28 tiles, computed with Captum: how much each pixel raised (positive) or
lowered (negative) the logit of one class, measured against a blank tile (black, the background of every
Fashion-MNIST image), so what the garment itself contributed.

Model-level only, so the trainer's TensorBoard view of a run's worst mistakes uses it without the demo's
classifier; `trainer.explain` puts the maps over a photo. docs/explanations.md compares the methods and says why
the default was chosen.
"""

import functools
import itertools
import math
from collections.abc import Callable

import torch
import torch.nn as nn
from captum.attr import GradientShap, IntegratedGradients, LayerAttribution, LayerGradCam

from trainer.views import averaged_maps, views

METHODS = ("occlusion", "integrated_gradients", "gradient_shap", "grad_cam")
DEFAULT_METHOD = "occlusion"
LAYERLESS_FALLBACK = "occlusion"  # for a network without the convolution Grad-CAM needs: works on any network
OCCLUSION_WINDOW, OCCLUSION_STRIDE = 5, 4  # 49 patches a tile: as faithful as a stride of 3 (81) or 4x4 at 2 (169), cheaper
IG_STEPS = 32
CHUNK = 8  # tiles per attribution call
OCCLUSION_BATCH = 162  # most occluded copies per forward pass: a CPU runs 486 in one batch 3x slower per copy (its cache)
SHAP_SAMPLES, SHAP_NOISE = 16, 0.2


def last_conv(model: nn.Module) -> nn.Conv2d | None:
    """The network's last convolution, where Grad-CAM looks; None for a network without one."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def method_for(model: nn.Module, method: str) -> str:
    """`method`, unless the network lacks the layer it needs: then one that works on any network."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}: one of {', '.join(METHODS)}")
    return LAYERLESS_FALLBACK if method == "grad_cam" and last_conv(model) is None else method


def attribute(
    model: nn.Module, tiles: torch.Tensor, targets: torch.Tensor | int, background: float, method: str = DEFAULT_METHOD
) -> torch.Tensor:
    """Signed maps (N, 28, 28) of normalised tiles (N, 1, 28, 28) for each tile's target class.

    `background` is the normalised value of a black pixel, the blank tile every map is measured against.
    """
    model.eval()
    run = ATTRIBUTIONS[method_for(model, method)]
    targets = torch.as_tensor(targets).expand(len(tiles)).tolist()
    maps = [
        run(model, chunk, targets[start : start + CHUNK], torch.full_like(chunk, background)).detach()
        for start, chunk in zip(range(0, len(tiles), CHUNK), tiles.detach().split(CHUNK))
    ]
    return torch.cat(maps).sum(1)


@torch.no_grad()
def _occlusion(model: nn.Module, tiles: torch.Tensor, targets: list[int], blank: torch.Tensor) -> torch.Tensor:
    """How much the logit drops when a 5x5 patch of the garment is blacked out, averaged over the patches a pixel
    is in; black pixels, which blacking out leaves as they were, get none.

    Captum's `Occlusion` computes the same map (tests/test_explain.py compares them), but builds every patch's mask
    anew for every call and runs the network on patches of pure background too, which blacking out leaves as they
    were: this makes the masks once and runs only the patches that touch the garment (docs/explanations.md).
    """
    masks = occlusion_masks(tiles.shape[-1]).to(tiles.device)  # (P, H, W); on a GPU run's model, a GPU's
    garment = tiles[:, 0] != blank[:, 0]  # (N, H, W)
    touched = (garment[:, None] & masks).flatten(2).any(2)  # (N, P): the patches whose occlusion changes the tile
    if not touched.any():
        return torch.zeros_like(tiles)
    tile_index, patch_index = touched.nonzero(as_tuple=True)
    target = torch.as_tensor(targets, device=tiles.device)
    whole = model(tiles).gather(1, target[:, None])[:, 0]
    occluded = torch.where(masks[patch_index, None], blank[tile_index], tiles[tile_index])
    batches = occluded.tensor_split(math.ceil(len(occluded) / OCCLUSION_BATCH))  # equal: 2 x 98, not 162 + 34, is faster
    scores = torch.cat([model(batch) for batch in batches])
    drops = whole[tile_index] - scores.gather(1, target[tile_index, None])[:, 0]
    summed = torch.zeros_like(tiles[:, 0]).index_put_((tile_index,), drops[:, None, None] * masks[patch_index], accumulate=True)
    return (summed / masks.sum(0))[:, None] * garment[:, None]


@functools.cache
def occlusion_masks(size: int) -> torch.Tensor:
    """(P, size, size) boolean masks of the occlusion's patches, as Captum lays them out: OCCLUSION_WINDOW pixels a
    side every OCCLUSION_STRIDE pixels from the top-left corner, the last row and column of them cut by the edge."""
    count = math.ceil((size - OCCLUSION_WINDOW) / OCCLUSION_STRIDE) + 1
    starts = [k * OCCLUSION_STRIDE for k in range(count)]
    masks = torch.zeros(len(starts) ** 2, size, size, dtype=torch.bool)
    for k, (top, left) in enumerate(itertools.product(starts, starts)):
        masks[k, top : top + OCCLUSION_WINDOW, left : left + OCCLUSION_WINDOW] = True
    return masks


def _integrated_gradients(model: nn.Module, tiles: torch.Tensor, targets: list[int], blank: torch.Tensor) -> torch.Tensor:
    """The gradient integrated along the straight path from the blank tile to the tile, times their difference."""
    return IntegratedGradients(model).attribute(tiles, blank, target=targets, n_steps=IG_STEPS)


def _gradient_shap(model: nn.Module, tiles: torch.Tensor, targets: list[int], blank: torch.Tensor) -> torch.Tensor:
    """Integrated gradients from noisy copies of the tile towards a blank tile, at random points of the path."""
    return GradientShap(model).attribute(tiles, blank[:1], n_samples=SHAP_SAMPLES, stdevs=SHAP_NOISE, target=targets)


def _grad_cam(model: nn.Module, tiles: torch.Tensor, targets: list[int], blank: torch.Tensor) -> torch.Tensor:
    """Grad-CAM on the last convolution (positive part, as in the paper), stretched bilinearly to the tile."""
    cam = LayerGradCam(model, last_conv(model)).attribute(tiles, target=targets, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(tiles.shape[-2:]), "bilinear")


ATTRIBUTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "occlusion": _occlusion,
    "integrated_gradients": _integrated_gradients,
    "gradient_shap": _gradient_shap,
    "grad_cam": _grad_cam,
}


def attribute_views(
    model: nn.Module, tile: torch.Tensor, target: int, background: float, method: str = DEFAULT_METHOD,
    sizes: tuple[int, ...] | None = None, mirror: bool = True,
) -> torch.Tensor:
    """One tile's map (28, 28); with `sizes`, the maps of the classifier's test-time views at those sizes
    (`trainer.views`), each brought back onto the tile's pixels and averaged, as a classifier that averages its
    logits over them sees the garment. The smaller views' maps, stretched back, would spill onto the black round the
    garment, which blacking out cannot change: the garment's own pixels keep the map."""
    if sizes is None:
        return attribute(model, tile[None], target, background, method)[0]
    maps = attribute(model, views(tile[None], sizes, background, mirror), target, background, method)
    maps = averaged_maps(maps, sizes, mirror)[0]
    return maps * (tile[0] != background)
