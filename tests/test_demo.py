"""The Gradio demo as people use it: a real server process, the Python client, and a real browser."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.helpers import ROOT
from tests.bad_images import BAD_INPUTS, write_bad_inputs
from trainer.data import CLASS_NAMES, raw_folder

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def test_images(tmp_path_factory, data_root) -> list[tuple[Path, int]]:
    """The first 100 Fashion-MNIST test images as PNG files, as a user would have them."""
    folder = tmp_path_factory.mktemp("tiles")
    raw = raw_folder(data_root)
    images = np.frombuffer((raw / "t10k-images-idx3-ubyte").read_bytes()[16:], np.uint8).reshape(-1, 28, 28)
    labels = np.frombuffer((raw / "t10k-labels-idx1-ubyte").read_bytes()[8:], np.uint8)
    out = []
    for i in range(100):
        path = folder / f"{i}.png"
        Image.fromarray(images[i]).save(path)
        out.append((path, int(labels[i])))
    return out


def test_predict_endpoint_classifies_test_images(demo_url, test_images):
    client = Client(demo_url, verbose=False, ssl_verify=False)  # as the README shows
    correct = 0
    for path, label in test_images:
        top, seen = client.predict(handle_file(str(path)), api_name="/predict")
        assert len(top["confidences"]) == 3 and Path(seen).is_file()
        correct += top["label"] == CLASS_NAMES[label]
    assert correct >= 85, f"{correct}/100 correct"


def test_bad_inputs_get_a_message_and_the_server_keeps_serving(demo_url, tmp_path, test_images):
    client = Client(demo_url, verbose=False)
    for name, path in write_bad_inputs(tmp_path).items():
        expect = BAD_INPUTS[name]
        if expect == "refused":
            with pytest.raises(AppError) as info:
                client.predict(handle_file(str(path)), api_name="/predict")
            assert len(str(info.value)) > 10, name
        else:
            top, _ = client.predict(handle_file(str(path)), api_name="/predict")
            assert top["label"] in CLASS_NAMES, name
    with pytest.raises(AppError, match="No image"):
        client.predict(None, api_name="/predict")
    top, _ = client.predict(handle_file(str(test_images[0][0])), api_name="/predict")
    assert top["label"] in CLASS_NAMES


def test_real_browser_upload_shows_the_prediction(demo_url, test_images, tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is needed: apt-get install -y chromium"
    path, label = test_images[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(demo_url)
        page.locator("#photo input[type=file]").set_input_files(str(path))
        prediction = page.locator("#prediction")
        prediction.get_by_text(CLASS_NAMES[label]).first.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    if os.environ.get("SAVE_SCREENSHOTS"):
        shutil.copy(tmp_path / "demo.png", ROOT / "docs" / "demo.png")


def test_no_model_gives_one_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "demo/app.py", "--runs", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "python -m trainer.main" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("content", [b"", b"not a model", b"PK\x03\x04truncated zip"])
def test_corrupt_model_file_gives_one_clear_message(tmp_path, content):
    bad = tmp_path / "model.pt"
    bad.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "demo/app.py", "--checkpoint", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(bad) in result.stderr.strip().splitlines()[-1]
