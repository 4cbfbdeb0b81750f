"""Helpers the tests share: where things are, and how to run the real command."""

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from trainer.data import CLASS_NAMES

ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("FASHION_MNIST_ROOT", ROOT.parent / "shared" / "data")).resolve()

CHROMIUM = "/usr/bin/chromium"


# torchvision downloads through urllib, which takes its proxy from the environment: one on loopback that refuses every
# connection stands in for a machine without network, here and on a machine with it, and nothing leaves the machine.
NO_NETWORK = {key: "http://127.0.0.1:9" for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")} | {
    "no_proxy": "", "NO_PROXY": ""}


def run_trainer(
    *overrides: str, config: str = "configs/quick.yaml", timeout: float = 600, env: dict | None = None, cwd: Path = ROOT,
    module: str = "trainer.main",
):
    """`python -m trainer.main` as a user runs it, from the project root unless `cwd` says otherwise; `module` names a
    test's wrapper of it instead (`tests.failing_rank`, `tests.distributed_teardown`, `tests.signalled`)."""
    command = [sys.executable, "-m", module, "--config", config, *overrides]
    full_env = {**os.environ, "FASHION_MNIST_ROOT": str(DATA_ROOT), **(env or {})}
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@contextmanager
def killed_on_leaving(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """`process`, killed (unless it has ended) and reaped on leaving: a failing or timed-out test leaves no child."""
    with process:
        try:
            yield process
        finally:
            process.kill()


def read_pipe_until(pipe: IO, text: str, timeout: float) -> str:
    """What `pipe` gave until `text` appeared, it closed or `timeout` seconds passed: a bounded wait, which
    `readline()` is not when the other end writes nothing."""
    seen, wanted, deadline = b"", text.encode(), time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        while wanted not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                break
            chunk = os.read(pipe.fileno(), 65536)  # the descriptor: the file object's buffer would hide lines from select
            if not chunk:  # closed: the process has ended
                break
            seen += chunk
    return seen.decode(errors="replace")


def ctrl_c_after(process: subprocess.Popen, text: str, timeout: float = 300) -> tuple[str, str]:
    """Ctrl-C for `process` once its stderr shows `text`, as a user presses it: (its stderr until then, the rest of
    it). The process is killed on the way out if it has not ended, whatever happened."""
    with killed_on_leaving(process):
        seen = read_pipe_until(process.stderr, text, timeout)
        assert text in seen, seen[-3000:]
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=120)
    return seen, rest


def write_idx(folder: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """A tiny hermetic Fashion-MNIST in torchvision's raw layout: class k is a bright bar at row 2k."""
    rng = np.random.default_rng(seed)
    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label + 4 : 2 * label + 7, 4:24] = 255
        (raw / f"{split}-images-idx3-ubyte").write_bytes(
            (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + images.tobytes()
        )
        (raw / f"{split}-labels-idx1-ubyte").write_bytes((0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.tobytes())
    return folder


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def accumulate(folder: Path) -> EventAccumulator:
    """TensorBoard's own reader of a run's events, keeping every scalar, image and tensor."""
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def pr_curve_counts(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Each class's PR curve at its lowest threshold: (positives, all images), from TensorBoard's own reader."""
    events = accumulate(run_dir)
    counts = {}
    for name in CLASS_NAMES:
        tp, fp, tn, fn = tensor_util.make_ndarray(events.Tensors(f"pr_curve/{name}")[-1].tensor_proto)[:4, 0]
        counts[name] = (int(tp + fn), int(tp + fp + tn + fn))
    return counts


def require_chromium(path: str = CHROMIUM) -> None:
    """Skip where Debian's Chromium is missing, except in CI (CI=true), whose `.ci/run` installs it: there it must run."""
    if Path(path).exists():
        return
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI=true, yet there is no Chromium at {path}: apt-get install -y chromium")
    pytest.skip(f"no Chromium at {path} (apt-get install -y chromium); CI installs it and runs this test")
