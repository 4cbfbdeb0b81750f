"""`python -m benchmarks.demo_latency [--quick] --out DIR [--checkpoint PATH]`: how fast the demo answers a photo.

- in_process: trainer.predict.Classifier.classify_file (decode, preprocess, forward) on photo-like JPEGs from
  benchmarks.photo_like, one image at a time on one torch thread, as the demo serves;
- http: gradio_client against a real `python demo/app.py` on a free 127.0.0.1 port, uploading the same photos
  to its /predict endpoint and downloading the answer, from 1 client and then from 16 clients at once. The
  clients are made with `ssl_verify=False`: the demo speaks plain HTTP, so there is no certificate to verify,
  and with the default gradio_client builds a new httpx client with a fresh TLS context, loading the system's
  CA certificates, for every file it uploads or downloads: about 30 ms each on this CPU, twice per photo.
  The demo keeps its last 16 uploads' predictions (`Classifier.read_file`), so a photo sent again, by the
  warm-up or by another client, is answered without classifying it again, as it would be for a user;
- http_default_client: 1 client with gradio_client's defaults, to show that cost.
The checkpoint defaults to the newest runs/*/model.pt; with --quick and none there, a quick model is trained first.

DIR/demo_latency.json:
  machine            dict: cpu, cores, torch_threads, cuda, cpu_bf16, python, torch (trainer.machine.machine)
  quick              bool
  checkpoint         str
  images             int: photo-like images (balanced over the 10 classes)
  in_process         {"requests": int, "median_ms": float, "p95_ms": float}
  in_process_explain {"requests": int, "median_ms": float, "p95_ms": float}: the /explain endpoint's work in-process
                     (trainer.explain.explain_file, the map drawn over the tile and over the photo), on the same photos
  http               {"1" | "16": {"clients": int, "requests": int, "errors": int, "median_ms": float,
                                   "p95_ms": float, "requests_per_s": float}}  (keyed by clients)
  http_default_client {"clients": 1, "requests": int, ...}: as http["1"], with gradio_client's default settings
  server_peak_rss_mb float: VmHWM of the demo server process
  targets_met        {"in_process_median": bool (<= 15 ms), "http_median_1_client": bool (<= 100 ms),
                      "explain_in_process_median": bool (<= 50 ms)}
DIR/demo_latency.png: median and p95 latency of each way of asking.
"""

import functools
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

# the benchmark talks to 127.0.0.1 only: a gradio_client Client reports to huggingface.co unless both its
# analytics_enabled (tests.servers.demo_client) and this variable say no, and huggingface_hub reads its own at import
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from benchmarks.common import (  # noqa: E402
    QUICK_CONFIG, ROOT, data_root, entry, new_figure, parse, parser, peak_rss_mb, report_results, run_python,
    save_figure, table, verdict,
)
from benchmarks.photo_like import build_benchmark  # noqa: E402
from tests.servers import demo_client, demo_server  # noqa: E402
from trainer.errors import UserError  # noqa: E402
from trainer.explain import explain_file  # noqa: E402
from trainer.export import load_model_file  # noqa: E402
from trainer.machine import machine  # noqa: E402
from trainer.predict import MODEL_ENV, Classifier, resolve_model_path  # noqa: E402

TARGET_IN_PROCESS_MS, TARGET_HTTP_MS, TARGET_EXPLAIN_MS = 15, 100, 50  # issue #14: 15 ms with the test-time views
SEEN_SIZE = 224  # pixels: demo/interface.py's enlarged tile
CONCURRENT_CLIENTS = 16
WARM_UP = 3  # requests before measuring: first calls pay for lazy imports and allocations


def latency(milliseconds: list[float]) -> dict[str, float]:
    return {"median_ms": float(np.median(milliseconds)), "p95_ms": float(np.percentile(milliseconds, 95))}


