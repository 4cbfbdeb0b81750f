"""Ignite checkpoints of the whole training state: the last one (to resume) and the best by validation accuracy."""

from pathlib import Path
from typing import Any, Mapping

from ignite.engine import Engine
from ignite.handlers import Checkpoint, DiskSaver, global_step_from_engine

from trainer.errors import UserError
from trainer.safe_io import safe_torch_load

REQUIRED_KEYS = ("model", "optimizer", "lr_scheduler", "trainer")


class CheckpointError(UserError):
    pass


class ReplacingDiskSaver(DiskSaver):
    """Ignite's `Checkpoint` removes the old file before it writes the new one: a failed write (a full disk)
    would leave no checkpoint at all. This saver removes the old file only once the new one is on disk."""

    def __init__(self, dirname: Path) -> None:
        super().__init__(str(dirname), require_empty=False, atomic=True)
        self._replaced: list[str] = []

    def remove(self, filename: str) -> None:
        self._replaced.append(filename)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, filename, metadata)
        for old in self._replaced:
            if old != filename:
                super().remove(old)
        self._replaced.clear()


def create_checkpoints(folder: Path, to_save: Mapping[str, Any], trainer: Engine) -> tuple[Checkpoint, Checkpoint]:
    """Return (best, last). `last` also stores `best`'s own state, so a resumed run keeps one best file."""
    best = Checkpoint(
        dict(to_save),
        ReplacingDiskSaver(folder),
        filename_prefix="best",
        n_saved=1,
        score_function=Checkpoint.get_default_score_fn("accuracy"),
        score_name="val_accuracy",
        global_step_transform=global_step_from_engine(trainer),
    )
    last = Checkpoint(
        {**to_save, "best_checkpoint": best},
        ReplacingDiskSaver(folder),
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
