"""Data-parallel training through ignite.distributed: two gloo processes on this CPU, as a user starts them."""

import re

import pytest
import torch

from tests.helpers import ROOT, pr_curve_counts, read_metrics, run_trainer
from trainer.config import load_config
from trainer.data import CLASS_NAMES
from trainer.errors import UserError
from trainer.training import launch_settings

# 20,000 training images, 2 epochs of 156 global batches: long enough to compare, short enough for CI.
SHORT = ["data.val_size=40000", "train.max_epochs=2", "tensorboard.embeddings=false", "tensorboard.graph=false"]


def test_two_gloo_processes_train_one_model_like_one_process(tmp_path):
    two = run_trainer(f"output.root={tmp_path}", "run.name=two", "dist.backend=gloo", "dist.nproc_per_node=2", *SHORT)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_trainer(f"output.root={tmp_path}", "run.name=one", *SHORT)
    assert one.returncode == 0, one.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    run_dir = tmp_path / "two"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    # rank 0 tested only its half of the test set; its end views still show all of it
    assert pr_curve_counts(run_dir) == {name: (1000, 10_000) for name in CLASS_NAMES}
    assert len(list(run_dir.rglob("model.pt"))) == 1 and len(list(run_dir.glob("checkpoints/last_*.pt"))) == 1
    assert two.stderr.count("Epoch 1/2") == 1, "only rank 0 logs progress"
    two_metrics, one_metrics = read_metrics(run_dir), read_metrics(tmp_path / "one")
    assert two_metrics["epochs_run"] == one_metrics["epochs_run"] == 2
    assert abs(two_metrics["test_accuracy"] - one_metrics["test_accuracy"]) <= 0.02, (two_metrics, one_metrics)
    assert two_metrics["test_accuracy"] >= 0.75


@pytest.mark.parametrize("export", ["best", "last"])
def test_two_processes_test_the_weights_rank_0_exports(tmp_path, export):
    """With batch norm (the default network) each rank's running statistics average its own batches, so the ranks
    end with different weights: whichever `train.export` chooses, every rank tests rank 0's, the ones model.pt holds."""
    result = run_trainer(f"output.root={tmp_path}", "dist.backend=gloo", "dist.nproc_per_node=2", f"train.export={export}",
                         *SHORT, "train.max_epochs=1", "tensorboard.enabled=false", "data.measure_photos=false",
                         config="configs/default.yaml", module="tests.tested_weights")
    assert result.returncode == 0, result.stderr[-3000:]
    said = dict(re.findall(r"rank (\d) tests weights ([0-9a-f]{16})", result.stderr))
    assert said.keys() == {"0", "1"} and said["0"] == said["1"], result.stderr[-3000:]


@pytest.mark.parametrize(
    "at, times, says",
    [("setup", 1, "Stopped at iteration 1;"), ("5", 2, "error: stopped by the user before a checkpoint could be written")],
    ids=["once-during-the-set-up", "twice-while-training"],
)
def test_ctrl_c_stops_a_two_process_run_whenever_it_comes(tmp_path, at, times, says):
    """Once during the set-up, which each process used to spend deaf to it, the run still stops at its first
    iteration with a checkpoint; twice, at once, and says so with 130, not the success a spawned process reported."""
    result = run_trainer(f"output.root={tmp_path}", "dist.backend=gloo", "dist.nproc_per_node=2", *SHORT,
                         module="tests.signalled", env={"SIGNAL_AT": at, "SIGNAL_TIMES": str(times)}, timeout=180)
    assert result.returncode == 130 and says in result.stderr, result.stderr[-3000:]


def test_a_stop_keeps_its_checkpoint_however_long_rank_0_takes_to_write_it(tmp_path):
    """Rank 1 used to exit as rank 0 began the stop's checkpoint; torch's spawn then terminated rank 0, which took
    that for a second Ctrl-C and dropped the checkpoint (a slow disk, or a large model, takes more than a second)."""
    result = run_trainer(f"output.root={tmp_path}", "run.name=slow", "dist.backend=gloo", "dist.nproc_per_node=2", *SHORT,
                         module="tests.signalled", env={"SIGNAL_AT": "20", "SLOW_SAVE_S": "3"}, timeout=180)
    assert result.returncode == 130 and "Stopped at iteration 20;" in result.stderr, result.stderr[-3000:]
    assert (tmp_path / "slow" / "checkpoints" / "last_checkpoint_20.pt").is_file()


def test_a_failing_rank_ends_the_whole_run(tmp_path):
    result = run_trainer(
        f"output.root={tmp_path}", "dist.backend=gloo", "dist.nproc_per_node=2", *SHORT, module="tests.failing_rank", timeout=120
    )
    assert result.returncode != 0
    assert "injected failure in rank 1" in result.stderr.strip().splitlines()[-1]


def test_each_rank_frees_its_ddp_model_before_the_process_group_is_destroyed(tmp_path):
    result = run_trainer(
        f"output.root={tmp_path}", "dist.backend=gloo", "dist.nproc_per_node=2", *SHORT, "train.max_epochs=1",
        module="tests.distributed_teardown", timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(re.findall(r"rank (\d) left (\d+) DDP models alive", result.stderr)) == [("0", "0"), ("1", "0")]


def test_nccl_without_gpus_is_refused_up_front(tmp_path):
    result = run_trainer(f"output.root={tmp_path}", "dist.backend=nccl", "dist.nproc_per_node=2")
    assert result.returncode == 2 and "needs CUDA GPUs" in result.stderr.strip().splitlines()[-1]
    result = run_trainer(f"output.root={tmp_path}", "dist.nproc_per_node=3", "train.batch_size=128")
    assert result.returncode == 2 and "must divide evenly among 3 processes" in result.stderr.strip().splitlines()[-1]


def test_more_processes_than_gpus_are_refused_unless_they_train_on_the_cpu(monkeypatch):
    """Ignite gives each process the GPU of its local rank whenever CUDA is there: two processes on one GPU would
    crash in the second; said before anything starts (a GPU machine is mimicked: this one has none)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg = load_config(ROOT / "configs" / "quick.yaml", ["dist.nproc_per_node=2"])
    with pytest.raises(UserError, match="2 processes on this machine but 1 GPU"):
        launch_settings(cfg)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # launch_settings hides the GPUs for device=cpu; restored after
    cpu = load_config(ROOT / "configs" / "quick.yaml", ["dist.nproc_per_node=2", "device=cpu"])
    assert launch_settings(cpu) == {"backend": "gloo", "nproc_per_node": 2}