def in_process(checkpoint: Path, images: list[Path], explain: bool = False) -> dict[str, Any]:
    """Each photo classified (or, with `explain`, explained and its map drawn twice) in this process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as demo/app.py serves
    try:
        classifier = Classifier(checkpoint, remember=0)  # every request decoded and classified: none served from memory
        work = functools.partial(explained, classifier) if explain else classifier.classify_file
        for path in images[:WARM_UP]:
            work(path)
        times = []
        for path in images:
            start = time.perf_counter()
            work(path)
            times.append(1000 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(threads)
    return {"requests": len(times), **latency(times)}


def explained(classifier: Classifier, path: Path) -> None:
    """What the demo's /explain does before saving its two pictures."""
    explanation = explain_file(classifier, path)
    explanation.on_tile(SEEN_SIZE)  # as demo/interface.py draws it
    explanation.on_photo()


def over_http(
    url: str, images: list[Path], clients: int, per_client: int, downloads: Path, ssl_verify: bool = False
) -> dict[str, Any]:
    """Each of `clients` threads, with its own gradio_client.Client, sends `per_client` photos one after another."""
    with ExitStack() as closing:
        connections = [closing.enter_context(demo_client(url, download_files=str(downloads), ssl_verify=ssl_verify))
                       for _ in range(clients)]
        return timed_requests(connections, url, images, per_client)


def timed_requests(connections: list[Client], url: str, images: list[Path], per_client: int) -> dict[str, Any]:
    """Each client sends `per_client` photos one after another, all clients at once."""
    clients = len(connections)
    for path in images[:WARM_UP]:
        connections[0].predict(handle_file(str(path)), api_name="/predict")

    def client_work(k: int) -> list[float | None]:
        times = []
        for j in range(per_client):
            path = images[(k * per_client + j) % len(images)]
            start = time.perf_counter()
            try:
                connections[k].predict(handle_file(str(path)), api_name="/predict")
                times.append(1000 * (time.perf_counter() - start))
            except Exception:  # any failure of a request is an error to count, not a reason to stop
                times.append(None)
        return times

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = [t for result in pool.map(client_work, range(clients)) for t in result]
    wall = time.perf_counter() - start
    ok = [t for t in times if t is not None]
    if not ok:
        raise RuntimeError(f"all {len(times)} requests from {clients} client(s) to {url} failed")
    errors = len(times) - len(ok)
    return {"clients": clients, "requests": len(times), "errors": errors, **latency(ok), "requests_per_s": len(ok) / wall}


def find_checkpoint(checkpoint: str | None, quick: bool, tmp: Path) -> Path:
    """--checkpoint, else the newest runs/*/model.pt, else (with --quick only) a model trained now: never in place of a
    model named by --checkpoint or $FASHION_MNIST_MODEL, whose mistake is the user's to hear."""
    try:
        return resolve_model_path(checkpoint, ROOT / "runs")
    except UserError:
        if not quick or checkpoint or os.environ.get(MODEL_ENV):
            raise
    run_python(["-m", "trainer.main", "--config", str(QUICK_CONFIG), f"output.root={tmp}", "run.name=quick",
                "data.download=false"], timeout=600)  # missing data: the trainer's sentence, at once
    return tmp / "quick" / "model.pt"


def http_modes(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"HTTP, {k} client(s)", v) for k, v in report["http"].items()] + [
        ("HTTP, 1 client, gradio_client defaults", report["http_default_client"])
    ]


