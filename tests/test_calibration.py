"""Temperature scaling and the calibration error, on data whose answer is known."""

import numpy as np
import torch
import torch.nn as nn

from trainer.calibration import collect_logits, expected_calibration_error, fit_temperature, logits_ece
from trainer.views import averaged_logits, averaged_maps, views


def calibrated_logits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a perfectly calibrated 10-class model: each label is drawn from softmax(logits)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=g) * 3
    labels = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    return logits, labels


def test_fit_temperature_undoes_a_known_overconfidence():
    logits, labels = calibrated_logits(20_000)
    assert abs(fit_temperature(logits, labels) - 1.0) < 0.05
    assert abs(fit_temperature(logits * 2.5, labels) - 2.5) < 0.12, "logits 2.5x too sharp need T = 2.5"
    assert abs(fit_temperature(logits * 0.5, labels) - 0.5) < 0.03


def test_calibration_error_is_small_when_calibrated_and_large_when_not():
    logits, labels = calibrated_logits(20_000, seed=1)
    assert logits_ece(logits, labels) < 0.02
    assert logits_ece(logits * 3, labels) > 0.1, "an overconfident model"
    assert logits_ece(logits * 3, labels, temperature=3.0) < 0.02, "fixed by its temperature"


def test_expected_calibration_error_by_hand():
    # two bins: confidence 0.9 right half the time (gap 0.4), confidence 0.3 always wrong (gap 0.3)
    confidence = np.array([0.9, 0.9, 0.3, 0.3])
    right = np.array([1, 0, 0, 0])
    assert expected_calibration_error(confidence, right) == 0.5 * 0.4 + 0.5 * 0.3


def test_averaged_logits_average_the_tile_and_its_mirror_image():
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    tiles = torch.randn(5, 1, 28, 28)
    expected = (model(tiles) + model(tiles.flip(3))) / 2
    assert torch.allclose(averaged_logits(model, tiles), expected, atol=1e-6)
    model.train()
    assert torch.allclose(collect_logits(model, tiles), expected, atol=1e-6) and model.training, "mode restored"


def test_maps_over_the_views_come_back_onto_the_tiles_pixels():
    tiles = torch.randn(3, 1, 28, 28)
    maps = views(tiles)[:, 0]  # a "map" that is the view itself: brought back, each view is the tile again
    assert torch.allclose(averaged_maps(maps), tiles[:, 0])
