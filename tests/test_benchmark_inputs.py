"""A user's mistake given to a benchmark command ends at once in one `error:` sentence and exit code 2, not a traceback
after minutes of measuring."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks.common import BenchmarkError, run_python
from tests.bad_images import photo
from tests.helpers import DATA_ROOT, NO_NETWORK, ROOT, write_idx


def run_benchmark(name: str, *args: str, data: Path = DATA_ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "FASHION_MNIST_ROOT": str(data), **NO_NETWORK}  # a stray download stays on this machine
    command = [sys.executable, "-m", f"benchmarks.{name}", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("name, args", [
    ("train_speed", ["--quick"]),
    ("time_to_accuracy", ["--quick"]),
    ("demo_latency", ["--quick"]),
    ("real_photos", ["--quick"]),
    ("explain_methods", ["--checkpoint", "model.pt"]),
    ("all", ["--quick"]),
    ("photo_like", []),
])
def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path, name, args):
    out = tmp_path / "results"
    out.write_text("not a folder")
    result = run_benchmark(name, "--out", str(out), *args, data=tmp_path / "no-data")
    assert result.stderr.strip().splitlines() == [f"error: --out {out} cannot be used as the output folder: File exists"]
    assert result.returncode == 2 and result.stdout == "" and out.read_text() == "not a folder"


@pytest.mark.parametrize("name", ["train_speed", "time_to_accuracy"])
def test_missing_data_is_the_trainers_sentence_without_a_download(tmp_path, name):
    result = run_benchmark(name, "--quick", "--out", str(tmp_path / "out"), data=tmp_path / "empty")
    line = last_line(result)
    assert line.startswith("error: `python -m benchmarks.timed_run` stopped: Fashion-MNIST file ") and "is missing" in line
    assert "FASHION_MNIST_ROOT" in line and "could not be downloaded" not in result.stderr
    assert not (tmp_path / "empty" / "FashionMNIST").exists(), "nothing was downloaded there"


@pytest.mark.parametrize("name, args, wrong", [
    ("train_speed", ["--epochs", "0"], "argument --epochs: 0 is too small: it must be at least 2"),
    ("train_speed", ["--epochs", "1"], "argument --epochs: 1 is too small: it must be at least 2"),
    ("train_speed", ["--repeats", "0"], "argument --repeats: 0 is too small: it must be at least 1"),
    ("train_speed", ["--epochs", "two"], "argument --epochs: 'two' is not a whole number"),
    ("time_to_accuracy", ["--tutorial-epochs", "0"], "argument --tutorial-epochs: 0 is too small: it must be at least 1"),
    ("time_to_accuracy", ["--seeds", "0", "-1"], "argument --seeds: -1 is too small: it must be at least 0"),
    ("time_to_accuracy", ["--seeds", "4000000000"], "argument --seeds: 4000000000 is too large: it must be at most 1000000000"),
    ("photo_like", ["--n", "5"], "argument --n: 5 is too small: it must be at least 10"),
    ("photo_like", ["--threads", "0"], "argument --threads: 0 is too small: it must be at least 1"),
    ("photo_like", ["--seed", "-1"], "argument --seed: -1 is too small: it must be at least 0"),
])
def test_bad_numbers_are_refused_when_parsing(tmp_path, name, args, wrong):
    result = run_benchmark(name, "--out", str(tmp_path / "out"), *args)
    assert last_line(result).endswith(f"error: {wrong}")
    assert not (tmp_path / "out").exists(), "refused before --out was made"


def test_a_quick_latency_run_measures_the_model_it_is_given_or_says_why_not(tmp_path):
    """--quick trains a model of its own only where none is named: a mistaken --checkpoint is the user's to hear."""
    result = run_benchmark("demo_latency", "--quick", "--out", str(tmp_path / "out"), "--checkpoint", str(tmp_path))
    assert last_line(result) == f"error: {tmp_path} is a folder without a model.pt: point at a run's model.pt or its run directory"


def test_explaining_a_folder_without_photos_is_one_sentence(tmp_path, trained_run):
    photos = tmp_path / "photos"
    (photos / "Shirt").mkdir(parents=True)
    no_model = ("explain_methods", "--out", str(tmp_path / "out"), "--photos", str(photos), "--checkpoint", "model.pt")
    assert last_line(run_benchmark(*no_model)) == "error: model file model.pt does not exist", "said before the photos"
    explain = (*no_model[:-1], str(trained_run / "model.pt"))
    assert last_line(run_benchmark(*explain)) == (f"error: no MANIFEST.tsv in {photos}: point --photos at a folder "
                                                  "of real photos with its manifest")
    (photos / "Shirt" / "a.png").write_text("not a picture")
    (photos / "MANIFEST.tsv").write_text("path\taccept\nShirt/a.png\tShirt\n")
    assert last_line(run_benchmark(*explain)) == (f"error: {photos} has no photo to explain: its manifest lists no "
                                                  "photo of a garment that can be read")
    photo(0).save(photos / "Shirt" / "b.png")  # the class's first photo still cannot be read: the sheet shows this one
    (photos / "MANIFEST.tsv").write_text("path\taccept\nShirt/a.png\tShirt\nShirt/b.png\tShirt\n")
    result = run_benchmark(*explain[:-2], "--quick", *explain[-2:], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "explain_methods.png").is_file()


