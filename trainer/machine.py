"""What a run or a benchmark ran on: its figures repeat to the last digit only on the same processor, torch build
and number of threads, which each sum the same products in their own order (docs/search.md, "Threads round too")."""

import os
import platform
from pathlib import Path
from typing import Any

import torch

from trainer.engines import cpu_has_bf16


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_bf16": cpu_has_bf16(),  # "AMD EPYC" names CPUs with and without it; configs/wide.yaml trains 2x slower without
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
