import pytest
import torch

from trainer.config import load_config
from trainer.model import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_and_feature_shapes(name):
    model = build_model(name, num_classes=10).eval()
    x = torch.randn(5, 1, 28, 28)
    assert model(x).shape == (5, 10)
    assert model.features(x).shape[0] == 5


def test_lenet5_is_the_tutorial_network():
    model = build_model("lenet5")
    assert [n for n, _ in model.named_children()] == ["conv1", "pool", "conv2", "fc1", "fc2", "fc3"]
    assert model.features(torch.zeros(1, 1, 28, 28)).shape == (1, 84)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet1000")


def test_the_default_config_trains_a_wider_lenet5():
    cfg = load_config()
    model = build_model(cfg.model.name, **cfg.model.kwargs)
    assert [n for n, _ in model.named_children()] == ["conv1", "pool", "conv2", "fc1", "fc2", "fc3"]
    assert (model.conv1.out_channels, model.conv2.out_channels) == (16, 32)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
