"""The demo's page, which `python demo/app.py` serves: the top-3 classes of an uploaded photo, the 28x28 tile the
model actually sees after the photo is brought to Fashion-MNIST's form, why it answered, and the model card.
"""

import base64
import binascii
import hashlib
import html
import io
import json
import logging
import math
import os
import urllib.parse
import uuid
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from trainer.explain import explain_file  # noqa: E402
from trainer.predict import SURE, Classifier, Prediction  # noqa: E402
from trainer.preprocess import ImageError  # noqa: E402

SEEN_SIZE = 224
MAX_UPLOAD = 20 * 1024 * 1024  # bytes; Gradio refuses a larger upload with HTTP 413 before it is stored
CONCURRENCY = 4
MODEL_SLOTS = "model"  # every event that decodes or runs the model shares the CONCURRENCY slots
QUEUE_SIZE = 256
DELETE_CACHE = (1800, 3600)  # every 30 min, delete uploads and results older than an hour; all of them at shutdown

NO_IMAGE = "No image: upload a photo of a garment, paste one, or take one with the webcam."
NOT_UPLOADED = "Only a photo uploaded to this app can be classified; please upload the file."
UNEXPECTED = "Something went wrong while reading this picture; please try another photo."

log = logging.getLogger("demo")


def refuse(message: str) -> gr.Error:
    """An error for the person who sent the request: shown as text (Gradio renders HTML), with no traceback in the log."""
    return gr.Error(html.escape(message, quote=False), print_exception=False)


class UploadedImage(gr.Image):
    """An image input that hands the upload to our own safe decoder, instead of opening it with PIL first.

    It passes on the path of a file in Gradio's upload folder, or the bytes of a `data:` URL, and nothing
    else: a request naming any other path (Gradio only checks that for payloads that carry a `meta` field)
    must not make the server read its own files.  `is_template` makes Gradio draw it with the standard
    Image component in the browser.
    """

    is_template = True

    def preprocess(self, payload) -> str | bytes | None:
        if payload is None:
            return None
        if (payload.url or "").startswith("data:"):
            return data_url_bytes(payload.url)
        path = Path(payload.path or "").resolve()
        if not path.is_relative_to(Path(self.GRADIO_CACHE).resolve()):
            raise refuse(NOT_UPLOADED)
        return str(path)


def data_url_bytes(url: str) -> bytes:
    """The bytes of a `data:` URL (a pasted image), no larger than an upload may be."""
    header, _, data = url.partition(",")
    if len(data) > MAX_UPLOAD * 4 // 3 + 4:
        raise refuse(f"The image is larger than {MAX_UPLOAD // (1024 * 1024)} MB; please upload a smaller one.")
    try:
        return base64.b64decode(data) if header.endswith(";base64") else urllib.parse.unquote_to_bytes(data)
    except (binascii.Error, ValueError):
        raise refuse("The pasted image could not be read; please upload it as a file.") from None


def save_result(image: Image.Image, cache_dir: str, name: str = "seen.png") -> str:
    """The result image as a PNG in Gradio's cache, named by its content, and never rewritten in place.

    Requests with the same result (the same photo or example from two people) share that file.  Gradio's own
    saving rewrites it in place, so a download racing the rewrite read a truncated file and lost its connection;
    here it is written once, by an atomic rename, and only touched afterwards (delete_cache ages files by ctime).
    """
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()
    folder = Path(cache_dir) / hashlib.sha256(data).hexdigest()
    path = folder / name
    try:
        os.utime(path)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{uuid.uuid4().hex}.partial"
        partial.write_bytes(data)
        os.replace(partial, path)
    return str(path)


def verdict(prediction: Prediction) -> str:
    """The answer in words: the class when the model is sure, else "not sure" and its three best guesses."""
    top = [(name, percent(p)) for name, p in prediction.top(3)]
    if prediction.sure:
        text = f"**{top[0][0]}**, {top[0][1]} sure."
    else:
        guesses = ", ".join(f"{name} ({p})" for name, p in top)
        text = f"**Not sure.** Perhaps {guesses}; or it is not one of the ten kinds of garment this model knows."
    if not prediction.segmented:
        text += " The garment could not be cut out from its background, so the model was shown the middle of the picture."
    if prediction.across:
        text += " What stood out from the background runs across the whole picture, as the ground of a landscape does, not like a garment."
    return text