def test_a_child_that_crashes_or_hangs_is_one_sentence_with_its_output_kept():
    with pytest.raises(BenchmarkError, match=r"^`python -c raise SystemExit\('boom'\)` failed with exit code 1; ") as crashed:
        run_python(["-c", "raise SystemExit('boom')"], timeout=60)
    assert crashed.value.output.strip() == "boom"
    with pytest.raises(BenchmarkError, match=r"^`python -c import time; time.sleep\(30\)` did not finish within 1 s"):
        run_python(["-c", "import time; time.sleep(30)"], timeout=1)


def test_all_without_a_trained_model_says_so_before_the_other_benchmarks(tmp_path, monkeypatch):
    """The demo's benchmark comes last and serves a trained model: missing, the whole run stops before the first."""
    monkeypatch.setenv("FASHION_MNIST_MODEL", str(tmp_path / "none" / "model.pt"))
    result = run_benchmark("all", "--out", str(tmp_path / "out"), timeout=60)
    assert last_line(result) == f"error: FASHION_MNIST_MODEL={tmp_path / 'none' / 'model.pt'} is not a model file: point it at a run's model.pt, or unset it"
    assert not list((tmp_path / "out").iterdir())


def test_photo_like_with_a_json_in_a_missing_folder_says_so_before_measuring(tmp_path):
    result = run_benchmark("photo_like", "--out", str(tmp_path / "images"), "--json", str(tmp_path / "no" / "r.json"), data=tmp_path / "no-data")
    assert last_line(result) == f"error: --json {tmp_path / 'no' / 'r.json'}: its folder {tmp_path / 'no'} does not exist"
    result = run_benchmark("photo_like", "--out", str(tmp_path / "images"), "--json", str(tmp_path), data=tmp_path / "no-data")
    assert last_line(result) == f"error: --json {tmp_path} is a folder: name the file to write, such as {tmp_path / 'photo_like.json'}"


def test_an_out_that_cannot_be_written_to_is_refused_before_any_work(tmp_path):
    """A folder that is there but takes no files (sysfs refuses them even to root): said before the measuring, with
    the system's own reason (Permission denied where /sys is mounted writable, Read-only file system in a container
    that mounts it read-only)."""
    with pytest.raises(OSError) as refused:
        tempfile.TemporaryFile(dir="/sys/kernel").close()
    result = run_benchmark("photo_like", "--out", "/sys/kernel", data=tmp_path / "no-data")
    assert last_line(result) == f"error: --out /sys/kernel cannot be used as the output folder: {refused.value.strerror}"


def test_a_bad_model_file_for_the_latency_benchmark_is_said_before_the_photos_are_built(tmp_path):
    result = run_benchmark("demo_latency", "--out", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "no.pt"), data=tmp_path / "no-data")
    assert last_line(result) == f"error: model file {tmp_path / 'no.pt'} does not exist"


def test_photo_like_images_built_from_another_test_set_are_built_again(tmp_path):
    """The images cached in --out are those of the test set they were made from: a tiny stand-in's are not reused
    for the real one (the figures came out for the wrong images and labels, without a word)."""
    from benchmarks.photo_like import build_benchmark

    one, other = write_idx(tmp_path / "one", n_test=20, seed=1), write_idx(tmp_path / "other", n_test=20, seed=2)
    first = build_benchmark(str(one), tmp_path / "images", 10, seed=0)
    cached = {path.name: path.read_bytes() for path, _ in first}
    again = build_benchmark(str(other), tmp_path / "images", 10, seed=0)
    fresh = build_benchmark(str(other), tmp_path / "fresh", 10, seed=0)
    assert [label for _, label in again] == [label for _, label in fresh]
    assert all(path.read_bytes() == (tmp_path / "fresh" / path.name).read_bytes() for path, _ in again)
    assert any(path.read_bytes() != cached[path.name] for path, _ in again), "the other test set's images"
    (tmp_path / "images" / "meta.json").write_text("{damaged")
    assert build_benchmark(str(other), tmp_path / "images", 10, seed=0) == again, "a damaged cache is built again"


def test_the_contact_sheet_shows_a_transparent_photo_as_seen_and_leaves_it_as_it_was():
    """`explain_methods`' contact sheet draws each photo into a white square: a transparent one composited (not the
    colour hidden under its transparency), and the photo handed in left at its size."""
    from PIL import Image

    from benchmarks.explain_methods import square

    hidden = Image.new("RGBA", (200, 100), (255, 0, 255, 0))
    hidden.paste((30, 30, 30, 255), (80, 20, 120, 80))
    assert square(hidden, 50).getpixel((25, 15)) == (255, 255, 255)
    opaque = Image.new("RGB", (200, 100), (30, 90, 30))
    square(opaque, 50)
    assert opaque.size == (200, 100)
