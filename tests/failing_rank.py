"""`python -m tests.failing_rank [overrides]`: the real trainer, with rank 1 raising after a few iterations."""

import sys

import ignite.distributed as idist
from ignite.engine import Events

import trainer.main
import trainer.training


def run_process_failing_on_rank_1(local_rank, cfg) -> None:
    create_trainer = trainer.training.create_trainer

    def create_failing_trainer(*args, **kwargs):
        engine = create_trainer(*args, **kwargs)
        if idist.get_rank() == 1:
            engine.add_event_handler(Events.ITERATION_COMPLETED(once=5), fail)
        return engine

    trainer.training.create_trainer = create_failing_trainer
    trainer.training.run_process(local_rank, cfg)


def fail() -> None:
    raise RuntimeError("injected failure in rank 1")


if __name__ == "__main__":
    sys.exit(trainer.main.main(process=run_process_failing_on_rank_1))
