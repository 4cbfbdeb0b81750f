"""Stopping and resuming as users do it: Ctrl-C, resuming in place, into a new run name, and starting again.

One small run (6,000 training images, two epochs of the quick config) is stopped with Ctrl-C in its second
epoch; each test resumes a copy of it.
"""

import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import DATA_ROOT, ROOT, accumulate, read_metrics, run_trainer
from trainer.training import resume_command

SMALL = ["data.val_size=54000", "tensorboard.enabled=false"]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> tuple[Path, str]:
    """(run directory, everything it logged): stopped with Ctrl-C in epoch 2, its output going to a file."""
    out = tmp_path_factory.mktemp("stopped")
    log = out / "train.log"
    command = [sys.executable, "-m", "trainer.main", "--config", "configs/quick.yaml", f"output.root={out}", "run.name=i", *SMALL]
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "FASHION_MNIST_ROOT": str(DATA_ROOT)},
                                   stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while "Epoch 1/2" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    assert process.returncode == 130, log.read_text()[-3000:]
    return out / "i", log.read_bytes().decode(errors="replace")  # not read_text: it would turn "\r" into "\n"


def copy_run(run_dir: Path, into: Path) -> Path:
    shutil.copytree(run_dir, into / run_dir.name)
    return into / run_dir.name


def last_checkpoint(run_dir: Path) -> Path:
    [last] = (run_dir / "checkpoints").glob("last_checkpoint_*.pt")
    return last


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its content's hash and its modification time."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def checkpoint_names(run_dir: Path) -> list[str]:
    return sorted(p.name.split("_")[0] for p in (run_dir / "checkpoints").iterdir())


def test_a_requested_stop_is_not_logged_as_an_exception(stopped_run):
    _, log = stopped_run
    assert "Resume with: python -m trainer.main" in log
    assert "terminating due to exception" not in log, log[-3000:]


def test_a_log_file_gets_no_progress_bar_frames(stopped_run):
    """Output to a file (not a terminal): the epoch lines, without tqdm's carriage-return frames, nor the lines of
    Ignite's launcher ("Run ... in 1 processes", "End of run") that the README's sample does not show."""
    _, log = stopped_run
    assert "Epoch 1/2" in log and "\r" not in log, repr(log[-1000:])
    assert "ignite.distributed" not in log, log[-3000:]


