"""Training under faults: interruption, kill -9 at any moment, hostile or mismatched files, corrupt data, a full disk."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.helpers import DATA_ROOT, ROOT, killed_on_leaving, run_trainer
from trainer.data import raw_folder
from trainer.safe_io import atomic_torch_save

QUICK = ["--config", "configs/quick.yaml"]


@contextmanager
def start(log: Path, *overrides: str) -> Iterator[subprocess.Popen]:
    """The real command, its output going to the file `log` (a pipe nobody reads would fill up and block it); killed
    on leaving, whatever happened."""
    command = [sys.executable, "-m", "trainer.main", *QUICK, *overrides]
    env = {**os.environ, "FASHION_MNIST_ROOT": str(DATA_ROOT)}
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=stderr, text=True)
    process.log = log
    with killed_on_leaving(process):
        yield process


def output(process: subprocess.Popen) -> str:
    return process.log.read_text(errors="replace")


def read_until(process: subprocess.Popen, text: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while text not in output(process) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert text in output(process), output(process)[-2000:]
    return output(process)


def wait_for_file(folder: Path, pattern: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not list(folder.glob(pattern)) and time.monotonic() < deadline:
        time.sleep(0.001)


def assert_files_intact(run_dir: Path) -> None:
    """Whatever is in place under its real name must be whole and readable."""
    for checkpoint in (run_dir / "checkpoints").glob("*.pt"):
        assert {"model", "optimizer", "trainer"} <= set(torch.load(checkpoint, weights_only=True))
    if (run_dir / "model.pt").exists():
        assert "state_dict" in torch.load(run_dir / "model.pt", weights_only=True)
    if (run_dir / "metrics.json").exists():
        assert "test_accuracy" in json.loads((run_dir / "metrics.json").read_text())


def test_sigterm_checkpoints_flushes_and_exits_143(tmp_path):
    with start(tmp_path / "term.log", f"output.root={tmp_path}", "run.name=term") as process:
        read_until(process, "Epoch 1/2")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    rest = output(process)
    assert process.returncode == 143, rest[-2000:]
    assert "Resume with: python -m trainer.main --config" in rest
    run_dir = tmp_path / "term"
    assert_files_intact(run_dir)
    assert len(list((run_dir / "checkpoints").glob("last_checkpoint_*.pt"))) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("validation/accuracy")] == [1], "TensorBoard was flushed before exiting"


def test_a_sigterm_after_the_training_is_heard_once_the_run_is_exported(tmp_path):
    """The export (the final test, calibration, the photos) finishes, then the run says so and exits 143, as
    a SIGTERM should end it, instead of exiting 0 as if it had not been asked to stop."""
    result = run_trainer(f"output.root={tmp_path}", "run.name=late", "tensorboard.enabled=false", module="tests.signalled",
                         env={"SIGNAL": "SIGTERM", "SIGNAL_AT": "finish"})
    assert result.returncode == 143, result.stderr[-2000:]
    assert "Stopped after the training had ended: the run is finished and exported" in result.stderr
    assert (tmp_path / "late" / "model.pt").is_file() and (tmp_path / "late" / "metrics.json").is_file()


@pytest.mark.parametrize("ending", [[], ["train.max_epochs=4", "train.early_stopping_patience=1", "train.lr=1e-9"]],
                         ids=["the-last-epoch", "early-stopping-after-epoch-2"])
def test_a_ctrl_c_on_the_last_iteration_lets_the_run_finish_and_export(tmp_path, ending):
    """The epoch's validation and checkpoints run after its last iteration: where they end the run (its last epoch,
    or early stopping: a learning rate that never improves the first epoch's accuracy), a stop asked for on that
    iteration has nothing left to cut short, so the run is exported, then says it was stopped."""
    small = ["data.val_size=54000", "tensorboard.enabled=false"]  # 46 iterations an epoch: epoch 2 ends at 92
    result = run_trainer(f"output.root={tmp_path}", "run.name=last", *small, *ending, module="tests.signalled",
                         env={"SIGNAL_AT": "92"})
    assert result.returncode == 130, result.stderr[-2000:]
    assert "Stopped after the training had ended: the run is finished and exported" in result.stderr
    assert "Resume with" not in result.stderr and json.loads((tmp_path / "last" / "metrics.json").read_text())["epochs_run"] == 2


def test_an_early_stopped_run_whose_export_was_cut_short_resumes_to_the_export_alone(tmp_path):
    """Twice Ctrl-C during the export of a run that early stopping ended after epoch 2 of 4: the checkpoints are
    there, and the resume finishes the export without training the epochs early stopping had ruled out."""
    small = ["data.val_size=54000", "tensorboard.enabled=false", "train.max_epochs=4", "train.early_stopping_patience=1", "train.lr=1e-9"]
    cut = run_trainer(f"output.root={tmp_path}", "run.name=early", *small, module="tests.signalled",
                      env={"SIGNAL_AT": "finish", "SIGNAL_TIMES": "2"})
    checkpoints = tmp_path / "early" / "checkpoints"
    assert cut.returncode == 130 and cut.stderr.strip().splitlines()[-1] == (
        f"error: stopped by the user at once: resume from the last checkpoint in {checkpoints}"), cut.stderr[-2000:]
    resumed = run_trainer(f"resume={checkpoints / 'last_checkpoint_92.pt'}", *small)
    assert resumed.returncode == 0 and "Epoch 3/4" not in resumed.stderr, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "early" / "metrics.json").read_text())["epochs_run"] == 2


KILL_MOMENTS = {
    "while loading data": lambda p, run_dir: wait_for_file(run_dir, "config.yaml"),  # written just before the data are read
    "while the first checkpoint is written": lambda p, run_dir: wait_for_file(run_dir / "checkpoints", "*"),
    "right after epoch 1": lambda p, run_dir: read_until(p, "Epoch 1/2"),
    "in the middle of epoch 2": lambda p, run_dir: (read_until(p, "Epoch 1/2"), time.sleep(2)),
    "while model.pt is written": lambda p, run_dir: wait_for_file(run_dir, "*model.pt*"),
}


def test_kill_9_at_any_moment_leaves_only_whole_files_and_resumes(tmp_path):
    resumable = []
    for i, (moment, wait) in enumerate(KILL_MOMENTS.items()):
        run_dir = tmp_path / f"kill{i}"
        log = tmp_path / f"kill{i}.log"
        with start(log, f"output.root={tmp_path}", f"run.name={run_dir.name}", "tensorboard.enabled=false") as process:
            wait(process, run_dir)
            process.kill()
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL, moment
        assert_files_intact(run_dir)
        resumable += sorted((run_dir / "checkpoints").glob("last_checkpoint_*.pt"))
    assert resumable, "some kill came after a checkpoint was written"
    latest = max(resumable, key=lambda p: int(p.stem.split("_")[-1]))
    result = run_trainer(f"resume={latest}", "tensorboard.enabled=false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((latest.parent.parent / "metrics.json").read_text())["epochs_run"] == 2


def test_a_kill_9_between_a_new_best_and_the_last_checkpoint_leaves_a_run_that_resumes(tmp_path):
    """Killed as epoch 2's last checkpoint begins, after epoch 2's better best checkpoint is written: the last
    checkpoint of epoch 1 must still find the best checkpoint it names."""
    small = ["data.val_size=54000", "tensorboard.enabled=false"]  # 46 iterations an epoch
    killed = run_trainer(f"output.root={tmp_path}", "run.name=killed", *small, module="tests.signalled",
                         env={"SIGNAL": "SIGKILL", "SIGNAL_AT": "saving:last_checkpoint_92.pt"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = tmp_path / "killed" / "checkpoints"
    assert [p.name for p in checkpoints.glob("best_checkpoint_2_*.pt")], "epoch 2 was a new best: the case at hand"
    resumed = run_trainer(f"resume={checkpoints / 'last_checkpoint_46.pt'}", *small)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(list(checkpoints.glob("best_checkpoint_*.pt"))) == 1, "the replaced best checkpoint is gone in the end"


def test_a_second_run_into_a_run_directory_in_use_is_refused(tmp_path):
    """Both would pass the "holds a run" check before the first checkpoint, then write into each other's files."""
    with start(tmp_path / "first.log", f"output.root={tmp_path}", "run.name=twin", "tensorboard.enabled=false") as first:
        read_until(first, "Training lenet5")
        second = run_trainer(f"output.root={tmp_path}", "run.name=twin", "seed=1", "tensorboard.enabled=false")
        assert first.poll() is None, "the first run is still training"
    message = second.stderr.strip().splitlines()[-1]
    assert second.returncode == 2 and message == f"error: run directory {tmp_path / 'twin'} is in use by another run now: choose another run.name"
    assert "seed: 0" in (tmp_path / "twin" / "config.yaml").read_text(), "the first run's config stays"


