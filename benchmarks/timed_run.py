"""`python -m benchmarks.timed_run CLOCK.json [trainer arguments]`: the real trainer CLI, with a benchmark clock.

`trainer.main.main` runs unchanged, with everything it does; only two of its named steps are wrapped, to attach
one more handler to the trainer engine, first in line at EPOCH_COMPLETED: it reads a training clock (seconds
since `trainer.run` started, as `metrics.json`'s `train_seconds`), then evaluates the current model on the test
set and leaves that evaluation's time out of the clock. One process per run keeps measurements independent.

CLOCK.json: {"exit_code": int, "peak_rss_mb": float (VmHWM of this process),
             "test_seconds": float (all the test evaluations took: metrics.json's train_seconds includes them),
             "epochs": [{"epoch": int, "train_seconds": float (the clock at the end of the epoch's iterations),
                         "loop_seconds": float (Ignite's time of that epoch's iterations alone),
                         "test_accuracy": float}, ...]}
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


def instrument(epochs: list[dict[str, Any]], clock: dict[str, float]) -> None:
    """Wrap `get_dataflow` (to keep the test loader) and `create_trainer` (to attach the clock) in trainer.main."""
    get_dataflow, create_trainer = trainer_main.get_dataflow, trainer_main.create_trainer
    loaders = {}

    def dataflow(cfg):
        flows = get_dataflow(cfg)
        loaders["test"] = flows[3]
        return flows

    def trainer_with_clock(model, optimizer, loss_fn, *args, **kwargs) -> Engine:
        engine = create_trainer(model, optimizer, loss_fn, *args, **kwargs)
        tester = trainer_main.create_evaluator(model, loss_fn, idist.device())

        @engine.on(Events.STARTED)
        def start() -> None:
            clock.update(start=time.perf_counter(), test_seconds=0.0)

        @engine.on(Events.EPOCH_COMPLETED)
        def test() -> None:
            now = time.perf_counter()
            tester.run(loaders["test"])
            epochs.append({
                "epoch": engine.state.epoch,
                "train_seconds": now - clock["start"] - clock["test_seconds"],
                "loop_seconds": engine.state.times["EPOCH_COMPLETED"],
                "test_accuracy": tester.state.metrics["accuracy"],
            })
            clock["test_seconds"] += time.perf_counter() - now

        return engine

    trainer_main.get_dataflow, trainer_main.create_trainer = dataflow, trainer_with_clock


def measure(config: Path, overrides: list[str], workdir: Path, timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train in a child process, with its run directory under `workdir`; return its CLOCK.json and metrics.json."""
    clock = workdir / "clock.json"
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["-m", "benchmarks.timed_run", str(clock), "--config", str(config), f"output.root={workdir}", "run.name=run"]
    run_python([*args, *overrides], timeout)
    return json.loads(clock.read_text()), json.loads((workdir / "run" / "metrics.json").read_text())


def main() -> int:
    if len(sys.argv) < 2 or not sys.argv[1].endswith(".json"):
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    epochs: list[dict[str, Any]] = []
    clock = {"start": 0.0, "test_seconds": 0.0}
    instrument(epochs, clock)
    code = trainer_main.main(sys.argv[2:])
    report = {"exit_code": code, "peak_rss_mb": peak_rss_mb(), "test_seconds": clock["test_seconds"], "epochs": epochs}
    Path(sys.argv[1]).write_text(json.dumps(report, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
