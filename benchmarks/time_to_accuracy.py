"""`python -m benchmarks.time_to_accuracy [--quick] --out DIR [--seeds 0 1 2]`: seconds of training to 84% and 90% test accuracy.

- trainer: the real trainer CLI with configs/default.yaml (--quick: configs/quick.yaml), one process per seed
  (benchmarks.timed_run), tested on the 10,000 test images 10 times an epoch (every 5,500 images, about as
  often as the tutorial's recipe below, every 8,000); final accuracy and training seconds from each run's
  metrics.json.
- tutorial: the PyTorch "TensorBoard support" tutorial's training as published (batch 4, torchvision
  FashionMNIST with ToTensor + Normalize((0.5,), (0.5,)) per sample, DataLoader with shuffle and 2 workers,
  SGD lr 0.001 momentum 0.9, the same LeNet-5 without channels_last) but without its TensorBoard writes, which
  only makes it faster; run here with the first seed for --tutorial-epochs epochs (one epoch reaches about
  83.8%, just short of 84%), tested every 2000 mini-batches and at the end of each epoch, right after the
  trainer's run of that seed and before the other seeds', so that the speed-up compares runs minutes apart at most.
  --quick: one epoch on the first 3000 training images.
Test time is left out of both training clocks. 84% is the tutorial's one-epoch level.

DIR/time_to_accuracy.json:
  machine            dict: cpu, cores, torch_threads, cuda, cpu_bf16, python, torch (trainer.machine.machine)
  quick              bool
  trainer            {"config": str, "seeds": [int],
                      "runs": [{"seed": int, "curve": [[seconds, test accuracy], ...] (10 an epoch),
                                "seconds_to_84": float | null, "seconds_to_90": float | null (null: not reached),
                                "test_accuracy": float, "train_seconds": float (from metrics.json, less the
                                benchmark's own tests)}],
                      "seconds_to_84": float | null, "seconds_to_90": float | null (medians over the seeds),
                      "test_accuracy": {"median": float, "min": float, "max": float},
                      "train_seconds": float (median)}
  tutorial           {"seed": int, "epochs": int, "train_images": int, "curve": [[seconds, test accuracy], ...],
                      "seconds_to_84": float | null, "seconds_to_90": float | null, "test_accuracy": float}
  speedup_to_84      float | null: the tutorial's seconds to 84% over the trainer's run of the same seed, the run
                     just before it (target >= 10)
  targets_met        {"speedup_to_84": bool | null, "seconds_to_90": bool (<= 45 s),
                      "test_accuracy": bool (median >= 90.8%; train_seconds is information: issue #14's rule for
                                             it, at most 2x the previous default's, is measured by alternated runs)}
                     (null where the tutorial never reached 84%)
DIR/time_to_accuracy.png: test accuracy against seconds of training, both recipes on one chart.
"""

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import FashionMNIST

from benchmarks.common import (
    QUICK_CONFIG, ROOT, at_least, data_root, entry, fmt, new_figure, parse, parser, report_results, save_figure,
    table, verdict,
)
from benchmarks.timed_run import measure
from trainer.config import DEFAULT_CONFIG, MAX_SEED
from trainer.machine import machine
from trainer.model import LeNet5

THRESHOLDS = {"seconds_to_84": 0.84, "seconds_to_90": 0.90}
TARGET_SPEEDUP, TARGET_SECONDS_TO_90 = 10, 45
TARGET_ACCURACY = 0.908  # issue #14: the median of seeds 0, 1, 2; training time is judged apart, against the old default
TUTORIAL_TEST_EVERY = 2000  # mini-batches
TESTS_PER_EPOCH = 10


def seconds_to(curve: list[tuple[float, float]], threshold: float) -> float | None:
    """The training seconds at the first test at or above `threshold`."""
    return next((seconds for seconds, accuracy in curve if accuracy >= threshold), None)


def reached(curve: list[tuple[float, float]]) -> dict[str, float | None]:
    return {key: seconds_to(curve, threshold) for key, threshold in THRESHOLDS.items()}


def shown(seconds: float | None, unit: str = "") -> str:
    return fmt(seconds, ".1f", unit, missing="not reached")