class RunsCode:
    """Unpickling this would create a marker file: the shape of a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_hostile_checkpoint_and_model_file_never_run_code(tmp_path, trained_run):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pt"
    torch.save({"model": {}, "optimizer": {}, "lr_scheduler": {}, "trainer": RunsCode(marker)}, hostile)
    result = run_trainer(f"output.root={tmp_path}", f"resume={hostile}")
    assert result.returncode == 2 and "was refused" in result.stderr.strip().splitlines()[-1]
    demo = subprocess.run([sys.executable, "demo/app.py", "--checkpoint", str(hostile)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert demo.returncode == 2 and "was refused" in demo.stderr
    predict = subprocess.run(
        [sys.executable, "-m", "trainer.predict", "--checkpoint", str(hostile), str(trained_run / "examples" / "1_Trouser.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert predict.returncode == 2 and "was refused" in predict.stderr
    assert not marker.exists(), "the pickled code ran"


def test_checkpoint_of_another_model_is_refused_naming_the_mismatch(tmp_path, trained_run):
    """In its run, by the run's config.yaml; moved away from it, by the weights that do not fit."""
    last = next((trained_run / "checkpoints").glob("last_checkpoint_*.pt"))
    result = run_trainer(f"output.root={tmp_path}", "run.name=other", f"resume={last}", "model.name=small_cnn")
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "whose model.name was lenet5, not small_cnn" in message, message
    moved = tmp_path / last.name
    shutil.copy(last, moved)
    result = run_trainer(f"output.root={tmp_path}", "run.name=other", f"resume={moved}", "model.name=small_cnn")
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "does not fit" in message and "conv1" in message, message


