"""A real short training run on the real data: accuracy, run directory, model.pt, and exact resume."""

import os
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from omegaconf import OmegaConf

from tests.helpers import DATA_ROOT, ROOT, ctrl_c_after, read_metrics, run_trainer, write_idx
from trainer import main as trainer_main
from trainer import training
from trainer.config import load_config
from trainer.data import CLASS_NAMES, FOOTWEAR, InMemoryLoader, load_splits
from trainer.engines import FusedEMAHandler, create_lr_scheduler, create_optimizer, create_trainer
from trainer.model import build_model
from trainer.predict import Classifier
from trainer.views import averaged_logits


def test_short_real_run_reaches_80_percent(trained_run):
    metrics = read_metrics(trained_run)
    assert metrics["test_accuracy"] >= 0.80
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] in (1, 2)
    assert set(metrics["per_class_test_accuracy"]) == set(CLASS_NAMES)
    for key in ("val_accuracy", "val_loss", "test_loss", "train_seconds"):
        assert metrics[key] > 0


def test_confidence_is_calibrated_and_measured_on_real_photos(trained_run, data_root):
    """A temperature fitted on the validation split keeps the test set's calibration error small; the photos'
    temperature is larger (they are further from the training data); the run measured itself on the real photos."""
    metrics = read_metrics(trained_run)
    calibration = metrics["calibration"]
    assert calibration["test_ece"] <= 0.03 and 0.5 < calibration["temperature"] < 2.0
    payload = torch.load(trained_run / "model.pt", weights_only=True, map_location="cpu")
    assert payload["temperature"] == calibration["temperature"]
    assert payload["photo_temperature"] > payload["temperature"]
    photos = metrics["real_photos"]
    assert photos["n"] == len((data_root / "realphotos" / "MANIFEST.tsv").read_text().splitlines()) - 1
    assert sum(photos["refused"].values()) <= 5, photos["refused"]
    assert 0.3 < photos["macro_top1"] <= photos["macro_top3"] <= 1, "two quick epochs are far better than chance (0.1)"
    assert 0 <= photos["confidence"]["ece"] < 0.3 and 0 <= photos["sure"]["share"] <= 1


def test_run_directory_layout(trained_run):
    cfg = OmegaConf.load(trained_run / "config.yaml")
    assert cfg.run.name == "quick" and cfg.train.max_epochs == 2
    assert list(trained_run.glob("events.out.tfevents.*")), "TensorBoard events belong directly in the run directory"
    checkpoints = sorted(p.name for p in (trained_run / "checkpoints").iterdir())
    assert len(checkpoints) == 2
    assert checkpoints[0].startswith("best_checkpoint_") and "val_accuracy=" in checkpoints[0]
    assert checkpoints[1].startswith("last_checkpoint_")
    last = torch.load(trained_run / "checkpoints" / checkpoints[1], weights_only=True)
    assert {"model", "ema_model", "optimizer", "lr_scheduler", "trainer"} <= set(last)
    assert len(list((trained_run / "examples").glob("*.png"))) == len(CLASS_NAMES)


def test_runs_started_in_the_same_second_each_get_a_run_directory_of_their_own(tmp_path, monkeypatch):
    """`for seed in 0 1 2; do python -m trainer.main seed=$seed & done` names three runs in one second."""
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 5, 12, 0, 0)

    monkeypatch.setattr(training, "datetime", Frozen)
    monkeypatch.delenv("RANK", raising=False)
    configs = [load_config(overrides=[f"output.root={tmp_path}"]) for _ in range(3)]
    for cfg in configs:
        training.name_run(cfg)
    names = [cfg.run.name for cfg in configs]
    assert names == ["20261205-120000-lenet5", "20261205-120000-lenet5-2", "20261205-120000-lenet5-3"]
    claims = [training.prepare_run_dir(cfg)[1] for cfg in configs]  # each one's own directory, none in use by another
    for claim in claims:
        os.close(claim)
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_the_printed_resume_command_keeps_the_launcher(monkeypatch):
    """Under torchrun, `python -m trainer.main` would resume a run of N processes in one."""
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert training.resume_command(Path("runs/x"), Path("runs/x/checkpoints/last_checkpoint_9.pt")) == (
        "python -m trainer.main --config runs/x/config.yaml resume=runs/x/checkpoints/last_checkpoint_9.pt")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert training.resume_command(Path("runs/x"), Path("c.pt")).startswith("torchrun <its options, as before> -m trainer.main")


