"""Confidence that means what it says: temperature scaling and the expected calibration error.

A network trained with cross-entropy is sure of itself on anything, inputs unlike its training data included.
Dividing its logits by one temperature, fitted by likelihood on held-out images, keeps every prediction and
makes the top class's probability match how often it is right (Guo et al., 2017, "On Calibration of Modern
Neural Networks").
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.data import EVAL_BATCH_SIZE
from trainer.views import averaged_logits

ECE_BINS = 15


@torch.no_grad()  # not inference_mode: fit_temperature takes gradients through these logits
def collect_logits(model: nn.Module, images: torch.Tensor, mirror: bool = True) -> torch.Tensor:
    """`views.averaged_logits` for a stack of normalised images, in eval mode, on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits = torch.cat([averaged_logits(model, batch.to(device), mirror=mirror).float().cpu() for batch in images.split(EVAL_BATCH_SIZE)])
    model.train(was_training)
    return logits


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T), by L-BFGS on log T."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    logits, labels = logits.detach().float().clone(), labels.detach()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def expected_calibration_error(confidence: np.ndarray, right: np.ndarray, bins: int = ECE_BINS) -> float:
    """Over equal-width bins of the top class's probability: |accuracy - mean confidence|, weighted by the bin's share."""
    confidence, right = np.asarray(confidence, dtype=float), np.asarray(right, dtype=float)
    which = np.clip(np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    error = 0.0
    for b in np.unique(which):
        in_bin = which == b
        error += in_bin.mean() * abs(right[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def logits_ece(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """The calibration error of softmax(logits / temperature) against integer labels."""
    confidence, predicted = F.softmax(logits.float() / temperature, dim=1).max(dim=1)
    return expected_calibration_error(confidence.numpy(), (predicted == labels).numpy())


def calibrate(
    model: nn.Module, val: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], photo_factor: float,
    mirror: bool = True,
) -> dict[str, float]:
    """Temperatures for tiles and for photos, the test set's calibration error before and after, and its accuracy
    with the test-time views the demo classifies with (`trainer.views`).

    The tiles' temperature is fitted on the validation split. Photos are further from the training data and
    the network is more overconfident on them; their temperature is the tiles' times `photo_factor`, a
    constant of the recipe chosen on real photos (no Fashion-MNIST split can tell how far off photos are).
    """
    temperature = fit_temperature(collect_logits(model, val[0], mirror), val[1])
    test_logits = collect_logits(model, test[0], mirror)
    return {
        "temperature": temperature,
        "photo_temperature": temperature * photo_factor,
        "test_ece": logits_ece(test_logits, test[1], temperature),
        "test_ece_uncalibrated": logits_ece(test_logits, test[1]),
        "test_accuracy_views": float((test_logits.argmax(dim=1) == test[1]).float().mean()),
    }
