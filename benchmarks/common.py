"""What the benchmark commands share: their command line, the machine's description, subprocesses, JSON, tables and
figures.

Kept in one place so every command describes the machine (`trainer.machine` says what it is), runs children and
writes its results the same way.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from trainer.config import DataConfig
from trainer.errors import UserError, fail

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
QUICK_CONFIG = ROOT / "configs" / "quick.yaml"


class BenchmarkError(UserError):
    """A child process (the trainer, mostly) failed: one sentence, and the end of its output where that says more."""

    def __init__(self, sentence: str, output: str = ""):
        super().__init__(sentence)
        self.output = output


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every command has: --out for its files and --quick for the CI-sized run."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON results and the PNG plots")
    p.add_argument("--quick", action="store_true", help="a small version for CI: minutes, not hours")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with --out made a folder now: an unusable one fails before minutes of measuring, not after."""
    args = p.parse_args(argv)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out).close()  # a folder that is there but cannot be written to
    except OSError as exc:  # a file there, no permission
        raise UserError(f"--out {args.out} cannot be used as the output folder: {exc.strerror or exc}") from None
    return args


def at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type for a whole number of at least `minimum` (and at most `maximum`): 0 epochs or repeats, or a
    seed the trainer refuses, would fail only after minutes."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small: it must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value} is too large: it must be at most {maximum}")
        return value

    return whole


def entry(main: Callable[[], int]) -> None:
    """Run a command: what a user can fix (no data, no model) is one `error:` line and exit code 2, as in the trainer."""
    try:
        code = main()
    except (UserError, OSError) as exc:
        if isinstance(exc, BenchmarkError) and exc.output:
            print(exc.output, file=sys.stderr)
        code = fail(exc)
    sys.exit(code)


def data_root() -> str:
    """The same data folder the trainer uses: $FASHION_MNIST_ROOT, else ./data."""
    return DataConfig().root


def describe_machine(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['cuda']}" if info["cuda"] else ", no GPU"
    return f"{info['cpu']}, {info['cores']} cores{gpu}; Python {info['python']}, torch {info['torch']}"


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak resident memory (VmHWM) in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def run_python(args: Sequence[str], timeout: float) -> None:
    """`python ARGS` from the project root; a failure raises BenchmarkError, so it never becomes a number.

    The child's own `error:` sentence (the trainer's, for a user's mistake) is the error's; any other failure
    keeps the end of its output to read. subprocess.run kills the child on a timeout or any other exception, Ctrl-C included.
    """
    command = f"`python {' '.join(args[:2])}`"
    try:
        result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"{command} did not finish within {timeout:.0f} s and was stopped") from None
    if result.returncode != 0:
        sentences = [line[len("error: "):] for line in result.stderr.splitlines() if line.startswith("error: ")]
        if sentences:
            raise BenchmarkError(f"{command} stopped: {sentences[-1]}")
        output = (result.stdout + result.stderr)[-3000:]
        raise BenchmarkError(f"{command} failed with exit code {result.returncode}; the end of its output is above", output)


def new_figure(width: float = 7, height: float = 4.5) -> tuple["Figure", "Axes"]:
    """A (figure, axes) pair drawn straight to files, without pyplot's global state or a display.

    matplotlib is imported here, not at the top, so the measured training processes do not carry it.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="tight")
    return fig, fig.subplots()


def save_figure(fig: "Figure", path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table with padded columns: readable on a console and in the README alike."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def fmt(value: float | None, spec: str, unit: str = "", missing: str = "-") -> str:
    """A number for a table, or `missing` where there is none."""
    return missing if value is None else f"{value:{spec}}{unit}"


def verdict(met: bool | None) -> str:
    return {True: "yes", False: "no", None: "n/a"}[met]


SUMMARY_HEADERS = ("measure", "result", "target", "met")


def report_results(out: Path, name: str, report: dict[str, Any], details: str, summary: list[list[str]]) -> None:
    """Write DIR/<name>.json and print the detailed table and the targets, the same way for every command."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{name} on {describe_machine(report['machine'])}{' (--quick)' if report['quick'] else ''}\n")
    print(details + "\n")
    print(table(SUMMARY_HEADERS, summary))
    print(f"\nwrote {path} and the plots in {out}")