def test_ctrl_c_before_the_training_begins_is_one_line(monkeypatch, capsys):
    """While torch and Ignite import, seconds in which a Ctrl-C used to end in a traceback."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_main, "load_config", interrupted)
    assert trainer_main.main([]) == 130
    assert capsys.readouterr().err == "error: stopped by the user before the training began\n"


def test_model_file_is_plain_and_reproduces_the_test_accuracy(trained_run, data_root):
    payload = torch.load(trained_run / "model.pt", weights_only=True, map_location="cpu")
    assert payload["arch"] == "lenet5" and payload["class_names"] == CLASS_NAMES
    assert payload["input_size"] == [1, 28, 28] and len(payload["mean"]) == len(payload["std"]) == 1
    for key in ("val_accuracy", "test_accuracy", "epoch", "versions"):
        assert key in payload
    model = build_model(payload["arch"], **payload["arch_kwargs"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    x, y = load_splits(data_root, 5000, seed=0).test
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
        as_read = (averaged_logits(model, x).argmax(1) == y).float().mean().item()  # with the mirror image, as the demo
    assert abs(accuracy - read_metrics(trained_run)["test_accuracy"]) < 1e-4
    assert abs(as_read - payload["test_accuracy_views"]) < 1e-4


def test_model_file_holds_the_best_epochs_moving_average(trained_run):
    """What is validated, kept as best and exported is the average of the weights, not the last step's weights."""
    [best] = (trained_run / "checkpoints").glob("best_checkpoint_*.pt")
    checkpoint = torch.load(best, weights_only=True)
    exported = torch.load(trained_run / "model.pt", weights_only=True)["state_dict"]
    assert exported.keys() == checkpoint["ema_model"].keys() == checkpoint["model"].keys()
    for name, tensor in exported.items():
        assert torch.equal(tensor, checkpoint["ema_model"][name]), name
    assert any(not torch.equal(tensor, checkpoint["model"][name]) for name, tensor in exported.items())


@pytest.mark.parametrize("name", ["lenet5", "small_cnn"])
def test_fused_moving_average_is_ignites(name):
    """The trainer's FusedEMAHandler is Ignite's EMAHandler with a faster update: the same average, with
    small_cnn's integer batch counts copied rather than averaged."""
    torch.manual_seed(0)
    model = build_model(name).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))

    def step(engine: Engine, batch: int) -> None:
        model.train()
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    trainer = Engine(step)
    ignites, fused = EMAHandler(model, momentum=0.05, handle_buffers="update"), FusedEMAHandler(model, momentum=0.05)
    ignites.attach(trainer, name="ignites_momentum")
    fused.attach(trainer, name="fused_momentum")
    assert trainer.has_event_handler(fused._update_ema_model, Events.ITERATION_COMPLETED)  # still the method Ignite calls
    trainer.run(range(20), max_epochs=1)
    expected, averaged, current = ignites.ema_model.state_dict(), fused.ema_model.state_dict(), model.state_dict()
    assert averaged.keys() == expected.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(averaged[key], tensor, rtol=1e-5, atol=1e-6, msg=key)
        assert averaged[key].is_floating_point() != torch.equal(averaged[key], current[key]), key


