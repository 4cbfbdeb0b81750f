"""Servers started as users start them, for the tests, the benchmarks and the screenshots alike.

A process from the project root, given back once its URL answers and stopped on leaving, whatever happened.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from gradio_client import Client

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except OSError:
        return False


@contextmanager
def serving(
    command: Sequence[str], url: str, log: Path, start_timeout: float = 120, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """A server started from the project root, once `url` answers; stopped on leaving, whatever happened.

    Its output goes to the file `log`, so that a chatty server can never block on a full pipe.
    """
    with log.open("w") as output:
        server = subprocess.Popen(
            list(command), cwd=ROOT, env={**os.environ, **(env or {})}, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + start_timeout
        while not answers(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nothing answered at {url} within {start_timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def demo_server(
    checkpoint: Path, log: Path, port: int | None = None, env: dict[str, str] | None = None, start_timeout: float = 120
) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python demo/app.py` as a user starts it, on its default host (127.0.0.1, which the tests check), on `port`
    (else a free one), once it answers."""
    port = port or free_port()
    command = [sys.executable, "demo/app.py", "--checkpoint", str(checkpoint), "--port", str(port)]
    url = f"http://127.0.0.1:{port}/"
    with serving(command, url, log, start_timeout, {"GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}) as server:
        yield server, url


def open_client(url: str, **options) -> Client:
    """A gradio_client Client of the demo at `url`, sending no telemetry: its default analytics_enabled=True would
    outweigh GRADIO_ANALYTICS_ENABLED=False."""
    return Client(url, verbose=False, analytics_enabled=False, **options)


@contextmanager
def demo_client(url: str, **options) -> Iterator[Client]:
    """`open_client(url)`, closed on leaving (a Client is no context manager itself)."""
    client = open_client(url, **options)
    try:
        yield client
    finally:
        client.close()


def call(client: Client, *inputs, api_name: str, timeout: float = 60) -> Any:
    """`client.predict(*inputs, api_name=...)`, which waits for ever on a stuck server, with a limit: it raises
    TimeoutError after `timeout` seconds, and what `predict` raises (AppError for the demo's refusals) otherwise."""
    return client.submit(*inputs, api_name=api_name).result(timeout=timeout)
