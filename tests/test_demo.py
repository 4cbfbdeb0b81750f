"""The Gradio demo as people use it: a real server process, the Python client, and a real browser."""

import html
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from demo.interface import SEEN_SIZE
from tests.helpers import CHROMIUM, ROOT, require_chromium
from tests.bad_images import BAD_INPUTS, write_bad_inputs
from tests.servers import call, demo_client
from trainer.data import CLASS_NAMES, raw_folder
from trainer.predict import MODEL_ENV, Classifier, Prediction
from trainer.preprocess import ImageError

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


def test_predict_endpoint_classifies_test_images(demo_url, trained_run, test_images):
    """The server answers exactly as the in-process Classifier does on the same files; the accuracy bound is loose,
    far below the quick model's (about 85%), since that varies from one processor to another."""
    classifier = Classifier(trained_run / "model.pt")
    correct = 0
    with demo_client(demo_url, ssl_verify=False) as client:  # as the README shows
        assert not client.analytics_enabled, "no telemetry to huggingface.co"
        for path, label in test_images:
            top, seen = call(client, handle_file(str(path)), api_name="/predict")
            served = [(c["label"], c["confidence"]) for c in top["confidences"]]
            answer = classifier.classify_file(path)
            expected = answer.top(3)
            assert [name for name, _ in served] == [name for name, _ in expected], (path, served, expected)
            assert [p for _, p in served] == pytest.approx([p for _, p in expected], abs=1e-4), (path, served, expected)
            shown = Image.fromarray(answer.seen).resize((SEEN_SIZE, SEEN_SIZE), Image.Resampling.NEAREST)
            assert np.array_equal(np.asarray(Image.open(seen).convert("L")), np.asarray(shown)), "the very tile classified"
            correct += served[0][0] == CLASS_NAMES[label]
    assert correct >= 60, f"{correct}/100 correct"


def test_bad_inputs_get_a_message_and_the_server_keeps_serving(demo_url, trained_run, tmp_path, test_images):
    """A refused upload gets the very sentence the in-process Classifier gives, as Gradio sends it (HTML-escaped)."""
    classifier = Classifier(trained_run / "model.pt")
    with demo_client(demo_url) as client:
        for name, path in write_bad_inputs(tmp_path).items():
            if BAD_INPUTS[name] == "refused":
                with pytest.raises(ImageError) as refusal:
                    classifier.classify_file(path)
                with pytest.raises(AppError) as info:
                    call(client, handle_file(str(path)), api_name="/predict")
                assert str(info.value) == html.escape(str(refusal.value), quote=False), name
            else:
                top, _ = call(client, handle_file(str(path)), api_name="/predict")
                assert top["label"] in CLASS_NAMES, name
        with pytest.raises(AppError, match="No image"):
            call(client, None, api_name="/predict")
        top, _ = call(client, handle_file(str(test_images[0][0])), api_name="/predict")
    assert top["label"] in CLASS_NAMES


