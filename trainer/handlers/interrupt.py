"""Ctrl-C or SIGTERM stops training at the next iteration boundary, so the run can be checkpointed and resumed."""

import signal
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events


class GracefulStop:
    """The first signal asks the trainer to stop after its current iteration; a second one stops at once.

    An iteration that ends an epoch is followed by that epoch's own handlers (validation, best checkpoint, early
    stopping, pruning) before the stop: a run resumed from there takes the epoch as done, so they could not run later.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.at_epoch_end = False
        self.ended_run = False  # whether the stop cut the training short: else the run finished, and is exported

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._check)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._stop_after_epoch)

    def _check(self, engine: Engine) -> None:
        requested = self.signum is not None
        if idist.get_world_size() > 1:  # all ranks must stop at the same iteration, or DDP would wait forever
            signum = idist.all_reduce(torch.tensor(self.signum or 0), op="MAX").item()
            self.signum, requested = signum or None, signum > 0
        if requested and engine.state.iteration % engine.state.epoch_length == 0:
            self.at_epoch_end = True  # decided on every rank alike, from the reduced signal
        elif requested:  # a requested stop ends the run as finished, not as failed: no exception, no COMPLETED handlers
            self.ended_run = True
            engine.terminate(skip_completed=True)

    def _stop_after_epoch(self, engine: Engine) -> None:
        """Attached after the epoch's validation: where early stopping or pruning has already ended the run, or the
        epoch was the last, the training is over and the stop has nothing left to cut short."""
        if self.at_epoch_end and not engine.should_terminate and engine.state.epoch < engine.state.max_epochs:
            self.ended_run = True
            engine.terminate(skip_completed=True)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM, as shells report them."""
        return 128 + (self.signum or 0)
