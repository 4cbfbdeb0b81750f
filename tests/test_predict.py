"""The Classifier the demo, the CLI and the benchmarks share: calibrated answers, "not sure", and where it looked."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.bad_images import garment_mask
from tests.helpers import ROOT
from tests.not_garments import NOT_GARMENTS, landscape
from trainer.explain import explain_file
from trainer.export import ModelFileError
from trainer.data import CLASS_NAMES
from trainer.predict import MIN_INK, RECENT_PIXELS, RECENT_UPLOADS, SURE, Classifier, Prediction
from trainer.preprocess import THRESHOLDS, Cutout, cut_out, normalise_tile
from trainer.views import PHOTO_SIZES, TILE_SIZES, averaged_logits, photo_logits


def test_pictures_that_are_not_garments_mostly_get_not_sure(trained_run):
    classifier = Classifier(trained_run / "model.pt")
    answers = {f"{name} {seed}": classifier.classify(draw(seed)) for name, draw in NOT_GARMENTS.items() for seed in range(3)}
    sure = [name for name, prediction in answers.items() if prediction.sure]
    assert len(sure) <= len(answers) // 3, f"sure of a garment in {sure}"
    for prediction in answers.values():
        assert prediction.sure == (max(prediction.probabilities.values()) >= SURE and not prediction.across
                                   and (prediction.seen > 32).mean() >= MIN_INK)
        assert abs(sum(prediction.probabilities.values()) - 1) < 1e-4


def test_a_cut_out_running_across_the_picture_is_never_sure(trained_run):
    from demo.interface import verdict

    classifier = Classifier(trained_run / "model.pt")
    classifier.photo_temperature = 1e-3  # every answer as sure as an answer can be
    scenery = classifier.classify(landscape(0))
    assert scenery.across and not scenery.sure and max(scenery.probabilities.values()) > SURE
    assert "runs across the whole picture" in verdict(scenery) and "Not sure" in verdict(scenery)
    photo = Image.new("RGB", (480, 360), (236, 233, 228))
    photo.paste((40, 45, 60), mask=garment_mask(photo.size, (150, 40, 330, 320)))
    garment = classifier.classify(photo)
    assert garment.sure and not garment.across and "runs across" not in verdict(garment)


def test_a_speck_is_never_answered_surely(trained_run):
    """A tile with next to nothing lit (a few pixels: what a cut-out that found a speck, or a sheet negated to nothing,
    can leave) is no garment, so never "sure", however high its top probability; every Fashion-MNIST training tile
    lights at least 2.4% of its pixels, and a garment's tile is answered surely."""
    classifier = Classifier(trained_run / "model.pt")
    classifier.photo_temperature = 1e-3  # every answer as sure as an answer can be
    speck = np.zeros((28, 28), np.uint8)
    speck[12:15, 12:15] = 255  # 9 pixels: 1.1% of the tile
    answer = classifier.classify_cut(Cutout(speck, (0, 0, 28, 28), True, tiles=(speck,) * len(THRESHOLDS)))
    assert max(answer.probabilities.values()) > SURE and not answer.sure and (answer.seen > 32).mean() < MIN_INK
    garment = Image.new("RGB", (400, 500), (255, 255, 255))
    garment.paste((30, 30, 30), mask=garment_mask(garment.size, (100, 100, 300, 400)))
    assert classifier.classify(garment).sure


def test_the_answer_in_words_names_three_guesses_when_not_sure_and_says_when_nothing_was_cut_out():
    from demo.interface import verdict

    probabilities = dict.fromkeys(CLASS_NAMES, 0.0075) | {"Coat": 0.5995, "Shirt": 0.3, "Pullover": 0.0405}
    unsure = Prediction(probabilities, np.zeros((28, 28), np.uint8), (0, 0, 1, 1), segmented=False, sure=False)
    # rounded as the bars round them, half up, except that below 60% never reads as 60%
    assert verdict(unsure).startswith("**Not sure.** Perhaps Coat (59%), Shirt (30%), Pullover (4%); or it is not one of")
    assert "could not be cut out from its background" in verdict(unsure), "the middle of the picture was classified"
    sure = Prediction(probabilities | {"Coat": 0.9165}, np.zeros((28, 28), np.uint8), (0, 0, 1, 1), segmented=True, sure=True)
    assert verdict(sure) == "**Coat**, 92% sure."


