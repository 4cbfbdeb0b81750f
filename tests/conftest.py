"""Session fixtures: the real dataset, one real training run that many tests read, and the demo as a real server."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import servers
from tests.helpers import DATA_ROOT, run_trainer


@pytest.fixture(scope="session")
def data_root() -> Path:
    raw = DATA_ROOT / "FashionMNIST" / "raw"
    assert raw.is_dir(), f"the real Fashion-MNIST is needed at {raw}: set FASHION_MNIST_ROOT"
    return DATA_ROOT


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, data_root) -> Path:
    """One real two-epoch run of the quick config, with every TensorBoard view on, measured on the real photos."""
    out = tmp_path_factory.mktemp("runs")
    result = run_trainer(f"output.root={out}", "run.name=quick", "data.measure_photos=true")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = out / "quick"
    assert (run_dir / "metrics.json").is_file(), result.stderr[-3000:]
    return run_dir


@dataclass
class DemoServer:
    url: str
    port: int
    process: subprocess.Popen
    log: Path  # its stdout and stderr: a file, so that a chatty server can never block on a full pipe
    temp_dir: Path  # GRADIO_TEMP_DIR: where its uploads and results go

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_demo(checkpoint: Path, temp_dir: Path) -> Iterator[DemoServer]:
    """`python demo/app.py --checkpoint CHECKPOINT --port FREE` as a user starts it, stopped on exit whatever happened."""
    port = servers.free_port()
    temp_dir.mkdir(parents=True, exist_ok=True)
    log = temp_dir.parent / f"demo-{port}.log"
    with servers.demo_server(checkpoint, log, port, {"GRADIO_TEMP_DIR": str(temp_dir)}, start_timeout=90) as (process, url):
        yield DemoServer(url.rstrip("/"), port, process, log, temp_dir)


@pytest.fixture(scope="session")
def start_demo():
    """`with start_demo(checkpoint, temp_dir) as demo:` a server of one's own, for a test that stops it."""
    return running_demo


@pytest.fixture(scope="module")
def demo_server(trained_run, tmp_path_factory) -> Iterator[DemoServer]:
    """The demo serving the quick run's model.pt, shared by a module's tests."""
    with running_demo(trained_run / "model.pt", tmp_path_factory.mktemp("demo") / "gradio") as demo:
        yield demo


@pytest.fixture(scope="module")
def demo_url(demo_server) -> str:
    return demo_server.url
