"""`python -m benchmarks.timed_run CLOCK.json TESTS_PER_EPOCH LIMIT [trainer arguments]`: the real trainer CLI, with a clock.

`trainer.main.main` runs unchanged, with everything it does; only three of the run's named steps are wrapped, to attach
a clock to the trainer engine, first in line at its events, and to find its test loader and the weights its own
evaluators test; the TensorBoard views' closing is wrapped to read their own account of the time they took.
The clock reads seconds since `trainer.run` started (as `metrics.json`'s `train_seconds`) at the end of every
epoch's iterations, leaving out the benchmark's own work:
- when TESTS_PER_EPOCH > 0, that many times an epoch it tests those weights on the test set;
- when LIMIT is 1, after every epoch but the last it runs one epoch of the limit (`bare_epoch`): a plain PyTorch loop over the
  trainer's own loader with a model, optimizer and schedule of its own from `trainer.training.initialize`, no Ignite,
  no logging. Each trainer epoch then has a limit epoch measured next to it, seconds apart, in the same process,
  which the machine's drift over minutes cannot come between.
One process per run keeps runs independent.

CLOCK.json, written only when the trainer succeeds:
            {"peak_rss_mb": float (VmHWM of this process),
             "run_seconds": float (trainer.main.main's wall time: data, training, final tests, end views, export;
                                   with the benchmark's own work left out),
             "benchmark_seconds": float (the benchmark's tests and limit epochs: metrics.json's train_seconds
                                         includes them),
             "tensorboard_seconds": float | null (the TensorBoard views' time in this run; null with them off),
             "tensorboard_import_seconds": float (importing the views' modules, matplotlib among them: a run with
                                                  the views on pays it inside run_seconds; here it is paid before),
             "images_per_epoch": int (the trainer loader's batches times their size),
             "epochs": [{"epoch": int, "train_seconds": float (the clock at the end of the epoch's iterations),
                         "loop_seconds": float (Ignite's time of that epoch's iterations alone),
                         "limit_seconds": float | null (the limit epoch run just after it; null unless LIMIT)}, ...],
             "tests": [{"epoch": float (epochs of training done), "train_seconds": float, "test_accuracy": float}, ...]}
"""

import json
import sys
import time
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch.nn as nn
from ignite.engine import Engine, Events
from omegaconf import DictConfig

import trainer.main as trainer_main
import trainer.training as trainer_training
from benchmarks.common import peak_rss_mb, run_python
from trainer.data import InMemoryLoader
from trainer.engines import trains_in_bf16, training_forward


def bare_epoch(parts: tuple, loader: InMemoryLoader, epoch: int) -> float:
    """Seconds of one epoch of the limit: `parts` from `trainer.training.initialize` and the trainer's forward pass
    (`trainer.engines.training_forward`: in bf16 where the trainer's is), the loader's batches, nothing else."""
    model, optimizer, loss_fn, lr_scheduler, forward = parts
    device = idist.device()
    model.train()
    start = time.perf_counter()
    loader.set_epoch(epoch)
    for images, labels in loader:
        lr_scheduler(None)  # the trainer's schedule object, stepped by hand: the same learning rate at each step
        optimizer.zero_grad()
        loss_fn(forward(model, images.to(device)), labels.to(device)).backward()
        optimizer.step()
    return time.perf_counter() - start