def test_photos_get_the_photo_temperature_and_tiles_the_tiles_one(trained_run, tmp_path):
    classifier = Classifier(trained_run / "model.pt")
    assert classifier.photo_temperature > classifier.temperature
    photo = Image.new("RGB", (480, 360), (236, 233, 228))
    photo.paste((40, 45, 60), mask=garment_mask(photo.size, (150, 40, 330, 320)))
    seen = classifier.classify(photo)
    assert seen.segmented and seen.box[0] < 150 and seen.box[2] > 330
    cut = cut_out(photo)
    assert len(cut.tiles) == len(THRESHOLDS) and np.array_equal(cut.tiles[0], seen.seen), "the tile shown comes first"
    tiles = torch.stack([normalise_tile(tile, classifier.mean, classifier.std) for tile in cut.tiles])
    network, meta, black = classifier.model, classifier.meta, classifier.background  # not the methods under test
    expected = (photo_logits(network, tiles[:1], tiles[1:], black)[0] / meta["photo_temperature"]).softmax(0).max().item()
    assert seen.sizes == PHOTO_SIZES, "explained on the tile's own views"
    assert abs(max(seen.probabilities.values()) - expected) < 1e-5, "a photo: its cut-outs, their views, its temperature"
    tile = classifier.classify(Image.fromarray(seen.seen))  # the same garment, already a Fashion-MNIST tile: seen as one
    expected = (averaged_logits(network, tiles[:1], TILE_SIZES, black)[0] / meta["temperature"]).softmax(0).max().item()
    assert tile.sizes == TILE_SIZES and abs(max(tile.probabilities.values()) - expected) < 1e-5


def test_the_command_line_says_when_it_is_not_sure(trained_run, tmp_path):
    path = tmp_path / "page.png"
    NOT_GARMENTS["text page"](0).save(path)
    result = subprocess.run([sys.executable, "-m", "trainer.predict", str(path), "--checkpoint", str(trained_run / "model.pt")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and f"{path}: " in result.stdout
    prediction = Classifier(trained_run / "model.pt").classify_file(path)
    assert ("not sure" in result.stdout) == (not prediction.sure)


def test_an_upload_is_decoded_and_classified_once_for_its_answer_verdict_and_explanation(trained_run, tmp_path, monkeypatch):
    """The demo asks for each upload's answer, the answer in words and its explanation: one cut-out and
    classification serves all three, for a file or for bytes; a file that changes, or other bytes, are new uploads."""
    classifier = Classifier(trained_run / "model.pt")
    classified = []
    classify = classifier.classify
    monkeypatch.setattr(classifier, "classify", lambda image: classified.append(image) or classify(image))
    photo = Image.new("RGB", (480, 360), (236, 233, 228))
    photo.paste((40, 45, 60), mask=garment_mask(photo.size, (150, 40, 330, 320)))
    path = tmp_path / "upload.png"
    photo.save(path)
    answer = classifier.classify_file(path)
    assert classifier.classify_file(str(path)) is answer
    assert explain_file(classifier, path).prediction is answer and len(classified) == 1
    photo.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(path)
    assert classifier.classify_file(path) is not answer and len(classified) == 2, "the file changed: a new upload"
    data = path.read_bytes()
    from_bytes = classifier.classify_file(data)
    assert classifier.classify_file(bytes(data)) is from_bytes and len(classified) == 3
    assert from_bytes.probabilities == classifier.classify_file(path).probabilities
    for n in range(RECENT_UPLOADS + 1):
        classifier.classify_file(data + bytes(n + 1))  # trailing bytes: the same picture, other uploads
    assert classifier.classify_file(data) is not from_bytes, "only the most recent uploads are kept"
    for n in range(10):  # panoramas of 1.4 MP each, as decoded: the last nine are kept, not sixteen
        wide = Image.new("RGB", (3600, 380), (236, 233, 228))
        wide.paste((40 + n, 45, 60), mask=garment_mask(wide.size, (1600, 40, 2000, 340)))
        wide.save(tmp_path / f"wide{n}.png")
        classifier.classify_file(tmp_path / f"wide{n}.png")
        kept = [image.width * image.height for image, _ in classifier._recent.values()]
        assert sum(kept) <= RECENT_PIXELS or len(kept) == 1, kept
    assert len(kept) == RECENT_PIXELS // (3600 * 380)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("class_names"), "lacks class_names: it is not a whole model.pt of this project"),
    (lambda m: m.pop("mean"), "lacks mean: it is not a whole model.pt of this project"),
    (lambda m: m.update(class_names=m["class_names"][:5]), "names 5 classes for a network of 10 outputs"),
    (lambda m: m.update(temperature="hot"), "needs a mean, and a std and temperatures above 0, each one number"),
    (lambda m: m.update(temperature=-1.0), "needs a mean, and a std and temperatures above 0, each one number"),
    (lambda m: m.update(std=[0.0]), "needs a mean, and a std and temperatures above 0, each one number"),
    (lambda m: m.update(mean=[]), "needs a mean, and a std and temperatures above 0, each one number"),
    (lambda m: m.update(format_version=99), "is of format version 99, which this trainer (version 1) cannot read"),
    (lambda m: m.update(test_accuracy="high"), "has a test accuracy that is not a share between 0 and 1"),
    (lambda m: m.update(test_accuracy_views=91.3), "has a test accuracy that is not a share between 0 and 1"),
    (lambda m: m.update(test_accuracy=-0.5), "has a test accuracy that is not a share between 0 and 1"),
])
def test_a_model_file_with_metadata_its_readers_cannot_use_is_named(trained_run, tmp_path, edit, message):
    payload = torch.load(trained_run / "model.pt", weights_only=True)
    edit(payload)
    torch.save(payload, tmp_path / "model.pt")
    with pytest.raises(ModelFileError, match=re.escape(message)):
        Classifier(tmp_path / "model.pt")
