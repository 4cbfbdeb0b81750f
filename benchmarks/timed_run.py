"""`python -m benchmarks.timed_run CLOCK.json TESTS_PER_EPOCH [trainer arguments]`: the real trainer CLI, with a clock.

`trainer.main.main` runs unchanged, with everything it does; only two of its named steps are wrapped, to attach
a clock to the trainer engine, first in line at its events, and the TensorBoard views' closing is wrapped to read
their own account of the time they took. The clock reads seconds since `trainer.run` started
(as `metrics.json`'s `train_seconds`) at the end of every epoch's iterations and, when TESTS_PER_EPOCH > 0, that
many times an epoch evaluates the current model on the test set, leaving the tests' time out of the clock.
One process per run keeps measurements independent.

CLOCK.json: {"exit_code": int, "peak_rss_mb": float (VmHWM of this process),
             "run_seconds": float (trainer.main.main's wall time: data, training, final tests, end views, export;
                                   with the benchmark's tests left out),
             "test_seconds": float (all the benchmark's tests took: metrics.json's train_seconds includes them),
             "tensorboard_seconds": float | null (the TensorBoard views' time in this run; null with them off),
             "tensorboard_import_seconds": float (importing the views' modules, matplotlib among them: a run with
                                                  the views on pays it inside run_seconds; here it is paid before),
             "epochs": [{"epoch": int, "train_seconds": float (the clock at the end of the epoch's iterations),
                         "loop_seconds": float (Ignite's time of that epoch's iterations alone)}, ...],
             "tests": [{"epoch": float (epochs of training done), "train_seconds": float, "test_accuracy": float}, ...]}
"""

import json
import sys
import time
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events

import trainer.main as trainer_main
from benchmarks.common import peak_rss_mb, run_python


def instrument(clock: dict[str, Any], tests_per_epoch: int) -> None:
    """Wrap `get_dataflow` (to keep the test loader) and `create_trainer` (to attach the clock) in trainer.main,
    and `TensorBoardViews.close` (to read the views' time)."""
    started = time.perf_counter()
    from trainer.handlers.tensorboard import TensorBoardViews

    clock["tensorboard_import_seconds"] = time.perf_counter() - started
    get_dataflow, create_trainer, close_views = trainer_main.get_dataflow, trainer_main.create_trainer, TensorBoardViews.close
    loaders = {}

    def close_and_report(views: TensorBoardViews) -> None:
        close_views(views)
        clock["tensorboard_seconds"] = views.seconds

    def dataflow(cfg):
        flows = get_dataflow(cfg)
        loaders["test"] = flows[3]
        return flows

    def trainer_with_clock(model, optimizer, loss_fn, lr_scheduler, train_loader, *args) -> Engine:
        engine = create_trainer(model, optimizer, loss_fn, lr_scheduler, train_loader, *args)
        tester = trainer_main.create_evaluator(model, loss_fn, idist.device())

        def seconds(now: float) -> float:
            return now - clock["start"] - clock["test_seconds"]

        @engine.on(Events.STARTED)
        def start() -> None:
            clock["start"] = time.perf_counter()

        def test() -> None:
            now = time.perf_counter()
            tester.run(loaders["test"])
            state = engine.state
            clock["tests"].append({
                "epoch": state.iteration / state.epoch_length,
                "train_seconds": seconds(now),
                "test_accuracy": tester.state.metrics["accuracy"],
            })
            clock["test_seconds"] += time.perf_counter() - now

        @engine.on(Events.EPOCH_COMPLETED)
        def epoch_done() -> None:
            clock["epochs"].append({
                "epoch": engine.state.epoch,
                "train_seconds": seconds(time.perf_counter()),
                "loop_seconds": engine.state.times["EPOCH_COMPLETED"],
            })
            if tests_per_epoch:
                test()

        if tests_per_epoch > 1:
            every = -(-len(train_loader) // tests_per_epoch)  # the last of an epoch's tests is at its end

            def mid_epoch(engine: Engine, iteration: int) -> bool:
                within = (iteration - 1) % engine.state.epoch_length + 1
                return within % every == 0 and within != engine.state.epoch_length

            engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=mid_epoch), test)
        return engine

    trainer_main.get_dataflow, trainer_main.create_trainer = dataflow, trainer_with_clock
    TensorBoardViews.close = close_and_report


def measure(
    config: Path, overrides: list[str], workdir: Path, timeout: float, tests_per_epoch: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train in a child process, with its run directory under `workdir`; return its CLOCK.json and metrics.json."""
    clock = workdir / "clock.json"
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["-m", "benchmarks.timed_run", str(clock), str(tests_per_epoch), "--config", str(config),
            f"output.root={workdir}", "run.name=run"]
    run_python([*args, *overrides], timeout)
    return json.loads(clock.read_text()), json.loads((workdir / "run" / "metrics.json").read_text())


def main() -> int:
    if len(sys.argv) < 3 or not sys.argv[1].endswith(".json") or not sys.argv[2].isdigit():
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    clock: dict[str, Any] = {"start": 0.0, "test_seconds": 0.0, "tensorboard_seconds": None, "epochs": [], "tests": []}
    instrument(clock, int(sys.argv[2]))
    started = time.perf_counter()
    code = trainer_main.main(sys.argv[3:])
    report = {
        "exit_code": code,
        "peak_rss_mb": peak_rss_mb(),
        "run_seconds": time.perf_counter() - started - clock["test_seconds"],
        "test_seconds": clock["test_seconds"],
        "tensorboard_seconds": clock["tensorboard_seconds"],
        "tensorboard_import_seconds": clock["tensorboard_import_seconds"],
        "epochs": clock["epochs"],
        "tests": clock["tests"],
    }
    Path(sys.argv[1]).write_text(json.dumps(report, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
