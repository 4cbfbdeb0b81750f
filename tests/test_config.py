"""Config loading, overrides, and every bad input the trainer must refuse with one line and exit code 2."""

import re

import pytest
import torch

from tests.helpers import NO_NETWORK, ROOT, run_trainer, write_idx
from trainer.config import ConfigError, load_config
from trainer.model import UnknownModelError
from trainer.training import build_network


def test_default_config_and_overrides(monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_ROOT", "/somewhere/data")
    cfg = load_config(ROOT / "configs" / "default.yaml", ["train.max_epochs=3", "train.lr=0.05", "run.name=x"])
    assert cfg.data.root == "/somewhere/data"
    assert (cfg.train.max_epochs, cfg.train.lr, cfg.run.name) == (3, 0.05, "x")
    assert (cfg.data.val_size, cfg.output.root, cfg.resume, cfg.seed) == (5000, "runs", None, 0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["nosuch.key=1"], "unknown config key 'nosuch'"),
        (["train.lr=fast"], "bad value for config key 'train.lr'"),
        (["train.lr=-0.1"], "train.lr must be positive"),
        (["train.max_epochs=0"], "train.max_epochs must be at least 1"),
        (["data.val_size=60000"], "data.val_size must be between 1 and 59999"),
        (["train.batch_size=0"], "train.batch_size must be at least 1"),
        (["train.ema_decay=1"], "train.ema_decay must be at least 0 (0 turns it off) and below 1"),
        (["train.label_smoothing=1.5"], "train.label_smoothing must be at least 0 and below 1"),
        (["train.export=final"], "train.export must be best or last (got 'final')"),
        (["train.export=last", "train.early_stopping_patience=2"], "train.export=last exports the weights the schedule ends with, which early stopping never reaches"),
        (["train.warmup_epochs=inf"], "train.warmup_epochs must be a finite number (got inf)"),
        (["train.lr=nan"], "train.lr must be a finite number (got nan)"),
        (["train.augment.scale=[0.5,inf]"], "train.augment.scale[1] must be a finite number"),
        (["seed=-1"], "seed must be between 0 and 1000000000"),
        (["seed=4000000000"], "seed must be between 0 and 1000000000"),
        (["justaword"], "must look like key.sub=value"),
        (["train.lr=${nope}"], "bad value for config key 'train.lr': Interpolation key 'nope' not found"),
        (["seed=${oc.env:NO_SUCH_VARIABLE}"], "bad value for config key 'seed'"),
        (["model.kwargs=[1]"], "invalid config from the command line: a list given where a mapping belongs"),
        (["train.momentum=1.0"], "train.momentum must be at least 0 and below 1"),
        (["train.warmup_epochs=100"], "train.warmup_epochs=100.0 is longer than train.max_epochs=10"),
        (["data.val_size=1", "dist.nproc_per_node=2"], "data.val_size=1 must be at least dist.nproc_per_node=2"),
    ],
)
def test_bad_overrides_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ROOT / "configs" / "default.yaml", overrides)


def assert_refused(result, message: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["nosuch.key=1"], "unknown config key 'nosuch'"),
        (["train.max_epochs=two"], "bad value for config key 'train.max_epochs'"),
        (["train.lr=-1"], "train.lr must be positive"),
        (["train.max_epochs=0"], "train.max_epochs must be at least 1"),
        (["data.val_size=99999"], "data.val_size must be between"),
        (["resume=/no/such/checkpoint.pt"], "checkpoint /no/such/checkpoint.pt does not exist"),
        (["train.warmup_epochs=inf"], "train.warmup_epochs must be a finite number"),
        (["seed=-1"], "seed must be between 0 and 1000000000"),
        (["model.kwargs.conv1=0"], "conv1 must be a whole number of channels, at least 1 (got 0)"),
        (["train.lr=${nope}"], "Interpolation key 'nope' not found"),
        (["model.kwargs=[1]"], "a list given where a mapping belongs"),
        (["train.augment.scale=[0.8, 1.1"], "override 'train.augment.scale=[0.8, 1.1' is not a valid YAML value (did not find"),
        (["train.lr=*x"], "is not a valid YAML value (found undefined alias)"),
        (["model.kwargs.dropout=1.0"], "dropout must be a share of at least 0 and below 1 (got 1.0)"),
        (["model.kwargs.num_classes=5"], "model.kwargs.num_classes is the trainer's to set"),
        (["model.kwargs.conv1_padding=true"], "conv1_padding must be 0-2 (got True)"),
        (["model.kwargs.margin=1.0"], "margin must be a whole number of pixels, 0-4 (got 1.0)"),
        (["model.name=resnet"], "unknown model 'resnet'"),
    ],
)
def test_command_refuses_bad_input(args, message, tmp_path):
    assert_refused(run_trainer(f"output.root={tmp_path}", *args), message)
    assert not any(tmp_path.iterdir()), "refused before a run directory is made"