def test_a_checkpoint_naming_a_best_file_outside_its_run_is_refused(tmp_path, trained_run):
    """Plain data passes `weights_only`, but a best checkpoint named "../../victim.txt" would be deleted when
    the resumed run saved a better one (Ignite removes the file it replaces by name)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    last = next((trained_run / "checkpoints").glob("last_checkpoint_*.pt"))
    crafted = torch.load(last, weights_only=True) | {"best_checkpoint": {"_saved": [(-1.0, "../../victim.txt")]}}
    (tmp_path / "crafted").mkdir()
    torch.save(crafted, tmp_path / "crafted" / last.name)
    result = run_trainer(f"output.root={tmp_path / 'runs'}", "run.name=crafted", f"resume={tmp_path / 'crafted' / last.name}",
                         "tensorboard.enabled=false")
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "names a best checkpoint outside its folder ('../../victim.txt')" in message, message
    assert victim.read_text() == "precious\n"


def test_a_refused_resume_in_place_leaves_the_runs_config_as_it_was(tmp_path, trained_run):
    """The run's own resume command (`--config <run>/config.yaml resume=...`) keeps working after a wrong try."""
    run_dir = Path(shutil.copytree(trained_run, tmp_path / "quick"))
    config = (run_dir / "config.yaml").read_text()
    last = next((run_dir / "checkpoints").glob("last_checkpoint_*.pt"))
    result = run_trainer(f"resume={last}", "train.batch_size=64", "tensorboard.enabled=false")
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "iterations per epoch" in message, message
    assert (run_dir / "config.yaml").read_text() == config