def median_or_none(values: list[float | None]) -> float | None:
    """The median over the seeds, or None unless every seed got there."""
    return None if None in values else statistics.median(values)


def tutorial_curve(seed: int, epochs: int, subset: int | None) -> tuple[list[tuple[float, float]], int]:
    """The tutorial's training loop; returns (training seconds, test accuracy) points and the training images used."""
    torch.manual_seed(seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    trainset = FashionMNIST(data_root(), train=True, download=False, transform=transform)
    if subset:
        trainset = Subset(trainset, range(subset))
    trainloader = DataLoader(trainset, batch_size=4, shuffle=True, num_workers=2)
    test = FashionMNIST(data_root(), train=False, download=False)
    test_images = (test.data.float().unsqueeze(1) / 255 - 0.5) / 0.5  # exactly what the tutorial's transform gives
    net = LeNet5()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

    curve, excluded = [], 0.0
    start = time.perf_counter()

    def test_now() -> None:
        nonlocal excluded
        now = time.perf_counter()
        with torch.inference_mode():
            predicted = torch.cat([net(batch).argmax(1) for batch in test_images.split(1000)])
        curve.append((now - start - excluded, (predicted == test.targets).float().mean().item()))
        excluded += time.perf_counter() - now

    for _ in range(epochs):
        for i, (inputs, labels) in enumerate(trainloader):
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
            if i % TUTORIAL_TEST_EVERY == TUTORIAL_TEST_EVERY - 1:
                test_now()
        test_now()
    return curve, len(trainset)


def trainer_runs(config: Path, seeds: list[int], timeout: float) -> list[dict[str, Any]]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="time_to_accuracy-") as tmp:
        for seed in seeds:
            clock, metrics = measure(config, [f"seed={seed}"], Path(tmp, f"seed{seed}"), timeout, TESTS_PER_EPOCH)
            curve = [(t["train_seconds"], t["test_accuracy"]) for t in clock["tests"]]
            runs.append({
                "seed": seed, "curve": curve, **reached(curve), "test_accuracy": metrics["test_accuracy"],
                "train_seconds": metrics["train_seconds"] - clock["benchmark_seconds"],  # without the benchmark's own tests
            })
    return runs


