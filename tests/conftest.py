"""Session fixtures: the real dataset, and one real training run that many tests read."""

from pathlib import Path

import pytest

from tests.helpers import DATA_ROOT, run_trainer


@pytest.fixture(scope="session")
def data_root() -> Path:
    raw = DATA_ROOT / "FashionMNIST" / "raw"
    assert raw.is_dir(), f"the real Fashion-MNIST is needed at {raw}: set FASHION_MNIST_ROOT"
    return DATA_ROOT


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, data_root) -> Path:
    """One real two-epoch run of the quick config, with every TensorBoard view on."""
    out = tmp_path_factory.mktemp("runs")
    result = run_trainer(f"output.root={out}", "run.name=quick")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = out / "quick"
    assert (run_dir / "metrics.json").is_file(), result.stderr[-3000:]
    return run_dir
