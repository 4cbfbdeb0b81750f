"""`python -m benchmarks.train_speed [--quick] --out DIR [--epochs N] [--repeats R]`: training speed against the limit.

Three measurements of the default config (configs/default.yaml, only train.max_epochs set to N), each the median
over the epochs after a warm-up epoch, taken R times in alternating order (limit, on, off, then limit, off, on, ...)
so that a machine that speeds up or slows down during the benchmark favours none of them:
- tensorboard_on: the real trainer CLI in its own process (benchmarks.timed_run), all default views on;
- tensorboard_off: the same with tensorboard.enabled=false;
- limit: what the hardware allows: the trainer's own loader (with hflip), model (channels_last), optimizer and LR
  schedule, built by trainer.main's named steps, in a bare PyTorch loop: no Ignite engine, no validation, no
  logging; 4 epochs per repeat.
A trainer epoch is timed from the end of one epoch's iterations to the next, so it pays for the trainer's
validation, checkpoints and TensorBoard writes; loop_images_per_s counts Ignite's iteration loop alone. A whole
run (run_seconds) adds loading the data, the start and end views, the final tests and the export.
This shared machine's speed drifts by 10-40% over minutes, more than the 5% TensorBoard may cost: comparing
separate runs (tensorboard_run_ratio) cannot resolve it, so the views also time themselves inside each run.

DIR/train_speed.json:
  machine           dict: cpu, cores, torch_threads, cuda, python, torch (benchmarks.common.machine)
  quick             bool
  epochs            int: epochs per trainer run, the first a warm-up
  repeats           int
  batch_size        int
  images_per_epoch  int
  runs              {"tensorboard_on" | "tensorboard_off" | "limit": {
                       "images_per_s": float, "loop_images_per_s": float,
                       "epoch_seconds": [float] (the measured epochs of all repeats),
                       "run_seconds": [float] | null (each whole run; null for the limit),
                       "tensorboard_seconds": [float] | null (the views' own account of their time in each run,
                                                              with importing their modules; null without them),
                       "peak_rss_mb": float | null (null for the limit, which runs inside this process)}}
  trainer_vs_limit        float: images_per_s of tensorboard_on over the limit's (target >= 0.90)
  tensorboard_time_ratio  float: median epoch time, tensorboard_on over tensorboard_off
  tensorboard_run_ratio   float: median whole-run time, tensorboard_on over tensorboard_off
  tensorboard_in_run_ratio float: median over the tensorboard_on runs of run_seconds / (run_seconds -
                          tensorboard_seconds): the same run against itself without the views' work, which
                          the machine's drift between runs cannot blur (target <= 1.05); run_seconds here
                          includes importing the views' modules, as a plain `python -m trainer.main` does
  targets_met       {"trainer_vs_limit": bool, "tensorboard_in_run_ratio": bool}
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
LIMIT_EPOCHS = 4  # per repeat, the first a warm-up
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


def throughput(
    epoch_seconds: list[float], loop_seconds: list[float], images: int, runs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "images_per_s": images / statistics.median(epoch_seconds),
        "loop_images_per_s": images / statistics.median(loop_seconds),
        "epoch_seconds": epoch_seconds,
        "run_seconds": [run["run_seconds"] for run in runs] if runs else None,
        "tensorboard_seconds": [run["tensorboard_seconds"] for run in runs] if runs and runs[0]["tensorboard_seconds"] is not None else None,
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs) if runs else None,
    }


def trainer_run(overrides: list[str], epochs: int, workdir: Path, timeout: float) -> dict[str, Any]:
    """One run's measured epochs (after the warm-up), Ignite loop times, whole-run seconds and peak memory."""
    clock, _ = measure(DEFAULT_CONFIG, [f"train.max_epochs={epochs}", *overrides], workdir, timeout)
    on, imported = clock["tensorboard_seconds"] is not None, clock["tensorboard_import_seconds"]
    ends = [e["train_seconds"] for e in clock["epochs"]]
    return {
        "epoch_seconds": np.diff(ends).tolist(),
        "loop_seconds": [e["loop_seconds"] for e in clock["epochs"][1:]],
        # `python -m trainer.main` imports the views' modules inside the run; timed_run imported them before it
        "run_seconds": clock["run_seconds"] + (imported if on else 0.0),
        "tensorboard_seconds": clock["tensorboard_seconds"] + imported if on else None,
        "peak_rss_mb": clock["peak_rss_mb"],
    }