def plot(report: dict[str, Any], path: Path) -> None:
    from matplotlib.ticker import LogFormatter

    fig, ax = new_figure(8, 5)
    trainer = report["trainer"]
    for i, run in enumerate(trainer["runs"]):
        seconds, accuracy = zip(*run["curve"])
        label = f"this trainer ({Path(trainer['config']).name}), seeds {trainer['seeds']}" if i == 0 else None
        ax.plot(seconds, [100 * a for a in accuracy], "o-", color="#4c72b0", markersize=2, alpha=0.8, label=label)
    tutorial = report["tutorial"]
    seconds, accuracy = zip(*tutorial["curve"])
    ax.plot(seconds, [100 * a for a in accuracy], "s-", color="#dd8452", markersize=4,
            label=f"the tutorial's recipe (batch 4, SGD lr 0.001), {tutorial['train_images']:,} images per epoch")
    for threshold in THRESHOLDS.values():
        ax.axhline(100 * threshold, color="grey", linestyle=":", linewidth=1)
        ax.text(0.01, 100 * threshold, f"{threshold:.0%}", va="bottom", color="grey", transform=ax.get_yaxis_transform())
    ax.set_xscale("log")
    for axis_formatter in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis_formatter(LogFormatter(labelOnlyBase=False))  # 60, not 6 x 10^1
    ax.set_xlabel("seconds of training (log scale; testing excluded)")
    ax.set_ylabel("test accuracy (%), 10,000 Fashion-MNIST test images")
    lowest = min(a for run in [*trainer["runs"], tutorial] for _, a in run["curve"])
    ax.set_ylim(min(80, 10 * int(10 * lowest)), 100)
    ax.set_title("Fashion-MNIST test accuracy against training time, LeNet-5")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save_figure(fig, path)


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """The rows with targets, for the console and for benchmarks.all's summary."""
    trainer, tutorial, met = report["trainer"], report["tutorial"], report["targets_met"]
    accuracy = trainer["test_accuracy"]
    speedup = "" if report["speedup_to_84"] is None else f": {report['speedup_to_84']:.0f}x faster"
    return [
        ["seconds of training to 84% test accuracy",
         f"{shown(trainer['seconds_to_84'], ' s')}; the tutorial's recipe: {shown(tutorial['seconds_to_84'], ' s')} "
         f"in {tutorial['epochs']} epoch(s){speedup}", f">= {TARGET_SPEEDUP}x faster", verdict(met["speedup_to_84"])],
        ["seconds of training to 90% test accuracy", shown(trainer["seconds_to_90"], " s"), f"<= {TARGET_SECONDS_TO_90} s",
         verdict(met["seconds_to_90"])],
        [f"final test accuracy over seeds {trainer['seeds']}",
         f"{accuracy['median']:.2%} (min {accuracy['min']:.2%}, max {accuracy['max']:.2%}) in {trainer['train_seconds']:.0f} s",
         f">= {TARGET_ACCURACY:.1%} (median)", verdict(met["test_accuracy"])],
    ]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--seeds", type=at_least(0, MAX_SEED), nargs="+", help="trainer seeds (default 0 1 2; with --quick 0)")
    p.add_argument("--tutorial-epochs", type=at_least(1), default=2,
                   help="epochs of the tutorial's recipe (default 2; --quick: 1)")
    args = parse(p, argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    config = QUICK_CONFIG if args.quick else DEFAULT_CONFIG
    timeout = 600 if args.quick else 3600
    runs = trainer_runs(config, seeds[:1], timeout)
    tutorial_epochs = 1 if args.quick else args.tutorial_epochs
    curve, images = tutorial_curve(seeds[0], tutorial_epochs, 3000 if args.quick else None)  # beside its seed's run
    runs += trainer_runs(config, seeds[1:], timeout)
    accuracies = [r["test_accuracy"] for r in runs]
    trainer = {
        "config": str(config.relative_to(ROOT)),
        "seeds": seeds,
        "runs": runs,
        **{key: median_or_none([r[key] for r in runs]) for key in THRESHOLDS},
        "test_accuracy": {"median": statistics.median(accuracies), "min": min(accuracies), "max": max(accuracies)},
        "train_seconds": statistics.median(r["train_seconds"] for r in runs),
    }
    tutorial = {"seed": seeds[0], "epochs": tutorial_epochs, "train_images": images, "curve": curve, **reached(curve),
                "test_accuracy": curve[-1][1]}
    paired = runs[0]["seconds_to_84"]  # the same seed, run just before the tutorial: the machine's speed drifts
    both = paired is not None and tutorial["seconds_to_84"] is not None
    report = {
        "machine": machine(),
        "quick": args.quick,
        "trainer": trainer,
        "tutorial": tutorial,
        "speedup_to_84": tutorial["seconds_to_84"] / paired if both else None,
    }
    report["targets_met"] = {
        "speedup_to_84": None if not both else report["speedup_to_84"] >= TARGET_SPEEDUP,
        "seconds_to_90": trainer["seconds_to_90"] is not None and trainer["seconds_to_90"] <= TARGET_SECONDS_TO_90,
        "test_accuracy": trainer["test_accuracy"]["median"] >= TARGET_ACCURACY,
    }
    plot(report, args.out / "time_to_accuracy.png")
    details = table(
        ["recipe", "seed", "seconds to 84%", "seconds to 90%", "final test accuracy", "training seconds"],
        [[trainer["config"], r["seed"], shown(r["seconds_to_84"]), shown(r["seconds_to_90"]),
          f"{r['test_accuracy']:.2%}", f"{r['train_seconds']:.1f}"] for r in runs]
        + [[f"tutorial, {tutorial_epochs} epoch(s)", tutorial["seed"], shown(tutorial["seconds_to_84"]),
            shown(tutorial["seconds_to_90"]), f"{tutorial['test_accuracy']:.2%}", f"{curve[-1][0]:.1f}"]],
    )
    report_results(args.out, "time_to_accuracy", report, details, summary_rows(report))
    return 0


if __name__ == "__main__":
    entry(main)
