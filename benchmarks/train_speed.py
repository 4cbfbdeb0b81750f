"""`python -m benchmarks.train_speed [--quick] --out DIR [--epochs N]`: the trainer's training throughput against the limit.

Three measurements of the default config (configs/default.yaml, only train.max_epochs set to N), each the median
over the epochs after a warm-up epoch:
- tensorboard_on: the real trainer CLI in its own process (benchmarks.timed_run);
- tensorboard_off: the same with tensorboard.enabled=false;
- limit: what the hardware allows: the trainer's own loader (with hflip), model (channels_last), optimizer and LR
  schedule, built by trainer.main's named steps, in a bare PyTorch loop: no Ignite engine, no validation, no logging.
A trainer epoch is timed from the end of one epoch's iterations to the next, so it pays for the trainer's
validation, checkpoints and TensorBoard writes; loop_images_per_s counts Ignite's iteration loop alone.

DIR/train_speed.json:
  machine           dict: cpu, cores, torch_threads, cuda, python, torch (benchmarks.common.machine)
  quick             bool
  epochs            int: epochs per run, the first a warm-up
  batch_size        int
  images_per_epoch  int
  runs              {"tensorboard_on" | "tensorboard_off" | "limit": {
                       "images_per_s": float, "loop_images_per_s": float,
                       "epoch_seconds": [float] (the measured epochs),
                       "peak_rss_mb": float | null (null for the limit, which runs inside this process)}}
  trainer_vs_limit        float: images_per_s of tensorboard_on over the limit's (target >= 0.90)
  tensorboard_time_ratio  float: median epoch time, tensorboard_on over tensorboard_off (target <= 1.05)
  targets_met       {"trainer_vs_limit": bool, "tensorboard_time_ratio": bool}
DIR/train_speed.png: images/s of each measurement against the limit.
"""

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch

from benchmarks.common import entry, fmt, machine, new_figure, parser, report_results, save_figure, table, verdict
from benchmarks.timed_run import measure
from trainer.config import DEFAULT_CONFIG, load_config
from trainer.main import get_dataflow, initialize

TARGET_VS_LIMIT, TARGET_TB_RATIO = 0.90, 1.05
LABELS = {
    "tensorboard_on": "trainer, TensorBoard on",
    "tensorboard_off": "trainer, TensorBoard off",
    "limit": "limit (plain loop)",
}


def limit_epoch_seconds(epochs: int) -> tuple[list[float], int]:
    """Seconds of each epoch of the bare loop, and the images in an epoch."""
    cfg = load_config(DEFAULT_CONFIG, [f"train.max_epochs={epochs}"])
    torch.manual_seed(cfg.seed)
    _, loader, _, _ = get_dataflow(cfg)
    model, optimizer, loss_fn, lr_scheduler = initialize(cfg, len(loader))
    device = idist.device()
    model.train()
    seconds = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loader.set_epoch(epoch)
        for images, labels in loader:
            lr_scheduler(None)  # the trainer's schedule object, stepped by hand: the same learning rate at each step
            optimizer.zero_grad()
            loss_fn(model(images.to(device)), labels.to(device)).backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds, len(loader) * loader.batch_size


def throughput(epoch_seconds: list[float], loop_seconds: list[float], images: int, rss: float | None) -> dict[str, Any]:
    return {
        "images_per_s": images / statistics.median(epoch_seconds),
        "loop_images_per_s": images / statistics.median(loop_seconds),
        "epoch_seconds": epoch_seconds,
        "peak_rss_mb": rss,
    }


def trainer_throughput(overrides: list[str], epochs: int, images: int, workdir: Path, timeout: float) -> dict[str, Any]:
    clock, _ = measure(DEFAULT_CONFIG, [f"train.max_epochs={epochs}", *overrides], workdir, timeout)
    ends = [e["train_seconds"] for e in clock["epochs"]]
    loops = [e["loop_seconds"] for e in clock["epochs"][1:]]
    return throughput(np.diff(ends).tolist(), loops, images, clock["peak_rss_mb"])


