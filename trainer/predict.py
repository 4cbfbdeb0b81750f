"""`python -m trainer.predict IMAGE... [--checkpoint PATH]`: classify clothing photos with a run's `model.pt`.

The Gradio demo and the benchmarks use the same `Classifier`, so all three see a photo the same way.
"""

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from trainer.errors import UserError
from trainer.export import load_model_file
from trainer.preprocess import ImageError, normalise_tile, open_image, to_fashion_mnist

MODEL_ENV = "FASHION_MNIST_MODEL"
DECODE_SIDE = 384  # JPEGs decode straight to about this size: a 12 MP photo in milliseconds, plenty for 28x28


@dataclass
class Prediction:
    probabilities: dict[str, float]
    seen: np.ndarray  # the 28x28 uint8 tile the model classified

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda item: -item[1])[:k]


class Classifier:
    def __init__(self, model_path: Path) -> None:
        self.model, self.meta = load_model_file(model_path)
        self.path = Path(model_path)
        self.class_names: list[str] = list(self.meta["class_names"])
        self.mean, self.std = float(self.meta["mean"][0]), float(self.meta["std"][0])

    def classify(self, image: Image.Image) -> Prediction:
        tile = to_fashion_mnist(image)
        with torch.inference_mode():
            probs = F.softmax(self.model(normalise_tile(tile, self.mean, self.std)[None]), dim=1)[0]
        return Prediction(dict(zip(self.class_names, probs.tolist())), tile)

    def classify_file(self, source: str | Path | bytes) -> Prediction:
        """Decode an untrusted upload safely (raising ImageError with a user-facing sentence), then classify it."""
        return self.classify(open_image(source, max_side=DECODE_SIDE))


def newest_model(runs_root: str | Path = "runs") -> Path | None:
    candidates = sorted(Path(runs_root).glob("*/model.pt"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def resolve_model_path(checkpoint: str | None, runs_root: str | Path = "runs") -> Path:
    """`--checkpoint`, else $FASHION_MNIST_MODEL, else the newest `runs/*/model.pt`."""
    chosen = checkpoint or os.environ.get(MODEL_ENV)
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
    parser.add_argument("--top", type=int, default=3, help="how many classes to show per image")
    args = parser.parse_args(argv)
    try:
        classifier = Classifier(resolve_model_path(args.checkpoint))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures = 0
    for path in args.images:
        try:
            prediction = classifier.classify_file(path)
        except ImageError as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        print(f"{path}: " + ", ".join(f"{name} {p:.1%}" for name, p in prediction.top(args.top)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
