"""`python demo/app.py [--checkpoint PATH] [--host 127.0.0.1] [--port 7860]`: classify clothing photos in a web app.

The app loads a run's `model.pt` (the newest `runs/*/model.pt` by default) and shows the top-3 classes, the
28x28 tile the model actually sees after the photo is brought to Fashion-MNIST's form, and the model card.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from trainer.errors import UserError  # noqa: E402
from trainer.predict import MODEL_ENV, Classifier, resolve_model_path  # noqa: E402
from trainer.preprocess import ImageError  # noqa: E402

SEEN_SIZE = 224
MAX_UPLOAD = "20mb"
CONCURRENCY = 4
QUEUE_SIZE = 256


class UploadedImage(gr.Image):
    """An image input that hands the upload's path to our own safe decoder, instead of opening it with PIL first.

    `is_template` makes Gradio draw it with the standard Image component in the browser.
    """

    is_template = True

    def preprocess(self, payload):
        if payload is None or (payload.url or "").startswith("data:"):
            return super().preprocess(payload)
        return payload.path


def model_card(classifier: Classifier) -> str:
    meta = classifier.meta
    return (
        f"**Model card** · run `{meta.get('run_name', '?')}` · {meta['arch']} · "
        f"test accuracy **{meta.get('test_accuracy', 0):.2%}** on the 10,000 Fashion-MNIST test images · "
        f"best epoch {meta.get('epoch', '?')} · classes: {', '.join(classifier.class_names)}.\n\n"
        "Photos are brought to Fashion-MNIST's form first: the garment is separated from its background, "
        "cropped, centred, made light on black and shrunk to 28x28 pixels, as shown on the right."
    )


def build_app(classifier: Classifier) -> gr.Blocks:
    def predict(image_path: str | None):
        if image_path is None:
            raise gr.Error("No image: upload a photo of a garment, paste one, or take one with the webcam.")
        try:
            prediction = classifier.classify_file(image_path)
        except ImageError as exc:
            raise gr.Error(str(exc)) from None
        seen = Image.fromarray(prediction.seen).resize((SEEN_SIZE, SEEN_SIZE), Image.Resampling.NEAREST)
        return prediction.probabilities, seen

    examples_dir = classifier.path.parent / "examples"
    examples = sorted(str(p) for p in examples_dir.glob("*.png"))
    with gr.Blocks(title="Fashion-MNIST classifier", analytics_enabled=False) as app:
        gr.Markdown("# What garment is this?\nUpload a clothing photo: a product shot, or a garment on a bed or floor.")
        with gr.Row():
            with gr.Column():
                image = UploadedImage(
                    label="Photo", type="filepath", sources=["upload", "webcam", "clipboard"], elem_id="photo"
                )
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                label = gr.Label(num_top_classes=3, label="Top 3 classes", elem_id="prediction")
                seen = gr.Image(label="What the model sees (28x28, enlarged)", interactive=False, height=SEEN_SIZE)
        gr.on([image.upload, button.click], predict, inputs=image, outputs=[label, seen], api_name="predict")
        if examples:
            gr.Examples(examples, inputs=image, outputs=[label, seen], fn=predict, run_on_click=True, cache_examples=False)
        gr.Markdown(model_card(classifier))
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python demo/app.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help=f"model.pt to serve (default: ${MODEL_ENV} or the newest runs/*/model.pt)")
    parser.add_argument("--runs", default="runs", help="where to look for the newest run (default: runs)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")
    args = parser.parse_args(argv)
    try:
        classifier = Classifier(resolve_model_path(args.checkpoint, args.runs))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # one photo is tiny work; threads would only contend across concurrent requests
    app = build_app(classifier)
    print(f"Serving {classifier.path} on http://{args.host}:{args.port}", flush=True)
    app.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=MAX_UPLOAD,
        allowed_paths=[str(classifier.path.parent / "examples")],
        show_error=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
