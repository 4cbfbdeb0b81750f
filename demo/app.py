"""`python demo/app.py [--checkpoint PATH] [--host 127.0.0.1] [--port 7860]`: classify clothing photos in a web app.

The app loads a run's `model.pt` (the newest `runs/*/model.pt` by default) and serves the page of
`demo/interface.py`. The model is loaded before Gradio is imported, so a missing or bad model file is refused at
once, not after seconds of imports.
"""

import argparse
import logging
import signal
import sys
from types import FrameType

from trainer.errors import UserError, fail

try:  # torch imports for a second or two after the command starts: a Ctrl-C then ends it as one later does
    import torch

    from trainer.predict import MODEL_ENV, Classifier, resolve_model_path
except KeyboardInterrupt:
    sys.exit(130)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python demo/app.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help=f"model.pt to serve (default: ${MODEL_ENV} or the newest runs/*/model.pt)")
    parser.add_argument("--runs", default="runs", help="where to look for the newest run (default: runs)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=port, default=7860)
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link (needs internet)")
    args = parser.parse_args(argv)
    try:
        classifier = Classifier(resolve_model_path(args.checkpoint, args.runs))
    except UserError as exc:
        return fail(exc)
    from interface import MAX_UPLOAD, build_app  # demo/interface.py, beside this script

    torch.set_num_threads(1)  # one photo is tiny work; threads would only contend across concurrent requests
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    app = build_app(classifier)
    print(f"Serving {classifier.path} on http://{args.host}:{args.port}", flush=True)
    try:
        app.launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            max_file_size=MAX_UPLOAD,
            allowed_paths=[str(classifier.path.parent / "examples")],
            show_error=False,  # our gr.Error sentences are shown; other exceptions' text (paths, internals) is not
            run_history=False,  # no run history page, and no runs uploaded to a Hugging Face bucket with our token
        )
    except KeyboardInterrupt:  # stopped while starting
        pass
    except OSError:  # Gradio's own message names its launch() arguments, which a user of this script does not see
        return fail(f"cannot serve on {args.host}:{args.port}: the port is taken or {args.host} is not an address of "
                    "this machine; choose another --port or --host")
    return 0


def port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return int(text)


def stop_like_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (`kill`, a service manager's stop) closes the server as Ctrl-C does, deleting its temporary files."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while torch or Gradio is still importing: no traceback for that
        sys.exit(130)
