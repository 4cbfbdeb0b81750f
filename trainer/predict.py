"""`python -m trainer.predict IMAGE... [--checkpoint PATH]`: classify clothing photos with a run's `model.pt`.

The Gradio demo and the benchmarks use the same `Classifier`, so all three see a photo the same way: the
photo is cut out to a tile, and to a tighter one (`trainer.preprocess`), the network's logits are averaged over
their views (`trainer.views`), and divided by the temperature `model.pt` holds for that kind of
input, so that the top class's probability is about how often such an answer is right. Below `SURE` the answer is
"not sure", and so is any answer for a cut-out that runs across the picture (scenery, `Cutout.across`).
"""

import argparse
import hashlib
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from trainer.errors import UserError, fail
from trainer.export import load_model_file
from trainer.preprocess import Cutout, ImageError, cut_out, normalise_tile, open_image, to_rgb
from trainer.views import PHOTO_SIZES, TILE_SIZES, averaged_logits, photo_logits

MODEL_ENV = "FASHION_MNIST_MODEL"
DECODE_SIDE = 384  # JPEGs decode straight to about this size: a 12 MP photo in milliseconds, plenty for 28x28
SURE = 0.6  # the calibrated probability below which the demo is not sure (chosen on real photos, docs/real_photos.md)
# the least share of a tile's pixels above grey 32 that the demo answers surely: every Fashion-MNIST training tile has
# at least 2.4%; a tile with less shows a speck, not a garment
MIN_INK = 0.02
RECENT_UPLOADS = 16  # uploads whose decoded image and prediction the demo's classifier keeps (`Classifier.read_file`)
RECENT_PIXELS = 12_500_000  # ... and no more pixels than these in all (38 MB): 16 phone photos (12 MP decodes to 1008x756)


@dataclass
class Prediction:
    probabilities: dict[str, float]  # calibrated: about how often an answer this sure is right
    seen: np.ndarray  # the 28x28 uint8 tile the model classified
    box: tuple[float, float, float, float]  # the square of the decoded photo that the tile shows
    segmented: bool  # False: the garment could not be cut out, and the middle of the picture was used
    sure: bool  # the top probability is at least SURE, the cut-out is no band across the picture, its tile no speck
    sizes: tuple[int, ...] = TILE_SIZES  # the sizes of the test-time views it was classified with (trainer.views)
    across: bool = False  # what was cut out runs across the picture (`trainer.preprocess.Cutout.across`): never sure

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda item: -item[1])[:k]