@pytest.mark.parametrize("ci, outcome", [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_missing_chromium_skips_the_browser_test_except_in_ci(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="apt-get install -y chromium"):
        require_chromium(str(tmp_path / "chromium"))


def first_words(prediction: Prediction) -> str:
    """How the answer in words begins, its percentage rounded as the bars round it."""
    name, p = prediction.top(1)[0]
    return f"{name}, {math.floor(100 * p + 0.5)}% sure." if prediction.sure else "Not sure."


def test_real_browser_upload_shows_the_prediction(demo_url, trained_run, test_images, tmp_path):
    demo_checkpoint = trained_run / "model.pt"
    from playwright.sync_api import sync_playwright

    require_chromium()
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
        expected = Classifier(demo_checkpoint).classify_file(path)
        page.locator("#verdict").get_by_text(first_words(expected)).wait_for(timeout=30_000)  # in words, below the bars
        card = page.locator("#model-card").inner_text()
        meta = Classifier(demo_checkpoint).meta  # the card shows the test accuracy alone and as the demo reads the images
        assert f"{meta['test_accuracy']:.2%}" in card and f"{meta['test_accuracy_views']:.2%} with its mirror image" in card, card
        photos = json.loads((trained_run / "metrics.json").read_text())["real_photos"]  # this model's, not the default's
        assert f"On {photos['n']} real photos of clothes" in card and f"right on {photos['macro_top1']:.0%}" in card, card
        page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        example = trained_run / "examples" / "1_Trouser.png"  # a click on an example tile classifies it as an upload is
        clicked = first_words(Classifier(demo_checkpoint).classify_file(example))
        assert clicked != first_words(expected), "the words must change for the click to show"
        page.locator("button.gallery-item", has=page.locator("img[src$='1_Trouser.png']")).click()
        page.locator("#verdict").get_by_text(clicked).wait_for(timeout=30_000)
        unsure = next(path for path, _ in test_images if not Classifier(demo_checkpoint).classify_file(path).sure)
        page.locator("#photo input[type=file]").set_input_files(str(unsure))
        page.locator("#verdict").get_by_text("Not sure.").wait_for(timeout=30_000)
        assert page.locator("#prediction h2").count() == 0, "no class as a heading above 'Not sure'"
        strip = tmp_path / "strip.png"  # refused: its reason is shown, and no earlier photo's answer stays beside it
        Image.new("RGB", (400, 20), (200, 40, 40)).save(strip)
        page.locator("#photo input[type=file]").set_input_files(str(strip))
        page.get_by_text("thin strip").first.wait_for(timeout=30_000)
        page.wait_for_timeout(2000)
        assert page.locator("#verdict").inner_text().strip() == "" and page.locator("#prediction h2").count() == 0
        assert not any(name in page.locator("#prediction").inner_text() for name in CLASS_NAMES)
        browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    if os.environ.get("SAVE_SCREENSHOTS"):
        shutil.copy(tmp_path / "demo.png", ROOT / "docs" / "demo.png")


def test_a_photo_uploaded_during_another_s_answer_is_classified_next_and_shares_the_model_s_slots(trained_run, tmp_path):
    """Gradio's default drops an upload made while the last one is classified: the page then ended with one photo's
    answer and the other's words and explanation, which read the photo input. All the model's work shares the
    queue's slots, and the words for a photo refused meanwhile are none (its own answer says why), not an error."""
    from demo.interface import MODEL_SLOTS, build_app, in_words

    classifier = Classifier(trained_run / "model.pt")
    app = build_app(classifier)
    events = list(app.fns.values())
    predicts = [event for event in events if event.name == "predict"]
    assert len(predicts) == 2 and all(event.trigger_mode == "always_last" for event in predicts), "uploads and examples"
    explain = next(event for event in events if event.api_name == "explain")
    followers = [event for event in events if event.api_visibility == "private" and event.inputs[1:] == [predicts[0].outputs[0]]]
    assert len(followers) == 2, "the words and the explanation"
    assert {event.concurrency_id for event in [*predicts, explain, *followers]} == {MODEL_SLOTS}
    assert not app.config.get("connect_heartbeat"), "no State: a client's open heartbeat would stop the shutdown's clean-up"
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 200), (240, 235, 230)).save(blank)
    assert in_words(classifier, str(blank)) == ""


@pytest.fixture(scope="module")
def garment_photo(tmp_path_factory) -> Path:
    """A dark garment off-centre on a light 400x300 picture, as a lossless PNG (so what changed can be told)."""
    pixels = np.full((300, 400, 3), 225, dtype=np.uint8)
    pixels[60:240, 220:330] = (40, 50, 70)
    path = tmp_path_factory.mktemp("photo") / "garment.png"
    Image.fromarray(pixels).save(path)
    return path


def test_explain_endpoint_draws_the_evidence_for_the_top_class_or_any_other(demo_url, garment_photo):
    with demo_client(demo_url, ssl_verify=False) as client:
        endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        assert (len(endpoints["/predict"]["parameters"]), len(endpoints["/predict"]["returns"])) == (1, 2), "as before"
        assert [p["parameter_name"] for p in endpoints["/explain"]["parameters"]] == ["photo", "class_name"]
        top, _ = call(client, handle_file(str(garment_photo)), api_name="/predict")
        on_tile, on_photo, explained = call(client, handle_file(str(garment_photo)), None, api_name="/explain")
        assert explained == top["label"], "no class named: the top one"
        assert Image.open(on_tile).size == (224, 224)
        original = np.asarray(Image.open(garment_photo).convert("RGB")).astype(int)
        changed = np.abs(np.asarray(Image.open(on_photo).convert("RGB")).astype(int) - original).sum(2) > 0
        assert changed[60:240, 220:330].mean() > 0.5, "the map lies over the garment"
        assert not changed[:, :150].any() and not changed[:, 400 - 30 :].any(), "and nowhere beside the part the tile shows"
        other = next(name for name in CLASS_NAMES if name != top["label"])
        other_tile, _, explained = call(client, handle_file(str(garment_photo)), other, api_name="/explain")
        assert explained == other and Path(other_tile).read_bytes() != Path(on_tile).read_bytes()
        with pytest.raises(AppError, match="not in the list of choices"):
            call(client, handle_file(str(garment_photo)), "Hat", api_name="/explain")
        with pytest.raises(AppError, match="No image"):
            call(client, None, None, api_name="/explain")


