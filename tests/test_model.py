import pytest
import torch

from trainer.config import load_config
from trainer.data import BLACK, CLASS_NAMES, MEAN, STD
from trainer.export import load_model_file, save_model_file
from trainer.model import MODELS, UnknownModelError, build_model

from tests.helpers import ROOT


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


def test_lenet5_dropout_drops_the_fully_connected_inputs_only_while_training():
    torch.manual_seed(0)
    model = build_model("lenet5", dropout=0.5).train()
    x = torch.randn(4, 1, 28, 28)
    inputs = {"fc1": [], "fc2": [], "fc3": []}
    for name, seen in inputs.items():
        getattr(model, name).register_forward_hook(lambda m, i, o, seen=seen: seen.append(i[0]))
    assert not torch.equal(model(x), model(x))
    assert torch.equal(*inputs["fc1"])  # the convolutions' maps are never dropped
    assert not torch.equal(*inputs["fc2"]) and not torch.equal(*inputs["fc3"])
    plain = build_model("lenet5")  # the tutorial's layers: dropout adds no weights
    plain.load_state_dict(model.state_dict())
    assert torch.equal(model.eval()(x), plain.eval()(x))


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet1000")


@pytest.mark.parametrize(
    "kwargs",
    [{"depth": 3}, {"dropout": 1.5}, {"conv2_kernel": 12}, {"conv1_padding": 3}, {"conv1_padding": 2, "conv2_kernel": 14},
     {"conv1": 0}, {"conv2": -1}, {"conv1": 2.5}, {"dropout": 1.0}, {"dropout": True}, {"batch_norm": "false"},
     {"margin": 5}, {"margin": -1}, {"margin": True}, {"margin": 1.5}],
)
def test_kwargs_a_model_cannot_take_are_refused(kwargs):
    with pytest.raises(UnknownModelError, match="cannot be built from these model.kwargs"):
        build_model("lenet5", **kwargs)


def test_a_small_cnn_of_no_width_is_refused_while_it_is_built():
    with pytest.raises(UnknownModelError, match="width must be a whole number of channels, at least 1"):
        build_model("small_cnn", width=-2)


