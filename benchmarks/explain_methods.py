"""`python -m benchmarks.explain_methods --out DIR --checkpoint A.pt [--checkpoint B.pt] [--photos DIR]`: the
attribution methods of trainer.attribution compared on real photos, to choose the demo's.

For each model and each method, on the tiles of real photos (the first 10 of each class its manifest lists, default
$FASHION_MNIST_ROOT/realphotos), explaining the model's top class:
- cost: in-process milliseconds per map, over the views the demo explains a photo with (trainer.views), on one
  torch thread as the demo serves (median and p95 of the wall time, and the median of the process's CPU time, which a
  busy machine inflates less);
- deletion: how far the class's logit falls when the 10% of the tile's pixels the map credits most are blacked
  out, against blacking out as many garment pixels at random (median over the photos): a map that points at what
  the model uses makes the logit fall further;
- a contact sheet, DIR/explain_methods.png: for one photo per class, the photo, its tile and every method's map.

DIR/explain_methods.json:
  machine     dict (trainer.machine.machine)
  quick       bool
  photos      int: photos timed and scored
  models      {checkpoint: {"arch": str, "methods": {method: {"median_ms", "p95_ms", "median_cpu_ms", "deletion_drop",
                                                               "random_drop"}}}}
"""

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.common import data_root, entry, fmt, parse, parser, report_results, table
from trainer.attribution import METHODS, attribute_views
from trainer.errors import UserError
from trainer.heatmap import overlay
from trainer.machine import machine
from trainer.photos import read_manifest
from trainer.predict import DECODE_SIDE, Classifier, resolve_model_path
from trainer.preprocess import ImageError, normalise_tile, open_image, to_fashion_mnist, to_rgb
from trainer.views import PHOTO_SIZES

PER_GROUP, QUICK_PER_GROUP = 10, 2
DELETED = 0.10  # share of the tile's pixels blacked out for the deletion score
CELL = 112  # pixels per picture on the contact sheet
SHORT = {"occlusion": "Occlusion", "integrated_gradients": "Int. Gradients", "gradient_shap": "GradientShap", "grad_cam": "Grad-CAM"}


def real_photos(folder: Path, per_group: int) -> list[Path]:
    """The first `per_group` photos (by path) of each class the folder's manifest lists, as benchmarks.real_photos reads it."""
    return [path for path, _ in read_manifest(folder, per_group)]


def tiles_of(photos: list[Path]) -> list[tuple[Path, Image.Image, np.ndarray]]:
    """(path, decoded photo, 28x28 tile) as the demo makes them; photos with nothing to find are left out."""
    out = []
    for path in photos:
        try:
            image = open_image(path, max_side=DECODE_SIDE)
            out.append((path, image, to_fashion_mnist(image)))
        except ImageError:
            continue
    return out


def deletion_drops(
    classifier: Classifier, x: torch.Tensor, heat: torch.Tensor, target: int, rng: np.random.Generator
) -> tuple[float, float]:
    """The class logit's fall when the most-credited pixels are blacked out, and when as many garment pixels are."""
    black = classifier.background
    k = round(DELETED * heat.numel())
    before = float(logits_of(classifier, x)[target])
    ranked = x.clone()
    ranked.view(-1)[heat.flatten().argsort(descending=True)[:k]] = black
    garment = (x.view(-1) > black).nonzero().flatten().numpy()
    random = x.clone()
    random.view(-1)[torch.from_numpy(rng.choice(garment, min(k, len(garment)), replace=False))] = black
    return before - float(logits_of(classifier, ranked)[target]), before - float(logits_of(classifier, random)[target])