def test_real_browser_shows_why_and_why_not(demo_url, garment_photo, tmp_path):
    """Uploading shows the top class's evidence once the prediction is in; picking a class shows that one's."""
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(demo_url)
        page.locator("#photo input[type=file]").set_input_files(str(garment_photo))
        on_tile = page.locator("#explained-tile img")
        on_tile.wait_for(timeout=60_000)
        page.locator("#explained-photo img").wait_for(timeout=30_000)
        top = page.locator("#explain-class input").input_value()
        assert top in CLASS_NAMES and top in page.locator("#prediction").inner_text()
        first = on_tile.get_attribute("src")
        other = next(name for name in CLASS_NAMES if name != top)
        page.locator("#explain-class input").click()
        page.get_by_role("option", name=other, exact=True).click()
        page.wait_for_function(
            "([selector, before]) => document.querySelector(selector)?.getAttribute('src') !== before",
            arg=["#explained-tile img", first], timeout=30_000,
        )
        assert page.locator("#explain-class input").input_value() == other
        page.screenshot(path=str(tmp_path / "explained.png"), full_page=True)
        browser.close()
    assert (tmp_path / "explained.png").stat().st_size > 10_000


def test_no_model_gives_one_clear_message(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != MODEL_ENV}  # a user's own model would be found
    result = subprocess.run(
        [sys.executable, "demo/app.py", "--runs", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "python -m trainer.main" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["torch", "interface"])
def test_ctrl_c_while_the_demo_is_still_importing_ends_it_quietly(module, trained_run):
    """torch imports for a second or two after the command starts, Gradio after the model is loaded: a Ctrl-C in
    either (here raised by the import itself, when it happens) ends the demo with 130, as one later does, and no
    traceback."""
    interrupt = (
        "import builtins, runpy, sys\n"
        "real = builtins.__import__\n"
        f"def interrupted(name, *args, **kwargs):\n    if name == {module!r}: raise KeyboardInterrupt\n    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = interrupted\n"
        "sys.argv = ['demo/app.py'] + sys.argv[1:]\n"
        "runpy.run_path('demo/app.py', run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", interrupt, "--checkpoint", str(trained_run / "model.pt")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("content", [b"", b"not a model", b"PK\x03\x04truncated zip"])
def test_corrupt_model_file_gives_one_clear_message(tmp_path, content):
    bad = tmp_path / "model.pt"
    bad.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "demo/app.py", "--checkpoint", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(bad) in result.stderr.strip().splitlines()[-1]


def test_a_port_already_in_use_gives_one_clear_message(trained_run):
    """The port another server holds: one sentence that says what to change, not Gradio's advice about launch()."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "demo/app.py", "--checkpoint", str(trained_run / "model.pt"), "--port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot serve on 127.0.0.1:{port}: the port is taken or 127.0.0.1 is not an address of this machine; "
        "choose another --port or --host"
    )


def test_a_port_out_of_range_is_refused_when_parsing(trained_run):
    result = subprocess.run(
        [sys.executable, "demo/app.py", "--checkpoint", str(trained_run / "model.pt"), "--port", "70000"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "python demo/app.py: error: argument --port: '70000' is not a port number (1 to 65535)"
    )


def test_a_run_directory_is_taken_for_its_model_and_a_folder_without_one_is_named(trained_run, tmp_path):
    """`--checkpoint runs/<run>` serves the run's model.pt, as `python -m trainer.predict` shows in one line."""
    image = str(trained_run / "examples" / "1_Trouser.png")
    predict = [sys.executable, "-m", "trainer.predict", image, "--checkpoint"]
    served = subprocess.run([*predict, str(trained_run)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert served.returncode == 0 and served.stdout.startswith(f"{image}: "), served.stderr[-2000:]
    from_env = subprocess.run(predict[:-1], cwd=ROOT, env={**os.environ, MODEL_ENV: str(trained_run)}, capture_output=True,
                              text=True, timeout=120)
    assert from_env.stdout == served.stdout, from_env.stderr[-2000:]
    empty = subprocess.run([*predict, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and empty.stderr.strip() == (
        f"error: {tmp_path} is a folder without a model.pt: point at a run's model.pt or its run directory"
    )


@pytest.mark.parametrize("metrics", ['{"real_photos": {"n": 990, "macro_top1": 0.66}}', '{"real_photos": "n/a"}', "not json", None])
def test_a_model_card_without_readable_photo_figures_says_so(trained_run, tmp_path, metrics):
    from demo.interface import model_card

    shutil.copy(trained_run / "model.pt", tmp_path / "model.pt")
    if metrics is not None:
        (tmp_path / "metrics.json").write_text(metrics)
    assert "Its run did not measure it on real photos" in model_card(Classifier(tmp_path / "model.pt"))


def test_the_model_card_claims_calibration_only_for_a_calibrated_model(trained_run, tmp_path):
    """A model.pt written before calibration is read with a temperature of 1: its probabilities are the network's own."""
    import torch

    from demo.interface import model_card

    assert "The probabilities are calibrated" in model_card(Classifier(trained_run / "model.pt"))
    payload = torch.load(trained_run / "model.pt", weights_only=True)
    for key in ("temperature", "photo_temperature"):
        del payload[key]
    torch.save(payload, tmp_path / "model.pt")
    card = model_card(Classifier(tmp_path / "model.pt"))
    assert "The probabilities are not calibrated" in card and "are calibrated" not in card