def percent(p: float) -> str:
    """As the bars round it (half up), except that a probability below SURE never reads as SURE: "not sure, 60%"."""
    shown = math.floor(100 * p + 0.5)
    return f"{min(shown, round(100 * SURE) - 1) if p < SURE else shown}%"


def in_words(classifier: Classifier, photo: str | bytes | None) -> str:
    """The words under the answer for the photo the input holds: none for a photo refused, whose own answer says why
    (one uploaded while another's answer was coming)."""
    try:
        return verdict(classifier.classify_file(photo)) if photo else ""
    except ImageError:
        return ""


def model_card(classifier: Classifier) -> str:
    meta = classifier.meta
    views = meta.get("test_accuracy_views")  # model.pt files older than it: the single-view figure only
    as_read = f", {views:.2%} with its mirror image, as this demo reads it" if views is not None and classifier.mirror else ""
    return (
        f"**Model card** · run `{meta.get('run_name', '?')}` · {meta['arch']} · "
        f"test accuracy **{meta.get('test_accuracy', 0):.2%}** on the 10,000 Fashion-MNIST test images (each image "
        f"alone{as_read}) · "
        f"best epoch {meta.get('epoch', '?')} · classes: {', '.join(classifier.class_names)}.\n\n"
        "Photos are brought to Fashion-MNIST's form first: the garment is separated from its background, "
        "cropped, centred, made light on black and shrunk to 28x28 pixels, as shown on the right.\n\n"
        f"{calibration(classifier)} Below {SURE:.0%} the demo says it is not sure. {on_real_photos(classifier)}"
    )


def calibration(classifier: Classifier) -> str:
    if "temperature" not in classifier.meta:  # model.pt files older than calibration: the network's own probabilities
        return "The probabilities are not calibrated: this model file was written before the trainer calibrated its models."
    return "The probabilities are calibrated: an answer given with 80% is right about 80% of the time."


def on_real_photos(classifier: Classifier) -> str:
    """What this model's run measured on real photos (its metrics.json), not the default's figures for any model."""
    try:
        photos = json.loads((classifier.path.parent / "metrics.json").read_text())["real_photos"]
        sure = photos["sure"]
        when_sure = f", and on {sure['accuracy']:.0%} of the {sure['share']:.0%} of photos it was sure of" if sure["accuracy"] is not None else ""
        return (f"On {photos['n']} real photos of clothes (docs/real_photos.md) it was right on {photos['macro_top1']:.0%} "
                f"(the mean over the kinds of garment){when_sure}.")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not measured, or not as this demo reads it
        return "Its run did not measure it on real photos (docs/real_photos.md measures the default model on them)."


