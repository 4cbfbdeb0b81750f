"""TensorBoard reads back everything a run logs: with its own event reader, and over HTTP from its real server."""

import io
import json
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from tensorboard.util import tensor_util

from tests.helpers import ROOT, accumulate, pr_curve_counts, require_chromium, run_trainer, write_idx
from tests.servers import free_port, serving
from trainer.data import CLASS_NAMES, read_idx
from trainer.handlers.tensorboard import hparam_value

EPOCHS, EPOCH_LENGTH = 2, 55_000 // 128
EVERY = EPOCH_LENGTH // 5


@pytest.fixture(scope="module")
def events(trained_run) -> EventAccumulator:
    return accumulate(trained_run)


def test_per_epoch_scalars_and_learning_rate(events):
    tags = events.Tags()["scalars"]
    for tag in ("training/loss", "validation/loss", "validation/accuracy"):
        assert [e.step for e in events.Scalars(tag)] == list(range(1, EPOCHS + 1)), tag
    lr = [e.value for e in events.Scalars("lr/group_0")]
    assert len(lr) == EPOCHS * EPOCH_LENGTH // EVERY
    # one cycle (configs/quick.yaml: train.lr 0.1, half an epoch of warm-up): up, then down towards 0
    peak = lr.index(max(lr))
    assert lr[0] < 0.6 * lr[peak] and 0.08 < lr[peak] <= 0.1 and lr[-1] < 0.05 * lr[peak], lr
    assert lr[:peak + 1] == sorted(lr[:peak + 1]) and lr[peak:] == sorted(lr[peak:], reverse=True), lr
    assert {"hparams/val_accuracy", "hparams/test_accuracy"} <= set(tags)
    end = EPOCHS * EPOCH_LENGTH  # the run's final figures at its last step, not at the start of its charts
    assert [e.step for e in events.Scalars("hparams/test_accuracy")] == [e.step for e in events.Scalars("calibration/test_ece")] == [end]


def test_calibration_and_real_photos_are_logged(events):
    tags = set(events.Tags()["scalars"])
    assert {"calibration/test_ece", "calibration/temperature", "real_photos/macro_top1", "real_photos/ece"} <= tags
    assert events.Scalars("calibration/test_ece")[0].value <= 0.03


def test_train_and_validation_loss_share_one_chart(trained_run):
    """`add_scalars("loss", ...)`: two sub-runs with the same tag and the same steps, so one chart shows both."""
    steps = {}
    for part in ("train", "validation"):
        scalars = accumulate(trained_run / f"loss_{part}").Scalars("loss")
        steps[part] = [e.step for e in scalars]
        assert all(0 < e.value < 3 for e in scalars)
    assert steps["train"] == steps["validation"] == list(range(EVERY, EPOCHS * EPOCH_LENGTH + 1, EVERY))
    subruns = sorted(p.name for p in trained_run.iterdir() if p.is_dir() and list(p.glob("events.out.tfevents.*")))
    assert subruns == ["loss_train", "loss_validation"]


def test_images_and_figures(events):
    images = events.Tags()["images"]
    expected = {"train/images", "train/images_labelled", "test/confusion_matrix", "test/predictions_vs_actuals",
                "test/most_confident_mistakes", "test/mistakes_explained"}
    assert expected <= set(images)
    for tag in expected:
        image = events.Images(tag)[-1]
        assert image.width >= 200 and image.height >= 100 and len(image.encoded_image_string) > 1000
    grid = np.asarray(Image.open(io.BytesIO(events.Images("train/images")[-1].encoded_image_string)).convert("L"))
    assert grid.shape == (4 * 30, 8 * 30) and grid[0].min() == 255, "eight tiles a row, each framed in white"
    assert grid[2, 2] < 10, "a tile's corner: Fashion-MNIST's garments are light on black"


def test_graph_has_every_layer(events):
    nodes = " ".join(node.name for node in events.Graph().node)
    for layer in ("conv1", "pool", "conv2", "fc1", "fc2", "fc3"):
        assert f"[{layer}]" in nodes, layer


