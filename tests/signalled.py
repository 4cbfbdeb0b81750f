"""`python -m tests.signalled [overrides]`: the real trainer, each process sending itself a signal at an exact moment,
as a Ctrl-C or a kill would land there: `SIGNAL` (SIGINT, SIGKILL, ...) `SIGNAL_TIMES` times (default once), at the
end of iteration `SIGNAL_AT`, during the set-up with `SIGNAL_AT=setup`, as a checkpoint file begins to be written
with `SIGNAL_AT=saving:<its file name>`, or as the run's export begins, after the training, with `SIGNAL_AT=finish`.
`SLOW_SAVE_S` makes rank 0's last checkpoints take that many seconds longer to write, as a slow disk would."""

import os
import signal
import sys
import time

import ignite.distributed as idist

from ignite.engine import Engine, Events

import trainer.checkpoint
import trainer.main
import trainer.training

SIGNAL = signal.Signals[os.environ.get("SIGNAL", "SIGINT")]
TIMES = int(os.environ.get("SIGNAL_TIMES", "1"))
AT = os.environ["SIGNAL_AT"]


def send() -> None:
    for _ in range(TIMES):
        os.kill(os.getpid(), SIGNAL)


def run_process_signalled(local_rank, cfg) -> None:
    create_trainer, get_dataflow, finish_run = (
        trainer.training.create_trainer, trainer.training.get_dataflow, trainer.training.finish_run
    )

    def create_signalled_trainer(*args, **kwargs) -> Engine:
        engine = create_trainer(*args, **kwargs)
        # attached before the trainer's own stop check, which then sees the signal at once
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=int(AT)), send)
        return engine

    def get_dataflow_signalled(cfg):
        send()
        return get_dataflow(cfg)

    def finish_run_signalled(*args, **kwargs):
        send()
        return finish_run(*args, **kwargs)

    def save_signalled(saver, checkpoint, filename, metadata=None) -> None:
        if filename == AT.removeprefix("saving:"):
            send()
        save(saver, checkpoint, filename, metadata)

    plain_save = trainer.checkpoint.ReplacingDiskSaver.__call__

    def save_slowly(saver, checkpoint, filename, metadata=None) -> None:
        if idist.get_rank() == 0 and filename.startswith("last_"):
            time.sleep(float(os.environ["SLOW_SAVE_S"]))
        plain_save(saver, checkpoint, filename, metadata)

    if "SLOW_SAVE_S" in os.environ:
        trainer.checkpoint.ReplacingDiskSaver.__call__ = save_slowly
    if AT == "setup":
        trainer.training.get_dataflow = get_dataflow_signalled
    elif AT == "finish":
        trainer.training.finish_run = finish_run_signalled
    elif AT.startswith("saving:"):
        save = trainer.checkpoint.ReplacingDiskSaver.__call__
        trainer.checkpoint.ReplacingDiskSaver.__call__ = save_signalled
    else:
        trainer.training.create_trainer = create_signalled_trainer
    trainer.training.run_process(local_rank, cfg)


if __name__ == "__main__":
    sys.exit(trainer.main.main(process=run_process_signalled))
