"""Drawing a signed attribution map (trainer.attribution) over a picture: for the demo, TensorBoard and the docs.

Kept apart from the attribution itself so that drawing needs only NumPy and Pillow, not Captum.
"""

import numpy as np
from PIL import Image

POSITIVE, NEGATIVE = np.array([255, 60, 0]), np.array([0, 120, 255])  # orange: for the class; blue: against it
OPACITY = 180  # of 255, at full strength: the picture stays visible under the strongest evidence


def heat_rgba(heat: np.ndarray, scale: float | None = None) -> np.ndarray:
    """A signed map as an RGBA uint8 overlay: orange where the pixels speak for the class, blue against it, the
    opacity growing with the strength; `scale` (default: the 99th percentile of |heat|) is full strength."""
    heat = np.asarray(heat, dtype=np.float32)
    if scale is None:
        scale = float(np.percentile(np.abs(heat), 99))
    strength = np.clip(np.abs(heat) / max(scale, 1e-12), 0.0, 1.0)
    rgba = np.zeros((*heat.shape, 4), dtype=np.uint8)
    rgba[..., :3] = np.where((heat >= 0)[..., None], POSITIVE, NEGATIVE)
    rgba[..., 3] = np.rint(OPACITY * strength**0.75).astype(np.uint8)  # gamma: weak evidence stays visible
    return rgba


def overlay(
    base: Image.Image, heat: np.ndarray, box: tuple[float, float, float, float] | None = None, scale: float | None = None
) -> Image.Image:
    """`base` (RGB) with the heat map drawn over `box` (left, top, right, bottom; default: all of it), smoothly
    resized; the parts of the box outside the picture (the padding that made the crop square) are cut off.
    `scale` as in `heat_rgba`: one scale for several maps makes their strengths comparable."""
    left, top, right, bottom = box or (0, 0, *base.size)
    size = (max(1, round(right - left)), max(1, round(bottom - top)))
    layer = Image.fromarray(heat_rgba(heat, scale), "RGBA").resize(size, Image.Resampling.BILINEAR)
    canvas = Image.new("RGBA", base.size, (0, 0, 0, 0))
    canvas.paste(layer, (round(left), round(top)))
    return Image.alpha_composite(base.convert("RGBA"), canvas).convert("RGB")
