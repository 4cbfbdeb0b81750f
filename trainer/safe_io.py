"""File writes that never leave a half-written file in place, and reads that never run pickled code."""

import fcntl
import json
import os
import pickle
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from trainer.errors import UserError


class FileRefused(UserError):
    """A file that is missing, corrupt, truncated or carries more than plain tensors and data."""


def atomic_replace(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through `write(tmp_path)` to a temporary sibling, fsync it, then rename over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: no half-written sibling is left behind
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Through a Python file object, whose full disk is an OSError: torch's zip writer reports it as a RuntimeError
    (with the OSError as its context), which the commands' one-line error for an unwritable disk would miss."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as exc:
                if isinstance(exc.__context__, OSError):
                    raise exc.__context__ from None
                raise

    atomic_replace(path, write)


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_replace(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def safe_torch_load(path: Path, what: str) -> Any:
    """`torch.load` with `weights_only=True`: objects whose unpickling could run code are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileRefused(f"{what} {path} does not exist")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        after = str(exc).split("WeightsUnpickler error:", 1)[-1]
        reason = next((line.strip() for line in after.splitlines() if line.strip()), "").split(". ")[0]
        if reason.startswith("Unsupported operand"):  # bytes no pickle starts with: a text file, an image
            raise FileRefused(f"{what} {path} is corrupt, truncated or not a PyTorch file") from None
        raise FileRefused(f"{what} {path} was refused: it holds objects other than plain tensors and data ({reason})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as exc:
        raise FileRefused(f"{what} {path} is corrupt, truncated or not a PyTorch file ({type(exc).__name__})") from None


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """One process at a time on this machine, for work that two processes would interleave or race in."""
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