def plot(report: dict[str, Any], path: Path) -> None:
    fig, ax = new_figure(7, 3.8)
    modes = [("in-process", report["in_process"]), ("in-process explanation", report["in_process_explain"]), *http_modes(report)]
    y = np.arange(len(modes))
    ax.barh(y - 0.2, [m["median_ms"] for _, m in modes], height=0.4, label="median", color="#4c72b0")
    ax.barh(y + 0.2, [m["p95_ms"] for _, m in modes], height=0.4, label="95th percentile", color="#dd8452")
    ax.set_yticks(y, [name for name, _ in modes])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds per photo (log scale)")
    ax.set_title(f"Demo latency, {report['images']} photo-like images")
    ax.legend(loc="best")
    save_figure(fig, path)


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """The rows with targets, for the console and for benchmarks.all's summary."""
    local, met = report["in_process"], report["targets_met"]
    one, many = report["http"]["1"], report["http"][str(CONCURRENT_CLIENTS)]
    why = report["in_process_explain"]
    return [
        ["demo latency in-process, per photo", f"median {local['median_ms']:.1f} ms, p95 {local['p95_ms']:.1f} ms",
         f"median <= {TARGET_IN_PROCESS_MS} ms", verdict(met["in_process_median"])],
        ["demo explanation in-process, per photo", f"median {why['median_ms']:.1f} ms, p95 {why['p95_ms']:.1f} ms",
         f"median <= {TARGET_EXPLAIN_MS} ms", verdict(met["explain_in_process_median"])],
        ["demo latency over HTTP, 1 client", f"median {one['median_ms']:.0f} ms, p95 {one['p95_ms']:.0f} ms "
         f"(gradio_client defaults: median {report['http_default_client']['median_ms']:.0f} ms)",
         f"median <= {TARGET_HTTP_MS} ms", verdict(met["http_median_1_client"])],
        [f"demo over HTTP, {CONCURRENT_CLIENTS} clients at once",
         f"{many['requests_per_s']:.1f} photos/s, p95 {many['p95_ms']:.0f} ms, {many['errors']} errors", "-", verdict(None)],
        ["peak memory (RSS) of the demo server", f"{report['server_peak_rss_mb']:.0f} MiB", "-", verdict(None)],
    ]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--checkpoint", help="model.pt to serve (default: the newest runs/*/model.pt)")
    args = parse(p, argv)
    info = machine()
    n, per_client = (20, 2) if args.quick else (200, 25)
    with tempfile.TemporaryDirectory(prefix="demo_latency-") as tmp:
        tmp = Path(tmp)
        checkpoint = find_checkpoint(args.checkpoint, args.quick, tmp)
        load_model_file(checkpoint)  # a bad model file is said now, before the photos are built
        images = [path for path, _ in build_benchmark(data_root(), tmp / "photos", n, seed=0)]
        local = in_process(checkpoint, images)
        local_explain = in_process(checkpoint, images, explain=True)
        with demo_server(checkpoint, tmp / "demo.log") as (server, url):
            http = {str(c): over_http(url, images, c, len(images) if c == 1 else per_client, tmp / "downloads")
                    for c in (1, CONCURRENT_CLIENTS)}
            default_client = over_http(url, images, 1, len(images), tmp / "downloads", ssl_verify=True)
            server_rss = peak_rss_mb(server.pid)
    report = {
        "machine": info,
        "quick": args.quick,
        "checkpoint": str(checkpoint),
        "images": len(images),
        "in_process": local,
        "in_process_explain": local_explain,
        "http": http,
        "http_default_client": default_client,
        "server_peak_rss_mb": server_rss,
        "targets_met": {
            "in_process_median": local["median_ms"] <= TARGET_IN_PROCESS_MS,
            "explain_in_process_median": local_explain["median_ms"] <= TARGET_EXPLAIN_MS,
            "http_median_1_client": http["1"]["median_ms"] <= TARGET_HTTP_MS,
        },
    }
    plot(report, args.out / "demo_latency.png")
    details = table(
        ["asked", "requests", "errors", "median ms", "p95 ms", "photos/s"],
        [["in-process", local["requests"], 0, f"{local['median_ms']:.1f}", f"{local['p95_ms']:.1f}", "-"],
         ["in-process explanation", local_explain["requests"], 0, f"{local_explain['median_ms']:.1f}",
          f"{local_explain['p95_ms']:.1f}", "-"]]
        + [[name, h["requests"], h["errors"], f"{h['median_ms']:.1f}", f"{h['p95_ms']:.1f}", f"{h['requests_per_s']:.1f}"]
           for name, h in http_modes(report)],
    )
    report_results(args.out, "demo_latency", report, details, summary_rows(report))
    return 0


if __name__ == "__main__":
    entry(main)