def measure(classifier: Classifier, tiles: list[tuple[Path, Image.Image, np.ndarray]]) -> dict[str, dict[str, float]]:
    black = classifier.background
    results = {}
    for method in METHODS:
        times, cpu_times, drops, randoms = [], [], [], []
        rng = np.random.default_rng(0)
        for _, _, tile in tiles:
            x = normalise_tile(tile, classifier.mean, classifier.std)
            target = int(logits_of(classifier, x).argmax())
            start, cpu_start = time.perf_counter(), time.process_time()
            heat = attribute_views(classifier.model, x, target, black, method, PHOTO_SIZES, classifier.mirror)
            times.append(1000 * (time.perf_counter() - start))
            cpu_times.append(1000 * (time.process_time() - cpu_start))
            drop, random = deletion_drops(classifier, x, heat, target, rng)
            drops.append(drop)
            randoms.append(random)
        results[method] = {
            "median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)),
            "median_cpu_ms": float(np.median(cpu_times)),
            "deletion_drop": float(np.median(drops)), "random_drop": float(np.median(randoms)),
        }
    return results


def logits_of(classifier: Classifier, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return classifier.model(x[None])[0]


def square(image: Image.Image, side: int) -> Image.Image:
    """The photo shrunk into a white square, whole."""
    image = to_rgb(image).copy()  # to_rgb returns an RGB image itself, which thumbnail would shrink in place
    image.thumbnail((side, side))
    canvas = Image.new("RGB", (side, side), "white")
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def contact_sheet(classifiers: list[Classifier], tiles: list[tuple[Path, Image.Image, np.ndarray]], path: Path) -> None:
    """One row per photo: the photo, its tile, then each model's map from each method over the tile."""
    from trainer.handlers.figures import image_grid_figure, rgb_batch

    cells, titles = [], []
    for photo_path, image, tile in tiles:
        seen = Image.fromarray(tile).convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST)
        cells += [square(image, CELL), seen]
        titles += [photo_path.parent.name, "tile"]
        for classifier in classifiers:
            black = classifier.background
            x = normalise_tile(tile, classifier.mean, classifier.std)
            target = int(logits_of(classifier, x).argmax())
            for method in METHODS:
                cells.append(overlay(seen, attribute_views(classifier.model, x, target, black, method, PHOTO_SIZES, classifier.mirror).numpy()))
                titles.append(f"{classifier.meta['arch']}: {SHORT[method]}\n→ {classifier.class_names[target]}")
    fig = image_grid_figure(rgb_batch(cells), titles, ncols=2 + len(classifiers) * len(METHODS), title="Attribution methods on real photos")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--checkpoint", action="append", required=True, help="a model.pt to compare on (repeat for more)")
    p.add_argument("--photos", type=Path, default=Path(data_root()) / "realphotos", help="folder of real photos with their MANIFEST.tsv (as benchmarks.real_photos takes)")
    args = parse(p, argv)
    torch.set_num_threads(1)  # as demo/app.py serves
    info = machine()
    classifiers = [Classifier(resolve_model_path(c)) for c in args.checkpoint]  # a bad model file is said before the photos are cut out
    tiles = tiles_of(real_photos(args.photos, QUICK_PER_GROUP if args.quick else PER_GROUP))
    if not tiles:  # the medians below have nothing to take
        raise UserError(f"{args.photos} has no photo to explain: its manifest lists no photo of a garment that can be read")
    models = {str(c.path): {"arch": c.meta["arch"], "methods": measure(c, tiles)} for c in classifiers}
    # the first photo of each class; where none of those can be read, the first photo measured
    contact_sheet(classifiers, tiles_of(real_photos(args.photos, 1)) or tiles[:1], args.out / "explain_methods.png")
    report: dict[str, Any] = {"machine": info, "quick": args.quick, "photos": len(tiles), "models": models}
    rows = [
        [model["arch"], method, fmt(m["median_ms"], ".1f"), fmt(m["p95_ms"], ".1f"), fmt(m["median_cpu_ms"], ".1f"),
         fmt(m["deletion_drop"], ".2f"), fmt(m["random_drop"], ".2f")]
        for model in models.values() for method, m in model["methods"].items()
    ]
    headers = ["model", "method", "median ms", "p95 ms", "median CPU ms", "logit drop, top 10% deleted", "random 10%"]
    details = table(headers, rows)
    report_results(args.out, "explain_methods", report, details, [])
    return 0


if __name__ == "__main__":
    entry(main)
