"""The Classifier the demo, the CLI and the benchmarks share: calibrated answers, "not sure", and where it looked."""

import subprocess
import sys

from PIL import Image

from tests.bad_images import garment_mask
from tests.helpers import ROOT
from tests.not_garments import NOT_GARMENTS
from trainer.predict import SURE, Classifier
from trainer.preprocess import normalise_tile
from trainer.views import PHOTO_SIZES, TILE_SIZES


def test_pictures_that_are_not_garments_mostly_get_not_sure(trained_run):
    classifier = Classifier(trained_run / "model.pt")
    answers = {f"{name} {seed}": classifier.classify(draw(seed)) for name, draw in NOT_GARMENTS.items() for seed in range(3)}
    sure = [name for name, prediction in answers.items() if prediction.sure]
    assert len(sure) <= len(answers) // 3, f"sure of a garment in {sure}"
    for prediction in answers.values():
        assert prediction.sure == (max(prediction.probabilities.values()) >= SURE)
        assert abs(sum(prediction.probabilities.values()) - 1) < 1e-4


def test_photos_get_the_photo_temperature_and_tiles_the_tiles_one(trained_run, tmp_path):
    classifier = Classifier(trained_run / "model.pt")
    assert classifier.photo_temperature > classifier.temperature
    photo = Image.new("RGB", (480, 360), (236, 233, 228))
    photo.paste((40, 45, 60), mask=garment_mask(photo.size, (150, 40, 330, 320)))
    seen = classifier.classify(photo)
    assert seen.segmented and seen.box[0] < 150 and seen.box[2] > 330
    x = normalise_tile(seen.seen, classifier.mean, classifier.std)[None]
    expected = (classifier.logits(x, PHOTO_SIZES)[0] / classifier.photo_temperature).softmax(0).max().item()
    assert seen.sizes == PHOTO_SIZES and abs(max(seen.probabilities.values()) - expected) < 1e-5, "a photo: its views, its temperature"
    tile = classifier.classify(Image.fromarray(seen.seen))  # the same garment, already a Fashion-MNIST tile: seen as one
    expected = (classifier.logits(x, TILE_SIZES)[0] / classifier.temperature).softmax(0).max().item()
    assert tile.sizes == TILE_SIZES and abs(max(tile.probabilities.values()) - expected) < 1e-5


def test_the_command_line_says_when_it_is_not_sure(trained_run, tmp_path):
    path = tmp_path / "page.png"
    NOT_GARMENTS["text page"](0).save(path)
    result = subprocess.run([sys.executable, "-m", "trainer.predict", str(path), "--checkpoint", str(trained_run / "model.pt")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and f"{path}: " in result.stdout
    prediction = Classifier(trained_run / "model.pt").classify_file(path)
    assert ("not sure" in result.stdout) == (not prediction.sure)
