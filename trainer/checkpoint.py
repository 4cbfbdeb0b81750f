"""Ignite checkpoints of the whole training state: the last one (to resume) and the best by validation accuracy."""

import shutil
from pathlib import Path
from typing import Any, Mapping

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, global_step_from_engine

from trainer.errors import UserError
from trainer.safe_io import atomic_replace, safe_torch_load

REQUIRED_KEYS = ("model", "optimizer", "lr_scheduler", "trainer")


class CheckpointError(UserError):
    pass


class RandomState:
    """Torch's random state, which a checkpoint holds so that a run resumed in mid-epoch draws the rest of that
    epoch's dropout masks as the uninterrupted run did: each epoch starts from a seed of its own (`create_trainer`),
    but one resumed halfway would otherwise draw its first half's masks again. (The loader seeds each batch's
    augmentation itself.) A checkpoint without it (an older one) resumes as before, from the epoch's seed."""

    def __init__(self) -> None:
        self.resumed: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Checked here, where `restore` names a mismatch, not at the epoch's start, once the run has begun."""
        if not isinstance(state, dict) or not isinstance(state.get("cpu"), torch.Tensor):
            raise ValueError("its random state is not torch's")
        torch.Generator().set_state(state["cpu"])  # raises for a tensor that is not a generator's state
        self.resumed = state

    def attach(self, trainer: Engine) -> None:
        """After the handler that seeds each epoch, so that the resumed state replaces the seed, in mid-epoch only."""

        @trainer.on(Events.EPOCH_STARTED)
        def continue_draws(engine: Engine) -> None:
            if self.resumed is not None and engine.state.iteration % engine.state.epoch_length:
                torch.set_rng_state(self.resumed["cpu"])
                if "cuda" in self.resumed and torch.cuda.is_initialized():
                    torch.cuda.set_rng_state(self.resumed["cuda"])
            self.resumed = None


class ReplacingDiskSaver(DiskSaver):
    """Ignite's `Checkpoint` removes the old file before it writes the new one: a failed write (a full disk)
    would leave no checkpoint at all. This saver removes the old file only once the new one is on disk.

    A saver given `hand_over_to` leaves its replaced files for that one to remove after its own next write: the
    best checkpoint's saver hands them to the last checkpoint's, since the last checkpoint on disk names the best
    file until the next one is written, and a resume from it needs that file (a kill in between lost it)."""

    def __init__(self, dirname: Path, hand_over_to: "ReplacingDiskSaver | None" = None) -> None:
        super().__init__(str(dirname), require_empty=False, atomic=True)
        self._replaced: list[str] = []
        self._hand_over_to = hand_over_to

    def remove(self, filename: str) -> None:
        self._replaced.append(filename)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, filename, metadata)
        for old in self._replaced:
            if old == filename:
                continue
            if self._hand_over_to is not None:
                self._hand_over_to._replaced.append(old)
            else:
                super().remove(old)
        self._replaced.clear()


def create_checkpoints(folder: Path, to_save: Mapping[str, Any], trainer: Engine) -> tuple[Checkpoint, Checkpoint]:
    """Return (best, last). `last` also stores `best`'s own state, so a resumed run keeps one best file."""
    last_saver = ReplacingDiskSaver(folder)
    best = Checkpoint(
        dict(to_save),
        ReplacingDiskSaver(folder, hand_over_to=last_saver),
        filename_prefix="best",
        n_saved=1,
        score_function=Checkpoint.get_default_score_fn("accuracy"),
        score_name="val_accuracy",
        global_step_transform=global_step_from_engine(trainer),
    )
    last = Checkpoint(
        {**to_save, "best_checkpoint": best},
        last_saver,
        filename_prefix="last",
        n_saved=1,
        global_step_transform=lambda engine, _: engine.state.iteration,
    )
    return best, last


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a `last_*.pt`/`best_*.pt` of this project safely, refusing anything else with a reason."""
    checkpoint = safe_torch_load(Path(path), "checkpoint")
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a training checkpoint of this project (it needs {', '.join(REQUIRED_KEYS)})")
    return checkpoint


def restore(checkpoint: dict[str, Any], to_load: Mapping[str, Any], path: str | Path) -> None:
    """Load every object the checkpoint holds into `to_load`, naming any shape or key mismatch."""
    wanted = {k: v for k, v in to_load.items() if k in checkpoint}
    try:
        Checkpoint.load_objects(to_load=wanted, checkpoint=checkpoint)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        reason = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise CheckpointError(f"checkpoint {path} does not fit this run's model or optimizer: {reason}") from None


def run_dir_of(checkpoint_path: str | Path) -> Path | None:
    """The run directory a checkpoint was written into (`<run>/checkpoints/<file>`), if it sits in one."""
    parent = Path(checkpoint_path).resolve().parent
    return parent.parent if parent.name == "checkpoints" else None


def continues_in(checkpoint_path: str | Path | None, run_dir: Path) -> bool:
    """Whether resuming `checkpoint_path` continues the run of `run_dir`, rather than starting a new one from it."""
    return checkpoint_path is not None and run_dir_of(checkpoint_path) == Path(run_dir).resolve()


def adopt_resumed_files(resumed: str | Path, folder: Path, best: Checkpoint, last: Checkpoint, iteration: int) -> None:
    """Make the restored checkpoint state name files of this run's `folder` only, since Ignite replaces them by name.

    The best checkpoint that `best`'s restored state names is copied in from beside `resumed` when the run
    continues under a new name, so the first run's files are never touched. Resumed in place, the last
    checkpoint becomes `last`'s to replace, so the run keeps one last checkpoint however often it resumes.
    """
    resumed, folder = Path(resumed).resolve(), Path(folder).resolve()
    for _, filename in best.state_dict()["_saved"]:
        if Path(filename).name != filename or not filename.startswith("best_checkpoint_"):  # Ignite would delete it later
            raise CheckpointError(f"checkpoint {resumed} names a best checkpoint outside its folder ({filename!r}): "
                                  "it is not a checkpoint of this project")
        source, target = resumed.parent / filename, folder / filename
        if idist.get_rank() != 0 or target.is_file():  # rank 0 alone writes checkpoints
            continue
        if not source.is_file():
            raise CheckpointError(
                f"checkpoint {resumed} names its run's best checkpoint {filename}, which is missing from {resumed.parent}: "
                "put that file back beside it, or start a new run"
            )
        atomic_replace(target, lambda tmp: shutil.copyfile(source, tmp))
    if resumed.parent == folder and resumed.name == f"last_checkpoint_{iteration}.pt":
        last.load_state_dict({"_saved": [(iteration, resumed.name)]})
