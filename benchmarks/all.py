"""`python -m benchmarks.all --out DIR [--quick]`: the three benchmarks, one after another, and DIR/summary.md.

summary.md is the README's "Performance" section: the machine, then one row per measured target, with the
numbers from DIR/train_speed.json, DIR/time_to_accuracy.json and DIR/demo_latency.json (documented in each
module) and the plots beside them.
"""

import json
from pathlib import Path
from types import ModuleType

from benchmarks import demo_latency, time_to_accuracy, train_speed
from benchmarks.common import ROOT, SUMMARY_HEADERS, describe_machine, entry, parse, parser, table
from trainer.errors import UserError
from trainer.predict import MODEL_ENV, resolve_model_path

BENCHMARKS: dict[str, ModuleType] = {
    "train_speed": train_speed, "time_to_accuracy": time_to_accuracy, "demo_latency": demo_latency,
}


def write_summary(out: Path) -> str:
    """DIR/summary.md from the three JSON files in DIR."""
    reports = {name: json.loads((out / f"{name}.json").read_text()) for name in BENCHMARKS}
    rows = [row for name, module in BENCHMARKS.items() for row in module.summary_rows(reports[name])]
    quick = any(report["quick"] for report in reports.values())
    plots = " · ".join(f"[{name}.png]({name}.png)" for name in BENCHMARKS)
    summary = (
        f"Measured on {describe_machine(reports['train_speed']['machine'])}"
        f"{' with --quick: not representative' if quick else ''}; reproduce with `python -m benchmarks.all --out DIR`.\n\n"
        f"{table(SUMMARY_HEADERS, rows)}\n\nPlots: {plots}\n"
    )
    (out / "summary.md").write_text(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse(parser(__doc__), argv)
    if not args.quick:  # demo_latency, the last, serves a trained model: missing, it is said now, not after the others
        model = resolve_model_path(None, ROOT / "runs")
        if not model.is_file():
            raise UserError(f"{MODEL_ENV}={model} is not a model file: point it at a run's model.pt, or unset it")
    for module in BENCHMARKS.values():
        module.main(["--out", str(args.out), *(["--quick"] if args.quick else [])])
    print(f"\n{write_summary(args.out)}\nwrote {args.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    entry(main)