class AutocastProbe(torch.nn.Module):
    """A linear layer that records whether it ran under CPU bf16 autocast."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(28 * 28, 10)
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x.flatten(1))
        self.seen.append(out.dtype)
        return out


@pytest.mark.parametrize("wanted, native, expected", [(True, True, torch.bfloat16), (True, False, torch.float32), (False, True, torch.float32)])
def test_cpu_bf16_autocasts_only_where_asked_and_native(monkeypatch, caplog, wanted, native, expected):
    """train.cpu_bf16 runs the forward pass under bf16 autocast, with a float32 loss; a CPU without native bf16
    (where it would be emulated, slower than fp32) trains in fp32 and says so."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    cfg = load_config(overrides=[f"train.cpu_bf16={wanted}", "train.max_epochs=1"])
    images, labels = torch.randn(64, 1, 28, 28), torch.arange(64) % 10
    loader = InMemoryLoader(images, labels, batch_size=32, shuffle=True, drop_last=True)
    model = AutocastProbe()
    optimizer = create_optimizer(model, cfg)
    trainer = create_trainer(model, optimizer, torch.nn.CrossEntropyLoss(), create_lr_scheduler(optimizer, cfg, len(loader)),
                             loader, cfg, torch.device("cpu"), log_every=1)
    trainer.run(loader, max_epochs=1)
    assert model.seen == [expected, expected] and isinstance(trainer.state.output, float)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert ("no native bf16" in caplog.text) == (wanted and not native)