def test_resuming_in_place_keeps_one_last_checkpoint(stopped_run, tmp_path):
    run_dir = copy_run(stopped_run[0], tmp_path)
    result = run_trainer(f"output.root={tmp_path}", "run.name=i", f"resume={last_checkpoint(run_dir)}", *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint_names(run_dir) == ["best", "last"], checkpoint_names(run_dir)
    assert read_metrics(run_dir)["epochs_run"] == 2


def test_resuming_into_a_new_name_leaves_the_first_run_untouched(stopped_run, tmp_path):
    """The new run gets its own copy of the best checkpoint so far and its own TensorBoard views; the first run's
    directory stays byte for byte as it was."""
    first = copy_run(stopped_run[0], tmp_path)
    before = snapshot(first)
    result = run_trainer(f"output.root={tmp_path}", "run.name=other", f"resume={last_checkpoint(first)}",
                         "data.val_size=54000", "tensorboard.embedding_samples=100")
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(first) == before
    other = tmp_path / "other"
    assert checkpoint_names(other) == ["best", "last"], checkpoint_names(other)
    assert read_metrics(other)["epochs_run"] == 2 and (other / "model.pt").is_file()
    assert "train/images" in accumulate(other).Tags()["images"], "the new run has its start views"
    third = run_trainer(f"output.root={tmp_path}", "run.name=third", f"resume={last_checkpoint(other)}",
                        "data.val_size=54000", "tensorboard.embedding_samples=100")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "train/images" in accumulate(tmp_path / "third").Tags()["images"], "a finished run resumed anew has them too"


def test_resuming_into_a_name_that_holds_another_run_is_refused(stopped_run, tmp_path):
    first = copy_run(stopped_run[0], tmp_path)
    taken = copy_run(stopped_run[0], tmp_path / "elsewhere")
    before = snapshot(taken)
    result = run_trainer(f"output.root={taken.parent}", "run.name=i", f"resume={last_checkpoint(first)}", *SMALL)
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and message.startswith("error: ") and "already holds a run" in message, message
    assert snapshot(taken) == before


def test_resuming_with_another_max_epochs_is_refused_before_anything_is_written(stopped_run, tmp_path):
    run_dir = copy_run(stopped_run[0], tmp_path)
    before = snapshot(run_dir)
    result = run_trainer(f"output.root={tmp_path}", "run.name=i", f"resume={last_checkpoint(run_dir)}",
                         "train.max_epochs=4", *SMALL)
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "one-cycle" in message and "train.max_epochs=2" in message, message
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("change, was", [("seed=7", "seed=0"), ("data.val_size=53000", "data.val_size=54000")])
def test_resuming_with_another_split_is_refused_before_anything_is_written(stopped_run, tmp_path, change, was):
    """The seed and data.val_size choose the images held out for validation: the run's own, from its config.yaml."""
    run_dir = copy_run(stopped_run[0], tmp_path)
    before = snapshot(run_dir)
    result = run_trainer(f"output.root={tmp_path}", f"resume={last_checkpoint(run_dir)}", change, config=str(run_dir / "config.yaml"))
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and f"is of a run with {was}, which chose the images it validates on" in message, message
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("change", ["model.kwargs.margin=1", "model.kwargs.dropout=0.5"])
def test_resuming_as_another_network_with_the_same_weights_is_refused(stopped_run, tmp_path, change):
    """A margin or dropout adds no weights, so the checkpoint would load and train on as another network."""
    run_dir = copy_run(stopped_run[0], tmp_path)
    before = snapshot(run_dir)
    result = run_trainer(f"output.root={tmp_path}", f"resume={last_checkpoint(run_dir)}", change, config=str(run_dir / "config.yaml"))
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "is of a run whose model.kwargs was {" in message, message
    assert f"resume with --config {run_dir / 'config.yaml'}" in message and change.split(".")[-1].split("=")[0] in message, message
    assert snapshot(run_dir) == before


def test_a_refused_resume_in_place_writes_no_tensorboard_file(stopped_run, tmp_path):
    """Refused once the checkpoint is read (it does not fit the network asked for: the run's config.yaml was edited
    to another one), with the TensorBoard views on."""
    run_dir = copy_run(stopped_run[0], tmp_path)
    config = run_dir / "config.yaml"
    edited = OmegaConf.load(config)
    edited.model.kwargs.conv1 = 8
    OmegaConf.save(edited, config)
    before = snapshot(run_dir)
    result = run_trainer(f"output.root={tmp_path}", f"resume={last_checkpoint(run_dir)}", "tensorboard.enabled=true",
                         config=str(config))
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "does not fit" in message, message
    assert snapshot(run_dir) == before


def test_a_checkpoint_whose_random_state_is_not_torch_s_is_refused_before_the_run_starts(stopped_run, tmp_path):
    """A hand-made checkpoint: its random state is checked as it is read, not at the epoch's start, once the
    TensorBoard views had added a file to the run and the run had begun."""
    run_dir = copy_run(stopped_run[0], tmp_path)
    last = last_checkpoint(run_dir)
    torch.save(torch.load(last, weights_only=True) | {"random_state": {"cpu": torch.zeros(3)}}, last)
    before = snapshot(run_dir)
    result = run_trainer(f"output.root={tmp_path}", f"resume={last}", "tensorboard.enabled=true", config=str(run_dir / "config.yaml"))
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "does not fit" in message and "ByteTensor" in message, message
    assert snapshot(run_dir) == before


def test_a_run_stopped_before_its_first_checkpoint_starts_again_under_its_name(tmp_path):
    """What a run killed while loading its data leaves: its config, an empty checkpoints folder, a first events file."""
    run_dir = tmp_path / "early"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 0\n")
    stale = [run_dir / "events.out.tfevents.1.host.1.0", run_dir / "loss_train" / "events.out.tfevents.1.host.1.1"]
    stale[1].parent.mkdir()
    for path in stale:
        path.write_bytes(b"")
    result = run_trainer(f"output.root={tmp_path}", "run.name=early", "train.max_epochs=1", *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_metrics(run_dir)["epochs_run"] == 1 and not any(path.exists() for path in stale), "shown twice otherwise"


def test_a_start_that_ends_before_its_first_checkpoint_leaves_no_run_behind(tmp_path):
    """Stopped twice at once, or refused once it had made its directory: nothing to resume, nothing for TensorBoard."""
    stopped = run_trainer(f"output.root={tmp_path}", *SMALL, module="tests.signalled", env={"SIGNAL_AT": "5", "SIGNAL_TIMES": "2"})
    assert stopped.returncode == 130 and "before a checkpoint could be written" in stopped.stderr, stopped.stderr[-3000:]
    assert "terminating due to exception" not in stopped.stderr, stopped.stderr[-3000:]
    refused = run_trainer(f"output.root={tmp_path}", f"data.root={tmp_path / 'nothing'}", "data.download=false")
    assert refused.returncode == 2 and "is missing" in refused.stderr, refused.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == [], "neither start left its directory"


def test_a_run_with_dropout_resumed_in_mid_epoch_ends_as_an_uninterrupted_one(tmp_path):
    """Dropout draws its masks from torch's random state, which each epoch seeds afresh: the checkpoint keeps the
    state, so the rest of an epoch resumed halfway draws the masks the uninterrupted run drew, to the bit."""
    dropout = [*SMALL, "model.kwargs.dropout=0.5"]
    straight = run_trainer(f"output.root={tmp_path}", "run.name=straight", *dropout)
    stopped = run_trainer(f"output.root={tmp_path}", "run.name=cut", *dropout, module="tests.signalled", env={"SIGNAL_AT": "60"})
    assert straight.returncode == 0 and stopped.returncode == 130, stopped.stderr[-2000:]
    resumed = run_trainer(f"resume={last_checkpoint(tmp_path / 'cut')}", config=str(tmp_path / "cut" / "config.yaml"))
    assert resumed.returncode == 0 and "after iteration 60 of 92" in resumed.stderr, resumed.stderr[-2000:]
    first, second = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "cut")
    assert (first["val_loss"], first["test_loss"]) == (second["val_loss"], second["test_loss"])
    assert "\nresume: null\n" in (tmp_path / "cut" / "config.yaml").read_text(), "its recipe, not the checkpoint it resumed"
    assert second["resumed_from"] == str(last_checkpoint(tmp_path / "cut").parent / "last_checkpoint_60.pt")


def test_the_resume_command_survives_a_run_name_with_spaces():
    """`run.name` may hold spaces: the command printed must paste into a shell as the same arguments."""
    run_dir = Path("/runs/stop me")
    checkpoint = run_dir / "checkpoints" / "last_checkpoint_5.pt"
    command = shlex.split(resume_command(run_dir, checkpoint))
    assert command == ["python", "-m", "trainer.main", "--config", "/runs/stop me/config.yaml", f"resume={checkpoint}"]
