"""`python -m tests.signalled [overrides]`: the real trainer, each process sending itself a signal at an exact moment,
as a Ctrl-C or a kill would land there: `SIGNAL` (SIGINT, SIGKILL, ...) `SIGNAL_TIMES` times (default once), at the
end of iteration `SIGNAL_AT`, or during the set-up with `SIGNAL_AT=setup`."""

import os
import signal
import sys

from ignite.engine import Engine, Events

import trainer.main
import trainer.training

SIGNAL = signal.Signals[os.environ.get("SIGNAL", "SIGINT")]
TIMES = int(os.environ.get("SIGNAL_TIMES", "1"))
AT = os.environ["SIGNAL_AT"]


def send() -> None:
    for _ in range(TIMES):
        os.kill(os.getpid(), SIGNAL)


def run_process_signalled(local_rank, cfg) -> None:
    create_trainer, get_dataflow = trainer.training.create_trainer, trainer.training.get_dataflow

    def create_signalled_trainer(*args, **kwargs) -> Engine:
        engine = create_trainer(*args, **kwargs)
        if AT != "setup":  # attached before the trainer's own stop check, which then sees the signal at once
            engine.add_event_handler(Events.ITERATION_COMPLETED(once=int(AT)), send)
        return engine

    def get_dataflow_signalled(cfg):
        send()
        return get_dataflow(cfg)

    trainer.training.create_trainer = create_signalled_trainer
    if AT == "setup":
        trainer.training.get_dataflow = get_dataflow_signalled
    trainer.training.run_process(local_rank, cfg)


if __name__ == "__main__":
    sys.exit(trainer.main.main(process=run_process_signalled))