def test_overrides_mean_what_was_typed():
    """YAML reads 0101 as 65 and `yes` as true, cuts `try #2` at its comment and takes `[draft]` for a list; OmegaConf
    merges a mapping into the file's rather than replacing it."""
    assert [load_config(overrides=[f"run.name={name}"]).run.name for name in ("0101", "yes", "1e5", "'007'", "try #2", "[draft]")] == [
        "0101", "yes", "1e5", "007", "try #2", "[draft]"]
    assert load_config(overrides=["run.name=null"]).run.name is None
    assert load_config(overrides=["seed=12", "run.name=s${seed}"]).run.name == "s12"
    with pytest.raises(UnknownModelError, match=re.escape("'conv1' (model.kwargs={...} on the command line replaces")):
        build_network(load_config(overrides=["model.name=small_cnn"]))  # the default's LeNet-5 arguments
    small = load_config(overrides=["model.name=small_cnn", "model.kwargs={}", "model.kwargs.width=8"])
    assert small.model.kwargs == {"width": 8} and build_network(small).block1[0].out_channels == 8
    assert load_config(overrides=["model.kwargs.conv1=8"]).model.kwargs.conv2 == 48, "a key of the mapping still merges"


def test_numbers_in_exponent_form_are_numbers_in_files_too(tmp_path):
    """PyYAML reads `1e-1` as text: the schema's float keys would convert it, model.kwargs and search spaces not."""
    (tmp_path / "c.yaml").write_text("model: {kwargs: {dropout: 1e-1}}\ntrain: {lr: 1.0e-1, weight_decay: 5e-4}\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.model.kwargs.dropout, cfg.train.lr, cfg.train.weight_decay) == (0.1, 0.1, 0.0005)


def test_command_refuses_missing_and_malformed_config_files(tmp_path):
    assert_refused(run_trainer(config=str(tmp_path / "nope.yaml")), "does not exist")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    assert_refused(run_trainer(config=str(bad)), "is not valid YAML")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    assert_refused(run_trainer(config=str(listy)), "must hold a mapping")


def test_a_config_file_takes_the_keys_of_its_base_and_changes_a_few():
    padded = load_config(ROOT / "configs" / "lenet32.yaml")
    assert padded == load_config(ROOT / "configs" / "lenet.yaml", ["model.kwargs.conv1_padding=2"])
    assert padded.model.kwargs == {"conv1": 6, "conv2": 16, "conv1_padding": 2}


def test_command_refuses_a_base_that_is_missing_or_leads_back(tmp_path):
    (tmp_path / "orphan.yaml").write_text("base: nope.yaml\n")
    assert_refused(run_trainer(config=str(tmp_path / "orphan.yaml")), "nope.yaml does not exist")
    (tmp_path / "a.yaml").write_text("base: b.yaml\ntrain: {lr: 0.2}\n")
    (tmp_path / "b.yaml").write_text("base: ./a.yaml\n")
    assert_refused(run_trainer(config=str(tmp_path / "a.yaml")), "its base ./a.yaml already leads to it")
    (tmp_path / "listed.yaml").write_text("base: [a.yaml]\n")
    assert_refused(run_trainer(config=str(tmp_path / "listed.yaml")), "base must name another config file")
    (tmp_path / "typo.yaml").write_text("train: {lrr: 0.1}\n")
    (tmp_path / "child.yaml").write_text("base: typo.yaml\n")
    assert_refused(run_trainer(config=str(tmp_path / "child.yaml")), f"unknown config key 'train.lrr' (from {tmp_path / 'typo.yaml'}")


def test_command_refuses_missing_dataset_without_network(tmp_path):
    result = run_trainer(f"output.root={tmp_path}", f"data.root={tmp_path / 'empty'}", env=NO_NETWORK)
    assert_refused(result, "could not be downloaded")
    assert "FASHION_MNIST_ROOT" in result.stderr
    no_download = run_trainer(f"output.root={tmp_path}", f"data.root={tmp_path / 'empty'}", "data.download=false")
    assert_refused(no_download, "is missing")


def test_command_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    data = write_idx(tmp_path / "data")
    not_ours = tmp_path / "weights.pt"
    torch.save({"something": torch.zeros(3)}, not_ours)
    result = run_trainer(f"output.root={tmp_path}", f"data.root={data}", "data.val_size=50", f"resume={not_ours}")
    assert_refused(result, "is not a training checkpoint of this project")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all")
    result = run_trainer(f"output.root={tmp_path}", f"data.root={data}", "data.val_size=50", f"resume={garbage}")
    assert_refused(result, "is corrupt, truncated or not a PyTorch file")
    result = run_trainer(f"output.root={tmp_path}", f"data.root={data}", "data.val_size=50", f"resume={ROOT / 'README.md'}")
    assert_refused(result, "is corrupt, truncated or not a PyTorch file")


def test_command_refuses_to_mix_two_runs_in_one_directory(tmp_path):
    (tmp_path / "taken" / "checkpoints").mkdir(parents=True)
    (tmp_path / "taken" / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "taken" / "checkpoints" / "last_checkpoint_1.pt").write_bytes(b"")
    assert_refused(run_trainer(f"output.root={tmp_path}", "run.name=taken"), "already holds a run")


@pytest.mark.parametrize(
    "manifest, message",
    [
        ("file\tlabel\na.jpg\tShirt\n", "needs the columns path and accept (tab-separated), found ['file', 'label']"),
        ("path\taccept\n", "must list at least one photo, each with a path and the classes it accepts"),
        ("path\taccept\na.jpg\n", "must list at least one photo, each with a path and the classes it accepts"),
    ],
)
def test_command_refuses_a_photo_manifest_it_could_not_read_before_training(tmp_path, manifest, message):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "MANIFEST.tsv").write_text(manifest)
    result = run_trainer(f"output.root={tmp_path}", f"data.photos={photos}", "data.measure_photos=true")
    assert_refused(result, message)
    assert [p.name for p in tmp_path.iterdir()] == ["photos"] and "Epoch 1" not in result.stderr, "refused before any run"
