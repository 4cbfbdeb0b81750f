"""Matplotlib figures for TensorBoard's Images tab, drawn off-screen."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from trainer.data import grey_image  # noqa: E402
from trainer.heatmap import overlay  # noqa: E402

EXPLAINED_ZOOM = 2  # tiles drawn at twice their size under a map, so its smooth edges show


def image_grid_figure(
    images: torch.Tensor, titles: list[str], colors: list[str] | None = None, ncols: int = 8, title: str = ""
) -> Figure:
    """Tiles of [0, 1] images (N, 1, H, W), light garments on dark as a person reads them, or RGB (N, 3, H, W),
    each titled.

    One mosaic in one axes, with the titles as text: a grid of subplots looks the same and takes ten times longer
    to draw, which a training run would pay for in wall time.
    """
    n, channels, h, w = images.shape
    nrows = -(-n // ncols)
    gap, head = w // 4, h // 2  # pixels between tiles, and above each tile for its title
    cell_h, cell_w = h + head, w + gap
    mosaic = np.ones((nrows * cell_h, ncols * cell_w, channels))  # white paper around black tiles
    for i in range(n):
        r, c = divmod(i, ncols)
        top, left = r * cell_h + head, c * cell_w + gap // 2
        mosaic[top : top + h, left : left + w] = images[i].permute(1, 2, 0).numpy()
    fig = plt.figure(figsize=(1.6 * ncols, 1.9 * nrows))
    ax = fig.add_axes((0, 0, 1, 0.96 if title else 1))
    ax.imshow(mosaic[..., 0] if channels == 1 else mosaic, cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_axis_off()
    for i, text in enumerate(titles[:n]):
        r, c = divmod(i, ncols)
        ax.text(c * cell_w + cell_w / 2, r * cell_h + head - 1, text, ha="center", va="bottom", fontsize=8,
                color=colors[i] if colors else "black")
    if title:
        fig.suptitle(title, y=0.995)
    return fig


def explained_figure(
    images: torch.Tensor, maps_a: torch.Tensor, maps_b: torch.Tensor, titles: list[tuple[str, str, str]], title: str
) -> Figure:
    """Each [0, 1] image (N, 1, H, W) beside two signed maps (N, H, W) drawn over it (trainer.heatmap), the pair
    on one scale so that the stronger evidence looks stronger; four such triples a row, in `image_grid_figure`."""
    cells, flat_titles, colors = [], [], []
    for image, a, b, texts in zip(images, maps_a, maps_b, titles):
        grey = grey_image(image)
        base = grey.convert("RGB").resize((grey.width * EXPLAINED_ZOOM, grey.height * EXPLAINED_ZOOM), Image.Resampling.NEAREST)
        scale = float(np.percentile(np.abs(torch.stack([a, b]).numpy()), 99))
        cells += [base, overlay(base, a.numpy(), scale=scale), overlay(base, b.numpy(), scale=scale)]
        flat_titles += list(texts)
        colors += ["red", "black", "black"]
    return image_grid_figure(rgb_batch(cells), flat_titles, colors, ncols=12, title=title)


def rgb_batch(pictures: list[Image.Image]) -> torch.Tensor:
    """RGB pictures of one size as the (N, 3, H, W) [0, 1] batch `image_grid_figure` draws."""
    return torch.from_numpy(np.stack([np.asarray(p, dtype=np.float32) / 255 for p in pictures])).permute(0, 3, 1, 2)


def confusion_matrix_figure(cm: np.ndarray, class_names: list[str]) -> Figure:
    """Counts, with each row (true class) shaded by its share, so errors stand out whatever the class size."""
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if shares[i, j] > 0.5 else "black")
    ax.set_title("Confusion matrix on the test set")
    fig.subplots_adjust(left=0.17, bottom=0.17, right=0.98, top=0.95)  # room for the class names; tight_layout is slow
    return fig