def test_a_refused_resume_into_a_new_run_leaves_no_directory(tmp_path, trained_run):
    """A checkpoint kept outside its run's checkpoints/ folder resumes into a new, timestamped run: refused, it leaves
    no empty run behind; an output.root that is a dangling link is refused in one line (it once made name_run spin)."""
    saved = Path(shutil.copy(next((trained_run / "checkpoints").glob("last_checkpoint_*.pt")), tmp_path / "saved.pt"))
    result = run_trainer(f"output.root={tmp_path / 'runs'}", f"resume={saved}", "train.max_epochs=3")
    assert result.returncode == 2 and "cannot resume it" in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]
    assert list((tmp_path / "runs").iterdir()) == []
    (tmp_path / "dangling").symlink_to(tmp_path / "not-mounted" / "runs")
    result = run_trainer(f"output.root={tmp_path / 'dangling'}", timeout=60)
    assert result.returncode == 2 and "cannot write the run directory" in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]


def test_a_diverging_run_stops_at_once_and_exports_nothing(tmp_path):
    result = run_trainer(f"output.root={tmp_path}", "run.name=diverged", "train.lr=1e6", "tensorboard.enabled=false")
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "the training loss became nan at iteration" in message and "lower train.lr" in message, message
    assert result.stderr.count("the training loss became nan") == 1, "said once, not again by each engine on the way"
    assert not (tmp_path / "diverged" / "model.pt").exists()


def test_altered_dataset_file_is_named(tmp_path, data_root):
    copy = tmp_path / "data" / "FashionMNIST" / "raw"
    shutil.copytree(raw_folder(data_root), copy)
    images = copy / "train-images-idx3-ubyte"
    with open(images, "r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = run_trainer(f"output.root={tmp_path}", f"data.root={tmp_path / 'data'}")
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and str(images) in message and "differs from the official release" in message


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB file system of its own, to fill up while a run writes to it (needs root, as CI runs)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_stops_with_a_message_and_keeps_the_last_checkpoint(small_disk, tmp_path):
    checkpoints = small_disk / "full" / "checkpoints"
    # the log goes beside the small disk, not onto it
    with start(tmp_path / "full.log", f"output.root={small_disk}", "run.name=full", "tensorboard.enabled=false") as process:
        wait_for_file(checkpoints, "last_checkpoint_*.pt")
        time.sleep(0.5)
        try:
            with open(small_disk / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
        except OSError:  # the disk is full now
            pass
        process.wait(timeout=300)
    stderr = output(process)
    assert process.returncode == 1, stderr[-2000:]
    message = stderr.strip().splitlines()[-1]
    assert "No space left on device" in message and "Traceback" not in stderr, message
    kept = list(checkpoints.glob("last_checkpoint_*.pt"))
    assert len(kept) == 1 and torch.load(kept[0], weights_only=True)["trainer"]["iteration"] > 0


def test_a_save_that_fills_the_disk_is_an_os_error_and_leaves_no_partial_file(small_disk):
    """torch's own file writer raises RuntimeError on a full disk, which the trainer's one-line error missed."""
    with pytest.raises(OSError, match="No space left on device"):
        atomic_torch_save({"weights": torch.zeros(2_000_000)}, small_disk / "model.pt")  # 8 MB on a 4 MB disk
    assert list(small_disk.iterdir()) == []