def build_app(classifier: Classifier) -> gr.Blocks:
    def predict(image: str | bytes | None):
        if image is None:
            raise refuse(NO_IMAGE)
        try:
            prediction = classifier.classify_file(image)
        except ImageError as exc:
            raise refuse(str(exc)) from None
        except Exception:  # a bug, or memory running out: the traceback is for the log, not for the user
            log.exception("classifying an upload failed")
            raise refuse(UNEXPECTED) from None
        tile = Image.fromarray(prediction.seen).resize((SEEN_SIZE, SEEN_SIZE), Image.Resampling.NEAREST)
        return prediction.probabilities, save_result(tile, seen.GRADIO_CACHE)

    examples_dir = classifier.path.parent / "examples"
    examples = sorted(str(p) for p in examples_dir.glob("*.png"))
    with gr.Blocks(title="Fashion-MNIST classifier", analytics_enabled=False, delete_cache=DELETE_CACHE) as app:
        gr.Markdown("# What garment is this?\nUpload a clothing photo: a product shot, or a garment on a bed or floor.")
        with gr.Row():
            with gr.Column():
                image = UploadedImage(
                    label="Photo", type="filepath", sources=["upload", "webcam", "clipboard"], elem_id="photo"
                )
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                # no heading: it named the top class in large type even above "Not sure. Perhaps ..."; the words say it
                label = gr.Label(num_top_classes=3, label="Top 3 classes", show_heading=False, elem_id="prediction")
                answer = gr.Markdown(elem_id="verdict")
                seen = gr.Image(label="What the model sees (28x28, enlarged)", interactive=False, height=SEEN_SIZE)
        # A photo uploaded while another is classified is classified next, not dropped: the answer's words and its
        # explanation, which read the photo input, end with the answer of the photo it holds. (Not a gr.State of the
        # photo classified: any State makes each client hold a heartbeat connection open, and a server stopped while
        # one is open cannot finish its shutdown in Gradio's 5 s, which deletes the uploads.)
        answered = gr.on([image.upload, button.click], predict, inputs=image, outputs=[label, seen], api_name="predict",
                         trigger_mode="always_last", concurrency_id=MODEL_SLOTS)
        # A photo refused leaves its reason, not the answer of the photo before it: the answer is emptied at once, and
        # the words and the explanation, which follow it, are left empty for an empty answer (`shown`). (Gradio sends
        # an upload made while a refused photo was answered only after the next answer: that photo shows no answer
        # until Classify is pressed.)
        answered.failure(lambda: (None, None), outputs=[label, seen], queue=False, api_visibility="private")
        label.change(lambda photo, shown: in_words(classifier, photo) if shown else "", inputs=[image, label],
                     outputs=answer, api_visibility="private", concurrency_id=MODEL_SLOTS)
        add_explanation(classifier, image, label)
        if examples:  # a click loads the tile, then classifies it as an upload is, in the same slots and order
            clicked = gr.Examples(examples, inputs=image, cache_examples=False).load_input_event
            clicked.then(predict, inputs=image, outputs=[label, seen], api_visibility="undocumented",
                         trigger_mode="always_last", concurrency_id=MODEL_SLOTS)
        gr.Markdown(model_card(classifier), elem_id="model-card")
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return app


# --------------------------------------------------------------------------- why this answer (trainer.explain)

EXPLAIN_LEGEND = (
    "**Orange**: the parts of the garment that speak for the class, **blue**: those that speak against it "
    "(how far the model's score for the class falls when each small patch of the 28x28 image is blacked out). "
    "Pick another class to see why the model did not choose it."
)


def add_explanation(classifier: Classifier, image: gr.Image, label: gr.Label) -> None:
    """The "why this answer?" row: once a prediction is shown, the evidence for its top class over the tile and over
    the photo; the dropdown asks for any other class's.  A separate endpoint (/explain) that runs after /predict
    has answered, so the prediction stays as it was and as fast."""

    def explain(photo: str | bytes | None, class_name: str | None):
        if photo is None:
            raise refuse(NO_IMAGE)
        try:
            explanation = explain_file(classifier, photo, class_name)
        except ImageError as exc:
            raise refuse(str(exc)) from None
        except Exception:  # a bug, or memory running out: the traceback is for the log, not for the user
            log.exception("explaining an upload failed")
            raise refuse(UNEXPECTED) from None
        on_tile = save_result(explanation.on_tile(SEEN_SIZE), tile_map.GRADIO_CACHE, "explained_tile.png")
        on_photo = save_result(explanation.on_photo(), tile_map.GRADIO_CACHE, "explained_photo.png")
        return on_tile, on_photo, explanation.class_name

    gr.Markdown("## Why this answer?")
    with gr.Row():
        tile_map = gr.Image(label="Evidence on what the model sees", interactive=False, height=SEEN_SIZE, elem_id="explained-tile")
        photo_map = gr.Image(label="The same, on the photo", interactive=False, height=SEEN_SIZE, elem_id="explained-photo")
        with gr.Column():
            target = gr.Dropdown(classifier.class_names, value=None, label="Evidence for the class", elem_id="explain-class")
            gr.Markdown(EXPLAIN_LEGEND)
    outputs = [tile_map, photo_map, target]
    label.change(lambda photo, shown: explain(photo, None) if shown else (None, None, None), inputs=[image, label],
                 outputs=outputs, api_visibility="private", concurrency_id=MODEL_SLOTS)
    target.input(explain, inputs=[image, target], outputs=outputs, api_name="explain", concurrency_id=MODEL_SLOTS)