def measure_all(epochs: int, repeats: int, workdir: Path, timeout: float) -> tuple[dict[str, dict[str, Any]], int]:
    """The limit, then the trainer with and without TensorBoard, in alternating order, `repeats` times."""
    settings = {"tensorboard_on": [], "tensorboard_off": ["tensorboard.enabled=false"]}
    trainer = {name: [] for name in settings}
    limit: list[float] = []
    for r in range(repeats):
        seconds, images = limit_epoch_seconds(min(epochs, LIMIT_EPOCHS))
        limit += seconds[1:]
        for name in list(settings)[:: 1 if r % 2 == 0 else -1]:
            trainer[name].append(trainer_run(settings[name], epochs, workdir / f"{name}-{r}", timeout))
    runs = {
        name: throughput(
            [s for run in done for s in run["epoch_seconds"]], [s for run in done for s in run["loop_seconds"]], images, done
        )
        for name, done in trainer.items()
    }
    runs["limit"] = throughput(limit, limit, images)
    return runs, images


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
        [f"whole {report['epochs']}-epoch run, TensorBoard on / off",
         f"{report['tensorboard_in_run_ratio']:.3f} within each run; between runs {report['tensorboard_run_ratio']:.3f} "
         f"(per epoch {report['tensorboard_time_ratio']:.3f})", f"<= {TARGET_TB_RATIO}", verdict(met["tensorboard_in_run_ratio"])],
        ["peak memory (RSS) of a training run", f"{on['peak_rss_mb']:.0f} MiB", "-", verdict(None)],
    ]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    default = load_config(DEFAULT_CONFIG).train
    p.add_argument("--epochs", type=int, help=f"epochs per trainer run, the first a warm-up (default {default.max_epochs}, "
                   "a whole default run; with --quick 2)")
    p.add_argument("--repeats", type=int, help="measurements of each kind, in alternating order (default 3; --quick 1)")
    args = p.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else default.max_epochs)
    repeats = args.repeats or (1 if args.quick else 3)
    if epochs < 2 or repeats < 1:
        p.error("--epochs must be at least 2 (one warm-up epoch and one measured) and --repeats at least 1")
    timeout = 600 if args.quick else 3600
    with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
        runs, images = measure_all(epochs, repeats, Path(tmp), timeout)
    on, off, limit = (statistics.median(runs[n]["epoch_seconds"]) for n in ("tensorboard_on", "tensorboard_off", "limit"))
    run_on, run_off = (statistics.median(runs[n]["run_seconds"]) for n in ("tensorboard_on", "tensorboard_off"))
    report = {
        "machine": machine(),
        "quick": args.quick,
        "epochs": epochs,
        "repeats": repeats,
        "batch_size": default.batch_size,
        "images_per_epoch": images,
        "runs": runs,
        "trainer_vs_limit": limit / on,
        "tensorboard_time_ratio": on / off,
        "tensorboard_run_ratio": run_on / run_off,
        "tensorboard_in_run_ratio": statistics.median(
            total / (total - views) for total, views in zip(runs["tensorboard_on"]["run_seconds"],
                                                            runs["tensorboard_on"]["tensorboard_seconds"])
        ),
    }
    report["targets_met"] = {
        "trainer_vs_limit": report["trainer_vs_limit"] >= TARGET_VS_LIMIT,
        "tensorboard_in_run_ratio": report["tensorboard_in_run_ratio"] <= TARGET_TB_RATIO,
    }
    plot(report, args.out / "train_speed.png")
    details = table(
        ["run", "images/s", "loop images/s", "median epoch s", "median run s", "peak RSS MiB"],
        [[LABELS[n], f"{r['images_per_s']:,.0f}", f"{r['loop_images_per_s']:,.0f}",
          f"{statistics.median(r['epoch_seconds']):.2f}", fmt(r["run_seconds"] and statistics.median(r["run_seconds"]), ".1f"),
          fmt(r["peak_rss_mb"], ".0f")] for n, r in runs.items()],
    )
    report_results(args.out, "train_speed", report, details, summary_rows(report))
    return 0


if __name__ == "__main__":
    entry(main)
