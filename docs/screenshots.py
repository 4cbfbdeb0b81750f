"""Take the README's screenshots: each TensorBoard tab and the demo, from a real run, in headless Chromium.

    python -m docs.screenshots runs/<run>      # from the project root: docs/tensorboard_<tab>.png, docs/demo.png
    python -m docs.screenshots runs/<run> --tabs explanations --no-demo --photo PHOTO   # docs/demo_explained.png too

Playwright comes with the test extra (`pip install -e ".[test]"`); Chromium from Debian (`apt-get install -y chromium`).
"""

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.servers import demo_server, free_port, serving
from trainer.errors import fail

DOCS = Path(__file__).resolve().parent
# No --disable-gpu: the Projector tab needs WebGL, which SwiftShader renders in software.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
]
TABS = ["scalars", "images", "graphs", "projector", "pr_curves", "hparams", "text", "explanations"]


def show_explanations(page) -> None:
    """The Images tab narrowed to test/mistakes_explained, at its actual size so that the maps can be read."""
    page.locator("input").nth(1).fill("mistakes_explained")  # TensorBoard's tag filter (the first is the runs')
    page.get_by_text("Show actual image size").click()
    page.set_viewport_size({"width": 2400, "height": 1100})
    page.wait_for_timeout(2000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tabs", nargs="*", default=TABS, choices=TABS, help="TensorBoard tabs to capture (default: all)")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo screenshot")
    parser.add_argument("--photo", type=Path, help="a photo to explain in docs/demo_explained.png (not copied anywhere)")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the PNGs go (default: docs/)")
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    if not (run_dir / "model.pt").is_file():
        sys.exit(fail(f"{args.run_dir} holds no model.pt: give the directory of a finished run"))
    tb_port, demo_port = free_port(), free_port()
    logs = Path(tempfile.mkdtemp(prefix="screenshots-"))
    tensorboard = [sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir.parent), "--host", "127.0.0.1", "--port", str(tb_port)]
    with ExitStack() as stack:
        stack.enter_context(serving(tensorboard, f"http://127.0.0.1:{tb_port}/data/runs", logs / "tensorboard.log"))
        if not args.no_demo or args.photo:
            stack.enter_context(demo_server(run_dir / "model.pt", logs / "demo.log", demo_port))
        browser = stack.enter_context(sync_playwright()).chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for tab in args.tabs:  # a page of its own for each: a tab changed in place keeps the last one's hidden inputs
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{tb_port}/?runFilter={run_dir.name}#{'images' if tab == 'explanations' else tab}")
            page.wait_for_timeout(6000 if tab in ("projector", "graphs") else 3500)
            if tab == "explanations":
                show_explanations(page)
            page.screenshot(path=str(args.out / f"tensorboard_{tab}.png"))
            page.close()
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        if not args.no_demo:
            page.goto(f"http://127.0.0.1:{demo_port}")
            page.wait_for_timeout(2000)
            example = sorted((run_dir / "examples").glob("*.png"))[0]
            page.locator("#photo input[type=file]").set_input_files(str(example))
            page.wait_for_timeout(3000)
            page.screenshot(path=str(args.out / "demo.png"), full_page=True)
        if args.photo:
            page.goto(f"http://127.0.0.1:{demo_port}")
            page.wait_for_timeout(2000)
            page.locator("#photo input[type=file]").set_input_files(str(args.photo))
            page.locator("#explained-photo img").wait_for(timeout=60_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(args.out / "demo_explained.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
