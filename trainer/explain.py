"""Why the model chose a class in a photo: the attribution map (`trainer.attribution`) of the tile the classifier
saw, over its test-time views as it classifies them, drawn over the tile and, through the crop box, over the
uploaded photo. The demo's `/explain` serves it.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainer.attribution import DEFAULT_METHOD, attribute_views
from trainer.heatmap import overlay
from trainer.predict import Classifier, Prediction
from trainer.preprocess import normalise_tile, to_rgb

FAINT = 4  # grey levels: resizing a photo's crop (Lanczos) leaves ripples of 1-4 a pixel or two beside the garment


@dataclass
class Explanation:
    """The evidence for one class in a photo, with what is needed to draw it over the tile and over the photo."""

    class_name: str
    heat: np.ndarray  # (28, 28) signed map over the tile
    prediction: Prediction  # the classifier's answer for the photo: its tile, and where in the photo that is
    image: Image.Image  # the photo as decoded, a transparent one composited as a person sees it (`to_rgb`)

    def on_tile(self, size: int) -> Image.Image:
        """The tile enlarged to `size` pixels (sharp pixels, as "what the model sees" shows it), the map over it."""
        tile = Image.fromarray(self.prediction.seen).convert("RGB").resize((size, size), Image.Resampling.NEAREST)
        return overlay(tile, self.heat)

    def on_photo(self) -> Image.Image:
        """The photo with the map over the square of it the tile shows."""
        return overlay(to_rgb(self.image), self.heat, self.prediction.box)


def explain(
    classifier: Classifier, image: Image.Image, class_name: str | None = None, method: str = DEFAULT_METHOD,
    prediction: Prediction | None = None,
) -> Explanation:
    """Explain `class_name` (default: the top class) on the photo's tile, as the classifier sees it: `prediction`,
    its answer for `image` when already made, else classified here."""
    if class_name is not None and class_name not in classifier.class_names:
        raise ValueError(f"unknown class {class_name!r}: one of {', '.join(classifier.class_names)}")
    if prediction is None:
        prediction = classifier.classify(image)
    class_name = class_name or prediction.top(1)[0][0]
    tile = normalise_tile(prediction.seen, classifier.mean, classifier.std)
    target = classifier.class_names.index(class_name)
    # the maps of the tile's own views (both sizes, mirrored where the classifier mirrors), averaged: for a photo the
    # classifier also averages thinned and tighter views, which the maps leave out for time; they are as faithful to its
    # answer (docs/explanations.md)
    heat = attribute_views(classifier.model, tile, target, classifier.background, method, prediction.sizes, classifier.mirror)
    # blacking out a ripple changes nothing, yet the patches round it would give it the garment's evidence: an outline
    # beside the garment that is not in the photo
    heat = heat * torch.from_numpy(prediction.seen > FAINT)
    return Explanation(class_name, heat.numpy(), prediction, image)


def explain_file(classifier: Classifier, source: str | Path | bytes, class_name: str | None = None) -> Explanation:
    """`explain` for an untrusted upload, decoded and classified as `Classifier.read_file` does (once per upload)."""
    image, prediction = classifier.read_file(source)
    return explain(classifier, image, class_name, prediction=prediction)