def test_a_run_without_the_average_resumes_with_it(tmp_path):
    """A checkpoint from a run with train.ema_decay=0, resumed with the average on: the run exports the best
    checkpoint it kept, here the first run's, which holds no average, so its raw weights (what that run tested)."""
    first = run_trainer(f"output.root={tmp_path}", "run.name=raw", "train.max_epochs=1", "train.ema_decay=0",
                        "tensorboard.enabled=false")
    assert first.returncode == 0, first.stderr[-3000:]
    [last] = (tmp_path / "raw" / "checkpoints").glob("last_checkpoint_*.pt")
    (tmp_path / "raw" / "model.pt").unlink()
    resumed = run_trainer(f"resume={last}", "train.ema_decay=0.995", "tensorboard.enabled=false",
                          config=str(tmp_path / "raw" / "config.yaml"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = read_metrics(tmp_path / "raw")
    assert metrics["epochs_run"] == 1 and metrics["best_epoch"] == 1 and (tmp_path / "raw" / "model.pt").is_file()


def test_interrupted_run_resumes_to_the_same_result(trained_run, tmp_path):
    """Ctrl-C in epoch 2 of the quick config, then the printed resume command: same as the straight run.

    Run as the README runs it, with the default relative `runs` folder (here under tmp_path, the working directory).
    """
    command = [sys.executable, "-m", "trainer.main", "--config", str(ROOT / "configs/quick.yaml"), "run.name=cut"]
    env = {**os.environ, "FASHION_MNIST_ROOT": str(DATA_ROOT)}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    seen, rest = ctrl_c_after(process, "Epoch 1/2")
    seen += rest
    assert process.returncode == 130, seen[-3000:]
    resume = re.search(r"Resume with: python -m trainer.main (.*)", seen)
    assert resume, seen[-3000:]
    args = resume.group(1).split()
    assert args[0] == "--config"
    assert (tmp_path / args[1]).is_file() and not Path(args[1]).is_absolute(), args
    result = run_trainer(*args[2:], config=args[1], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed, straight = read_metrics(tmp_path / "runs" / "cut"), read_metrics(trained_run)
    assert resumed["epochs_run"] == straight["epochs_run"] == 2
    for key in ("test_accuracy", "val_accuracy", "test_loss", "val_loss"):
        assert abs(resumed[key] - straight[key]) < 1e-4, (key, resumed[key], straight[key])
    projector = (tmp_path / "runs" / "cut" / "projector_config.pbtxt").read_text()
    assert projector.count("embeddings {") == 2, "the resumed run lists both embeddings, each once"


def test_a_stop_on_the_last_iteration_of_an_epoch_validates_that_epoch_first(trained_run, tmp_path):
    """Ctrl-C landing on the quick run's first epoch's last iteration: the epoch is validated and kept as the best
    before the stop, so the resumed run, which takes the epoch as done, exports what the straight run exports."""
    last = 55_000 // 128
    stopped = run_trainer(f"output.root={tmp_path}", "run.name=edge", module="tests.signalled", env={"SIGNAL_AT": str(last)})
    assert stopped.returncode == 130 and f"Stopped at iteration {last}" in stopped.stderr, stopped.stderr[-3000:]
    assert "Epoch 1/2" in stopped.stderr and "Epoch 2/2" not in stopped.stderr, "the epoch's validation ran before the stop"
    [checkpoint] = (tmp_path / "edge" / "checkpoints").glob("last_checkpoint_*.pt")
    resumed = run_trainer(f"resume={checkpoint}", config=str(tmp_path / "edge" / "config.yaml"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    edge, straight = read_metrics(tmp_path / "edge"), read_metrics(trained_run)
    assert edge["best_epoch"] == straight["best_epoch"] and edge["epochs_run"] == 2
    for key in ("test_accuracy", "val_accuracy", "test_loss", "val_loss"):
        assert abs(edge[key] - straight[key]) < 1e-4, (key, edge[key], straight[key])


@pytest.mark.parametrize("config", ["configs/strong.yaml", "configs/lenet32.yaml", "configs/lenet_margin.yaml"])
def test_a_config_with_its_own_network_trains_and_exports_its_architecture(tmp_path, config):
    """The configs with a network of their own end to end, TensorBoard's views too (the model graph traces the
    margin's scaling), on a tiny stand-in for Fashion-MNIST so it takes seconds (on the real one, even a 1,000-image
    training split leaves 59,000 validation images for the larger network to go through): model.pt names the
    architecture and its settings, and loads back into a fresh model of that shape."""
    data = write_idx(tmp_path / "data")
    result = run_trainer(
        f"output.root={tmp_path}", "run.name=own", f"data.root={data}", "data.val_size=100", "train.max_epochs=1",
        "tensorboard.embedding_samples=100", config=config,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = torch.load(tmp_path / "own" / "model.pt", weights_only=True, map_location="cpu")
    wanted = load_config(ROOT / config).model
    assert payload["arch"] == wanted.name
    assert payload["arch_kwargs"] == {"num_classes": 10, **OmegaConf.to_container(wanted.kwargs)}
    model = build_model(payload["arch"], **payload["arch_kwargs"])
    model.load_state_dict(payload["state_dict"])
    assert model.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # the demo reads a tile with its mirror image only where training mirrored every class (not lenet_margin's shoes)
    assert payload["mirror_views"] is (config != "configs/lenet_margin.yaml")
    assert Classifier(tmp_path / "own" / "model.pt").mirror is payload["mirror_views"]


@pytest.mark.parametrize("config, unflipped", [("configs/lenet_margin.yaml", FOOTWEAR), ("configs/default.yaml", ())])
def test_the_shoes_stay_unflipped_only_where_the_config_says(tmp_path, config, unflipped):
    """`train.hflip_footwear=false` reaches the training loader; the photo-robust default still mirrors shoes, which
    photos show facing either way."""
    cfg = load_config(ROOT / config, [f"data.root={write_idx(tmp_path)}", "data.val_size=50"])
    _, train, _, _ = training.get_dataflow(cfg)
    assert train.hflip and tuple(train.unflipped_classes.tolist()) == unflipped


def test_export_last_keeps_the_weights_the_schedule_ended_with(tmp_path):
    """`train.export=last`: model.pt holds the last epoch's moving average, not the best epoch's, and metrics.json
    says both epochs. The tiny stand-in is easy enough that the validation accuracy reaches 100% epochs before the end,
    and a tie does not replace the best checkpoint, so the best epoch is an earlier one."""
    data = write_idx(tmp_path / "data", n_train=1400)
    result = run_trainer(
        f"output.root={tmp_path}", "run.name=last", f"data.root={data}", "data.val_size=100", "train.max_epochs=8",
        "train.export=last", "tensorboard.enabled=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(tmp_path / "last")
    assert metrics["best_epoch"] < metrics["exported_epoch"] == metrics["epochs_run"] == 8, metrics
    [best] = (tmp_path / "last" / "checkpoints").glob(f"best_checkpoint_{metrics['best_epoch']}_*.pt")
    [last] = (tmp_path / "last" / "checkpoints").glob("last_checkpoint_*.pt")
    payload = torch.load(tmp_path / "last" / "model.pt", weights_only=True)
    at_best, at_last = (torch.load(path, weights_only=True)["ema_model"] for path in (best, last))
    assert payload["epoch"] == 8
    for name, tensor in payload["state_dict"].items():
        assert torch.equal(tensor, at_last[name]), name
    assert any(not torch.equal(tensor, at_best[name]) for name, tensor in payload["state_dict"].items())


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_run_records_the_threads_it_summed_with(tmp_path, threads):
    """The same seed repeats to the digit only with the same threads (a thread count sums in its own order): the line
    that starts the training says how many it uses, and metrics.json keeps them beside the processor and torch. On the
    CPU, where the threads do the sums, whatever GPU the machine has."""
    data = write_idx(tmp_path / "data")
    result = run_trainer(
        f"output.root={tmp_path}", "run.name=threads", f"data.root={data}", "data.val_size=100", "train.max_epochs=1",
        "tensorboard.enabled=false", "device=cpu", env={"OMP_NUM_THREADS": threads},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    plural = "s" if threads != "1" else ""
    assert f"Training lenet5 on cpu ({threads} thread{plural}) for 1 epochs" in result.stderr, result.stderr[-3000:]
    machine = read_metrics(tmp_path / "threads")["machine"]
    assert machine["torch_threads"] == int(threads)
    assert machine["torch"] == torch.__version__ and machine["cpu"] and machine["cores"] == os.cpu_count()


def test_a_run_that_diverges_closes_its_tensorboard_writer(tmp_path):
    """A study goes on after a diverged trial in the same process: the trial's event-file writer and its thread must
    not outlive it."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    from trainer.engines import TrainingDiverged
    from trainer.training import training

    cfg = load_config(ROOT / "configs" / "quick.yaml", [
        f"output.root={tmp_path}", "run.name=diverged", f"data.root={write_idx(tmp_path / 'data')}", "data.val_size=100",
        "train.lr=1e30", "train.max_epochs=5", "tensorboard.embedding_samples=50",
    ])

    def writers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if isinstance(t, _AsyncWriterThread)}

    before = writers()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # the run installs its own
    try:
        with pytest.raises(TrainingDiverged):
            training(0, cfg)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert list((tmp_path / "diverged").glob("events.out.tfevents.*")), "the views were on"
    assert writers() <= before


def test_a_test_set_without_every_class_exports_an_example_of_each_class_it_has(tmp_path):
    """A smaller test set than the official one is allowed (`check_raw_files`); one too small to hold all ten classes
    gives the demo the examples it has, rather than failing after the training with model.pt already written."""
    data = write_idx(tmp_path / "data", n_test=5)  # classes 0-4
    result = run_trainer(f"output.root={tmp_path}", "run.name=five", f"data.root={data}", "data.val_size=100",
                         "train.max_epochs=1", "tensorboard.enabled=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "five" / "examples").iterdir()) == [
        "0_T-shirt-top.png", "1_Trouser.png", "2_Pullover.png", "3_Dress.png", "4_Coat.png"
    ]