def plot(report: dict[str, Any], path: Path) -> None:
    fig, ax = new_figure(7, 3.2)
    names = list(report["runs"])[::-1]
    values = [report["runs"][n]["images_per_s"] for n in names]
    limit = report["runs"]["limit"]["images_per_s"]
    ax.barh([LABELS[n] for n in names], values, color=["#999999", "#4c72b0", "#dd8452"])
    ax.axvline(TARGET_VS_LIMIT * limit, color="black", linestyle="--", linewidth=1)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,.0f} ({v / limit:.0%})", va="center")
    ax.set_xlim(0, 1.3 * max(values))
    ax.set_xlabel("training images per second (median epoch, after a warm-up epoch)")
    ax.set_title(f"Training throughput, LeNet-5, batch {report['batch_size']}\n(dashed: the target, {TARGET_VS_LIMIT:.0%} of the limit)")
    save_figure(fig, path)


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """The rows with targets, for the console and for benchmarks.all's summary."""
    on, limit = report["runs"]["tensorboard_on"], report["runs"]["limit"]
    met = report["targets_met"]
    return [
        ["training throughput, trainer with TensorBoard",
         f"{on['images_per_s']:,.0f} images/s = {report['trainer_vs_limit']:.2f} x the limit ({limit['images_per_s']:,.0f})",
         f">= {TARGET_VS_LIMIT:.2f} x the limit", verdict(met["trainer_vs_limit"])],
        ["epoch time, TensorBoard on / off", f"{report['tensorboard_time_ratio']:.3f}", f"<= {TARGET_TB_RATIO}",
         verdict(met["tensorboard_time_ratio"])],
        ["peak memory (RSS) of a training run", f"{on['peak_rss_mb']:.0f} MiB", "-", verdict(None)],
    ]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, help="epochs per run, the first a warm-up (default 6; with --quick 2)")
    args = p.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 6)
    if epochs < 2:
        p.error("--epochs must be at least 2: one warm-up epoch and one measured")
    timeout = 600 if args.quick else 3600
    limit_seconds, images = limit_epoch_seconds(epochs)
    with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
        runs = {
            "tensorboard_on": trainer_throughput([], epochs, images, Path(tmp, "on"), timeout),
            "tensorboard_off": trainer_throughput(["tensorboard.enabled=false"], epochs, images, Path(tmp, "off"), timeout),
            "limit": throughput(limit_seconds[1:], limit_seconds[1:], images, None),
        }
    on, off, limit = (statistics.median(runs[n]["epoch_seconds"]) for n in ("tensorboard_on", "tensorboard_off", "limit"))
    report = {
        "machine": machine(),
        "quick": args.quick,
        "epochs": epochs,
        "batch_size": load_config(DEFAULT_CONFIG).train.batch_size,
        "images_per_epoch": images,
        "runs": runs,
        "trainer_vs_limit": limit / on,
        "tensorboard_time_ratio": on / off,
    }
    report["targets_met"] = {
        "trainer_vs_limit": report["trainer_vs_limit"] >= TARGET_VS_LIMIT,
        "tensorboard_time_ratio": report["tensorboard_time_ratio"] <= TARGET_TB_RATIO,
    }
    plot(report, args.out / "train_speed.png")
    details = table(
        ["run", "images/s", "loop images/s", "median epoch s", "peak RSS MiB"],
        [[LABELS[n], f"{r['images_per_s']:,.0f}", f"{r['loop_images_per_s']:,.0f}",
          f"{statistics.median(r['epoch_seconds']):.2f}", fmt(r["peak_rss_mb"], ".0f")] for n, r in runs.items()],
    )
    report_results(args.out, "train_speed", report, details, summary_rows(report))
    return 0


if __name__ == "__main__":
    entry(main)
