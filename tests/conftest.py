"""Session fixtures: the real dataset, one real training run that many tests read, and the demo as a real server.

The tests talk only to 127.0.0.1: telemetry is off before anything imports gradio or huggingface_hub, here and in
every process the tests start (they inherit these settings), and this process is refused any other address.
"""

import ipaddress
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # gradio's; a Client heeds it only given analytics_enabled=False
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"  # huggingface_hub's send_telemetry, which both call, then does nothing

import pytest  # noqa: E402

from tests import servers  # noqa: E402
from tests.helpers import DATA_ROOT, run_trainer  # noqa: E402


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address
        return host == "localhost"


def loopback_only(connect):
    """`connect` (or `connect_ex`) refusing an internet socket any address but this machine's own."""

    def guarded(sock: socket.socket, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            raise ConnectionRefusedError(f"the tests talk only to 127.0.0.1, not to {address[0]}")
        return connect(sock, address)

    return guarded


@pytest.fixture(scope="session", autouse=True)
def no_traffic_off_this_machine() -> Iterator[None]:
    """In this process, whatever thread connects; the processes the tests start are covered by the settings above."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("connect", "connect_ex"):
            patch.setattr(socket.socket, name, loopback_only(getattr(socket.socket, name)))
        yield


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