def instrument(clock: dict[str, Any], tests_per_epoch: int, limit: bool) -> None:
    """Wrap `get_dataflow` (for the config and the loaders), `create_evaluator` (for the weights it tests) and
    `create_trainer` (to attach the clock) in trainer.training, and `TensorBoardViews.close` (to read the views' time)."""
    started = time.perf_counter()
    from trainer.handlers.tensorboard import TensorBoardViews

    clock["tensorboard_import_seconds"] = time.perf_counter() - started
    get_dataflow, create_evaluator = trainer_training.get_dataflow, trainer_training.create_evaluator
    create_trainer = trainer_training.create_trainer
    close_views = TensorBoardViews.close
    found: dict[str, Any] = {}

    def close_and_report(views: TensorBoardViews) -> None:
        close_views(views)
        clock["tensorboard_seconds"] = views.seconds

    def dataflow(cfg: DictConfig):
        flows = get_dataflow(cfg)
        found["cfg"], found["train"], found["test"] = cfg, flows[1], flows[3]
        return flows

    def evaluator(model: nn.Module, *args, **kwargs) -> Engine:
        found["tested"] = model  # the same weights in all the trainer's evaluators: the model or its average
        return create_evaluator(model, *args, **kwargs)

    def trainer_with_clock(model, optimizer, loss_fn, lr_scheduler, train_loader, *args) -> Engine:
        engine = create_trainer(model, optimizer, loss_fn, lr_scheduler, train_loader, *args)

        def seconds(now: float) -> float:
            return now - clock["start"] - clock["benchmark_seconds"]

        def excluded(work):
            """Runs `work` with its time left out of the clock; returns what it returned."""
            now = time.perf_counter()
            try:
                return work()
            finally:
                clock["benchmark_seconds"] += time.perf_counter() - now

        def test() -> None:
            at = seconds(time.perf_counter())
            excluded(lambda: found["tester"].run(found["test"]))
            state = engine.state
            clock["tests"].append({
                "epoch": state.iteration / state.epoch_length,
                "train_seconds": at,
                "test_accuracy": found["tester"].state.metrics["accuracy"],
            })

        @engine.on(Events.STARTED)
        def start() -> None:
            clock["start"] = time.perf_counter()
            clock["images_per_epoch"] = len(train_loader) * train_loader.batch_size
            found["tester"] = create_evaluator(found["tested"], loss_fn, idist.device())
            if tests_per_epoch > 1:  # attached now, after the trainer's own handlers: it sees this step's weights
                every = -(-len(train_loader) // tests_per_epoch)  # the last of an epoch's tests is at its end

                def mid_epoch(engine: Engine, iteration: int) -> bool:
                    within = (iteration - 1) % engine.state.epoch_length + 1
                    return within % every == 0 and within != engine.state.epoch_length

                engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=mid_epoch), test)

        @engine.on(Events.EPOCH_COMPLETED)
        def epoch_done() -> None:
            clock["epochs"].append({
                "epoch": engine.state.epoch,
                "train_seconds": seconds(time.perf_counter()),
                "loop_seconds": engine.state.times["EPOCH_COMPLETED"],
                "limit_seconds": None,
            })
            if tests_per_epoch:
                test()
            if limit and engine.state.epoch < engine.state.max_epochs:  # the last has no trainer epoch after it
                if "limit" not in found:
                    device = idist.device()
                    forward = training_forward(trains_in_bf16(found["cfg"], device), device.type)
                    found["limit"] = (*excluded(lambda: trainer_training.initialize(found["cfg"], len(found["train"]))), forward)
                clock["epochs"][-1]["limit_seconds"] = excluded(
                    lambda: bare_epoch(found["limit"], found["train"], engine.state.epoch)
                )

        return engine

    trainer_training.get_dataflow, trainer_training.create_trainer = dataflow, trainer_with_clock
    trainer_training.create_evaluator = evaluator
    TensorBoardViews.close = close_and_report


def measure(
    config: Path, overrides: list[str], workdir: Path, timeout: float, tests_per_epoch: int = 0, limit: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train in a child process, with its run directory under `workdir`; return its CLOCK.json and metrics.json."""
    clock = workdir / "clock.json"
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["-m", "benchmarks.timed_run", str(clock), str(tests_per_epoch), str(int(limit)), "--config", str(config),
            f"output.root={workdir}", "run.name=run", "data.download=false"]  # missing data: the trainer's sentence, at once
    run_python([*args, *overrides], timeout)
    return json.loads(clock.read_text()), json.loads((workdir / "run" / "metrics.json").read_text())


def main() -> int:
    if len(sys.argv) < 4 or not sys.argv[1].endswith(".json") or not sys.argv[2].isdigit() or sys.argv[3] not in ("0", "1"):
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    clock: dict[str, Any] = {"start": 0.0, "benchmark_seconds": 0.0, "tensorboard_seconds": None, "epochs": [], "tests": []}
    instrument(clock, int(sys.argv[2]), sys.argv[3] == "1")
    started = time.perf_counter()
    code = trainer_main.main(sys.argv[4:])
    if code:  # the trainer has said why on stderr, which the parent reports; there is no run to clock
        return code
    report = {
        "peak_rss_mb": peak_rss_mb(),
        "run_seconds": time.perf_counter() - started - clock["benchmark_seconds"],
        "benchmark_seconds": clock["benchmark_seconds"],
        "tensorboard_seconds": clock["tensorboard_seconds"],
        "tensorboard_import_seconds": clock["tensorboard_import_seconds"],
        "images_per_epoch": clock["images_per_epoch"],
        "epochs": clock["epochs"],
        "tests": clock["tests"],
    }
    Path(sys.argv[1]).write_text(json.dumps(report, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