@pytest.mark.parametrize(
    "config, channels, kernel", [("configs/default.yaml", (16, 48), 3), ("configs/wide.yaml", (32, 64), 5)]
)
def test_the_photo_robust_configs_train_a_wider_lenet5_with_batch_norm(config, channels, kernel):
    cfg = load_config(ROOT / config)
    model = build_model(cfg.model.name, **cfg.model.kwargs)
    assert [n for n, _ in model.named_children()] == ["conv1", "pool", "conv2", "bn1", "bn2", "fc1", "fc2", "fc3"]
    assert (model.conv1.out_channels, model.conv2.out_channels) == channels and model.conv2.kernel_size == (kernel, kernel)
    assert (model.bn1.num_features, model.bn2.num_features) == channels
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("kernel, side", [(5, 4), (3, 5), (1, 6)])
def test_the_second_convolution_s_size_sets_the_map_the_fully_connected_layers_read(kernel, side):
    model = build_model("lenet5", conv2=8, conv2_kernel=kernel).eval()
    assert model.conv2.kernel_size == (kernel, kernel) and model.fc1.in_features == 8 * side * side
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("padding, side", [(0, 4), (1, 4), (2, 5)])
def test_padding_the_first_convolution_keeps_the_image_s_edges(padding, side):
    """At padding 2 the first map is 28x28, as LeNet-5's was for a 32x32 image, so a pixel on the edge reaches conv1."""
    model = build_model("lenet5", conv1_padding=padding).eval()
    assert model.fc1.in_features == 16 * side * side
    edge = torch.zeros(1, 1, 28, 28)
    edge[..., 0, 0] = 1.0
    with torch.no_grad():
        reached = model.conv1(edge) - model.conv1(torch.zeros_like(edge))
    assert reached.shape[-1] == 24 + 2 * padding and (reached.abs().amax((0, 1)) > 0).sum() == (1 + padding) ** 2
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_a_margin_scales_the_image_inside_a_black_border_with_the_tutorial_s_layers():
    """The same weights as the tutorial's network (its state dict loads as is), fed the image shrunk from 28 to 26
    pixels inside a border of black: a grey image stays that grey inside, black stays black to the bit, a line one
    pixel wide is spread over two, dimmer (resampled, as a photo is shrunk, not dropped or copied), and a corner pixel that an unpadded 5x5
    convolution reads at one position moves in to where it reads it at four."""
    torch.manual_seed(0)
    model = build_model("lenet5", margin=1).eval()
    tutorial = build_model("lenet5").eval()
    tutorial.load_state_dict(model.state_dict())
    black = torch.full((1, 1, 28, 28), BLACK)
    assert torch.equal(model_input(model, black), black)
    grey = model_input(model, torch.full((1, 1, 28, 28), 0.7))[0, 0]
    border = torch.ones(28, 28, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert (grey[border] == BLACK).all() and torch.allclose(grey[1:-1, 1:-1], torch.tensor(0.7))
    line = black.clone()
    line[..., 14] = 2.0
    row = model_input(model, line)[0, 0, 14]
    assert (row > BLACK + 0.01).sum() == 2 and row.max() < 2.0 - 0.1
    corner = black.clone()
    corner[..., 0, 0] = 2.0
    with torch.no_grad():
        reached = model.conv1(model_input(model, corner)) - model.conv1(black)
        unshrunk = tutorial.conv1(corner) - tutorial.conv1(black)
    assert (unshrunk.abs().amax((0, 1)) > 1e-6).sum() == 1 and (reached.abs().amax((0, 1)) > 1e-6).sum() == 4
    assert not torch.equal(model(corner), tutorial(corner))


def model_input(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the model's first convolution reads for the image x."""
    seen = []
    handle = model.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def test_batch_norm_normalises_each_convolution_before_its_relu():
    """In training mode every channel after conv + batch norm has mean 0 over the batch, whatever the input's scale,
    and the ReLU and pooling come after it."""
    model = build_model("lenet5", conv1=8, conv2=16, batch_norm=True).train()
    seen = []
    model.bn1.register_forward_hook(lambda m, i, o: seen.append(o))
    model.bn2.register_forward_hook(lambda m, i, o: seen.append(o))
    x = 100 * torch.randn(32, 1, 28, 28) + 7
    features = model.features(x)
    assert len(seen) == 2
    for out in seen:
        assert out.mean((0, 2, 3)).abs().max() < 1e-4 and (out.std((0, 2, 3)) - 1).abs().max() < 0.05
    relu, pool = torch.nn.functional.relu, model.pool
    maps = pool(relu(model.bn2(model.conv2(pool(relu(model.bn1(model.conv1(x))))))))
    assert torch.allclose(features, relu(model.fc2(relu(model.fc1(maps.flatten(1))))), atol=1e-5)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("lenet5", {}),
        ("lenet5", {"batch_norm": True, "dropout": 0.2}),
        ("lenet5", {"batch_norm": True, "conv2": 12, "conv2_kernel": 3}),
        ("lenet5", {"batch_norm": True, "margin": 1}),
        ("small_cnn", {"width": 8}),
    ],
)
def test_a_model_file_loads_for_inference_with_the_network_s_outputs(tmp_path, name, kwargs):
    """load_model_file folds batch norms into their convolutions: the outputs must not change."""
    torch.manual_seed(0)
    model = build_model(name, **kwargs).train()
    for _ in range(3):  # running statistics away from their start, as training leaves them
        model(3 * torch.randn(16, 1, 28, 28) + 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 2.0)
            torch.nn.init.uniform_(module.bias, -1.0, 1.0)
    meta = {"arch": name, "arch_kwargs": kwargs, "class_names": list(CLASS_NAMES), "mean": [MEAN], "std": [STD]}
    save_model_file(tmp_path / "model.pt", model, meta)
    loaded, meta = load_model_file(tmp_path / "model.pt")
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-4)
    assert not loaded.training and meta["arch"] == name
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules()), "folded into the convolutions"