class Classifier:
    def __init__(self, model_path: Path, remember: int = RECENT_UPLOADS) -> None:
        self.model, self.meta = load_model_file(model_path)
        self.path = Path(model_path)
        self.class_names: list[str] = list(self.meta["class_names"])
        self.mean, self.std = float(self.meta["mean"][0]), float(self.meta["std"][0])
        self.background = normalise_tile(np.zeros((1, 1), np.uint8), self.mean, self.std).item()  # black, as tiles have it
        self.temperature = float(self.meta.get("temperature", 1.0))  # model.pt files older than calibration: 1
        self.photo_temperature = float(self.meta.get("photo_temperature", self.temperature))
        self.mirror = bool(self.meta.get("mirror_views", True))  # false for a model trained without mirrored shoes
        self.remember = remember  # uploads whose decoded image and prediction `read_file` keeps
        self._recent: OrderedDict[tuple, tuple[Image.Image, Prediction]] = OrderedDict()
        self._recent_lock = threading.Lock()  # the demo classifies several uploads at once

    @torch.inference_mode()
    def logits(self, tiles: torch.Tensor, sizes: tuple[int, ...] = TILE_SIZES) -> torch.Tensor:
        """Logits of normalised (N, 1, 28, 28) tiles, averaged over the test-time views at these sizes."""
        return averaged_logits(self.model, tiles, sizes, self.background, self.mirror)

    @torch.inference_mode()
    def photo_logits(self, tile: torch.Tensor, tighter: torch.Tensor) -> torch.Tensor:
        """A photo's logits: its normalised (1, 1, 28, 28) tile and (K, 1, 28, 28) tighter cut-outs (trainer.views)."""
        return photo_logits(self.model, tile, tighter, self.background, self.mirror)

    def classify(self, image: Image.Image) -> Prediction:
        return self.classify_cut(cut_out(image))

    def classify_cut(self, cut: Cutout) -> Prediction:
        """A photo already cut out (`trainer.preprocess.cut_out`): several models can share one cut-out."""
        tiles = torch.stack([normalise_tile(tile, self.mean, self.std) for tile in cut.tiles])
        if cut.photo:
            sizes, logits = PHOTO_SIZES, self.photo_logits(tiles[:1], tiles[1:])[0] / self.photo_temperature
        else:
            sizes, logits = TILE_SIZES, self.logits(tiles, TILE_SIZES)[0] / self.temperature
        probs = F.softmax(logits, dim=0)
        # a band across the picture is scenery, and a tile with next to nothing in it a speck: neither is a garment
        sure = probs.max().item() >= SURE and not cut.across and float((cut.tile > 32).mean()) >= MIN_INK
        return Prediction(dict(zip(self.class_names, probs.tolist())), cut.tile, cut.box, cut.segmented, sure, sizes, cut.across)

    def classify_file(self, source: str | Path | bytes) -> Prediction:
        """Decode an untrusted upload safely (raising ImageError with a user-facing sentence), then classify it."""
        return self.read_file(source)[1]

    def read_file(self, source: str | Path | bytes) -> tuple[Image.Image, Prediction]:
        """The decoded upload as a person sees it (a transparent one composited, `to_rgb`) and its prediction.

        The demo asks for each upload three times (its answer, that answer in words, and the explanation), so the
        last `remember` uploads are kept, by their content: each is decoded, cut out and classified once.
        """
        key = upload_key(source)
        with self._recent_lock:
            if key in self._recent:
                self._recent.move_to_end(key)
                return self._recent[key]
        image = open_image(source, max_side=DECODE_SIDE)
        result = to_rgb(image), self.classify(image)  # kept as shown: a transparent upload composited once
        if key is not None and self.remember:
            with self._recent_lock:
                self._recent[key] = result
                while len(self._recent) > self.remember or (len(self._recent) > 1 and self._recent_pixels() > RECENT_PIXELS):
                    self._recent.popitem(last=False)
        return result

    def _recent_pixels(self) -> int:
        """A 10:1 panorama decodes to up to 7,670 x 767 pixels (`DECODE_SIDE` on its short side): 16 of them were 340 MB."""
        return sum(image.width * image.height for image, _ in self._recent.values())


def upload_key(source: str | Path | bytes) -> tuple | None:
    """What identifies an upload's content: the digest of its bytes, or the file and when it last changed.

    None when the file cannot be looked at: `open_image` then says why, in a sentence for the user."""
    if isinstance(source, bytes):
        return ("bytes", hashlib.blake2b(source, digest_size=16).digest())
    try:
        status = os.stat(source)
    except (OSError, ValueError):
        return None
    return ("file", os.path.realpath(source), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def newest_model(runs_root: str | Path = "runs") -> Path | None:
    candidates = sorted(Path(runs_root).glob("*/model.pt"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def resolve_model_path(checkpoint: str | None, runs_root: str | Path = "runs") -> Path:
    """`--checkpoint` (a model.pt, or a run directory holding one), else $FASHION_MNIST_MODEL, else the newest
    `runs/*/model.pt`."""
    chosen = checkpoint or os.environ.get(MODEL_ENV)
    if chosen and Path(chosen).is_dir():  # a run directory: its model
        if not (Path(chosen) / "model.pt").is_file():
            raise UserError(f"{chosen} is a folder without a model.pt: point at a run's model.pt or its run directory")
        return Path(chosen) / "model.pt"
    if chosen:
        return Path(chosen)
    newest = newest_model(runs_root)
    if newest is None:
        raise UserError(
            f"no trained model found in {Path(runs_root).resolve()}/*/model.pt: train one with "
            f"`python -m trainer.main`, or pass --checkpoint PATH (or set {MODEL_ENV})"
        )
    return newest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, GIF, WebP, ...)")
    parser.add_argument("--checkpoint", help=f"model.pt to use (default: ${MODEL_ENV} or the newest runs/*/model.pt)")
    parser.add_argument("--top", type=int, default=3, choices=range(1, 11), metavar="1-10", help="how many classes to show per image")
    args = parser.parse_args(argv)
    try:
        classifier = Classifier(resolve_model_path(args.checkpoint))
    except UserError as exc:
        return fail(exc)
    failures = 0
    for path in args.images:
        try:
            prediction = classifier.classify_file(path)
        except ImageError as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        hedge = "" if prediction.sure else "not sure: "
        print(f"{path}: {hedge}" + ", ".join(f"{name} {p:.1%}" for name, p in prediction.top(args.top)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