def test_pr_curves_for_every_class_cover_the_whole_test_set(trained_run, events):
    assert events.PluginTagToContent("pr_curves")
    assert pr_curve_counts(trained_run) == {name: (1000, 10_000) for name in CLASS_NAMES}
    for name in CLASS_NAMES:  # each image's own probabilities: a curve of shuffled outputs would sit near chance, 0.1
        precision = tensor_util.make_ndarray(events.Tensors(f"pr_curve/{name}")[-1].tensor_proto)[4]
        assert precision[len(precision) // 2] > 0.5, f"{name}: precision at a threshold of 0.5"


def test_hparams_and_config_text(events):
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams and "_hparams_/session_start_info" in hparams
    start = metadata.parse_session_start_info_plugin_data(hparams[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["train.lr"].number_value == 0.1
    assert start.hparams["model.kwargs"].string_value == "-", "the quick config's network takes the defaults"
    assert start.hparams["train.augment.p"].number_value == 0.0
    assert start.hparams["train.export"].string_value == "best"
    assert "config/text_summary" in events.Tags()["tensors"]


def test_projector_lists_pixels_and_features_with_matching_files(trained_run, data_root):
    config = (trained_run / "projector_config.pbtxt").read_text()
    embeddings = [block for block in config.split("embeddings {")[1:]]
    assert len(embeddings) == 2
    dims = {}
    for block in embeddings:
        fields = dict(line.strip().split(": ", 1) for line in block.splitlines() if ": " in line)
        tensor = trained_run / json.loads(fields["tensor_path"])
        metadata = trained_run / json.loads(fields["metadata_path"])
        sprite = trained_run / json.loads(fields["image_path"])
        rows = tensor.read_text().strip().splitlines()
        labels = metadata.read_text().strip().splitlines()
        assert len(rows) == len(labels) >= 1000
        assert set(labels) <= set(CLASS_NAMES)
        side = Image.open(sprite).size[0] // 28
        assert side * side >= len(rows)
        dims[json.loads(fields["tensor_name"]).split(":")[0]] = len(rows[0].split("\t"))
        if dims.get("pixels") == 784 and len(dims) == 1:  # each point an upright test image under its own label
            pixels = np.loadtxt(tensor, delimiter="\t", dtype=np.uint8).reshape(-1, 28, 28)
            test = zip(read_idx(data_root, "t10k-images-idx3-ubyte").numpy(), read_idx(data_root, "t10k-labels-idx1-ubyte"))
            assert {(p.tobytes(), label) for p, label in zip(pixels, labels)} <= {(i.tobytes(), CLASS_NAMES[t]) for i, t in test}
            tiles = np.asarray(Image.open(sprite).convert("L")).reshape(side, 28, side, 28).transpose(0, 2, 1, 3)
            assert np.array_equal(tiles.reshape(-1, 28, 28)[: len(pixels)], pixels), "each thumbnail is its point's image"
    assert dims == {"pixels": 784, "features": 84}



def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_tensorboard_server_serves_the_run(trained_run, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(trained_run.parent), "--host", "127.0.0.1", "--port", str(port)]
    with serving(command, f"{base}/data/runs", tmp_path / "tensorboard.log", start_timeout=60):
        deadline = time.monotonic() + 60
        runs = get_json(f"{base}/data/runs")
        while time.monotonic() < deadline and "quick" not in runs:  # the server reads the event files after it answers
            time.sleep(0.5)
            runs = get_json(f"{base}/data/runs")
        assert {"quick", "quick/loss_train", "quick/loss_validation"} <= set(runs), runs
        scalars = get_json(f"{base}/data/plugin/scalars/tags")
        assert "validation/accuracy" in scalars["quick"] and "loss" in scalars["quick/loss_train"]
        assert "test/confusion_matrix" in get_json(f"{base}/data/plugin/images/tags")["quick"]
        graphs = get_json(f"{base}/data/plugin/graphs/info")
        assert graphs["quick"]["run_graph"]
        assert "quick" in get_json(f"{base}/data/plugin/projector/runs")
        projector = get_json(f"{base}/data/plugin/projector/info?run=quick")
        assert {e["tensorName"].split(":")[0] for e in projector["embeddings"]} == {"pixels", "features"}
        for name, dim in (("pixels", 784), ("features", 84)):  # the files load: what the Projector tab fetches
            query = f"run=quick&name={name}"
            with urllib.request.urlopen(f"{base}/data/plugin/projector/tensor?{query}", timeout=30) as response:
                assert len(response.read()) == 1000 * dim * 4, f"{name}: 1,000 float32 rows of {dim}"
            with urllib.request.urlopen(f"{base}/data/plugin/projector/metadata?{query}", timeout=30) as response:
                assert set(response.read().decode().split()) <= {w for c in CLASS_NAMES for w in c.split()}
            with urllib.request.urlopen(f"{base}/data/plugin/projector/sprite_image?{query}", timeout=30) as response:
                assert Image.open(io.BytesIO(response.read())).size == (32 * 28, 32 * 28)


def test_hparam_values_are_numbers_or_texts_the_tab_shows():
    """torch's writer silently leaves out a None, and stores true as 1: a study's `null` choice, and a flag, must show as text."""
    assert [hparam_value(v) for v in (None, 0.1, 3, True, False, "sgd")] == ["None", 0.1, 3, "true", "false", "sgd"]
    assert hparam_value(OmegaConf.create({"conv1": 16, "batch_norm": True})) == "conv1=16, batch_norm=true"
    assert hparam_value(OmegaConf.create({})) == "-"


def test_the_screenshot_script_captures_tabs_one_after_another(trained_run, tmp_path):
    """`python -m docs.screenshots`, as the README gives it: the explanations after the scalars tab (whose hidden inputs
    once caught the tag filter's text and stopped the script), narrowed to the explained mistakes at actual size."""
    require_chromium()
    shots = subprocess.run([sys.executable, "-m", "docs.screenshots", str(trained_run), "--tabs", "scalars", "explanations",
                            "--no-demo", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert shots.returncode == 0, shots.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tensorboard_explanations.png", "tensorboard_scalars.png"]
    assert Image.open(tmp_path / "tensorboard_explanations.png").size == (2400, 1100), "widened to show the maps"
    missing = subprocess.run([sys.executable, "-m", "docs.screenshots", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: {tmp_path} holds no model.pt: give the directory of a finished run"


def test_unwritable_log_directory_stops_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_trainer(f"output.root={blocker}")
    assert result.returncode == 2 and "cannot write the run directory" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and "Epoch" not in result.stderr


def test_each_view_switches_off(tmp_path):
    result = run_trainer(
        f"output.root={tmp_path}", "run.name=lean", "train.max_epochs=1",
        "tensorboard.graph=false", "tensorboard.embeddings=false", "tensorboard.eval_views=false", "tensorboard.images=false",
        "tensorboard.explanations=false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "lean"
    events = accumulate(run_dir)
    assert not events.Tags()["graph"] and not events.Tags()["images"]
    assert not [tag for tag in events.Tags()["tensors"] if tag.startswith("pr_curve/")]
    assert not (run_dir / "projector_config.pbtxt").exists()
    assert "validation/accuracy" in events.Tags()["scalars"] and (run_dir / "model.pt").is_file()


def test_a_model_without_a_mistake_on_the_test_set_still_exports(tmp_path):
    """The mistakes views have nothing to show, and are left out, not drawn empty (which failed the run's end)."""
    data = write_idx(tmp_path / "data")  # class k is a bright bar at row 2k: learnt without a mistake in ten epochs
    result = run_trainer(f"output.root={tmp_path}", "run.name=perfect", f"data.root={data}", "data.val_size=100",
                         "train.batch_size=32", "train.max_epochs=10", "train.lr=0.02", "tensorboard.embedding_samples=100",
                         config="configs/quick.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "perfect" / "metrics.json").read_text())["test_accuracy"] == 1.0
    images = set(accumulate(tmp_path / "perfect").Tags()["images"])
    assert "test/confusion_matrix" in images and not images & {"test/most_confident_mistakes", "test/mistakes_explained"}


def test_each_explained_mistake_shows_the_evidence_for_its_own_predicted_and_true_class(monkeypatch):
    """The view computes the maps of all mistakes in one batch, the predicted classes' then the true ones': each
    tile's pair must come back beside that tile, the predicted class's first, as its titles say."""
    from types import SimpleNamespace

    import torch

    import trainer.handlers.tensorboard as tb
    from trainer.attribution import attribute
    from trainer.data import BLACK

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    x = torch.rand(40, 1, 28, 28)
    with torch.no_grad():
        probs = torch.softmax(model(x), 1)
    y = (probs.argmax(1) + 1 + torch.arange(40) % 9) % 10  # every tile a mistake, with varied true classes
    worst = tb.most_confident_mistakes(y, probs)
    drawn = {}
    monkeypatch.setattr(tb, "explained_figure", lambda images, a, b, titles, title: drawn.update(a=a, b=b, titles=titles))
    view = SimpleNamespace(tested=model, class_names=CLASS_NAMES, answer=lambda p, c, t: tb.TensorBoardViews.answer(view, p, c, t))
    tb.TensorBoardViews.mistakes_explained_figure(view, x, y, probs, worst, torch.device("cpu"))

    predicted = probs.argmax(1)
    for k, i in enumerate(worst.tolist()):
        for_predicted = attribute(model, x[i : i + 1], int(predicted[i]), BLACK)[0]
        for_true = attribute(model, x[i : i + 1], int(y[i]), BLACK)[0]
        assert torch.allclose(drawn["a"][k], for_predicted, atol=1e-5) and torch.allclose(drawn["b"][k], for_true, atol=1e-5)
        assert drawn["titles"][k][1:] == (f"for {CLASS_NAMES[predicted[i]]}", f"for {CLASS_NAMES[y[i]]}")
