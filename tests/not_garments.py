"""Pictures that are not garments at all, drawn from a seed: a face, a landscape, a page of text.

The demo must mostly answer them "not sure" rather than name a garment with confidence.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def face(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (400, 500), tuple(int(v) for v in rng.integers(180, 240, 3)))
    draw = ImageDraw.Draw(img)
    skin = (int(rng.integers(150, 230)), int(rng.integers(110, 180)), int(rng.integers(80, 150)))
    draw.ellipse((110, 100, 290, 340), fill=skin)
    draw.ellipse((150, 180, 185, 205), fill=(40, 30, 30))
    draw.ellipse((215, 180, 250, 205), fill=(40, 30, 30))
    draw.arc((160, 240, 240, 300), 20, 160, fill=(120, 30, 30), width=6)
    draw.pieslice((100, 60, 300, 200), 180, 360, fill=(50, 35, 20))
    draw.rectangle((150, 340, 250, 500), fill=skin)
    return img.filter(ImageFilter.GaussianBlur(1))


def landscape(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = 600, 400
    rows = np.linspace(0, 1, h)[:, None, None]
    pixels = np.broadcast_to(np.array([110, 160, 230]) * (1 - rows) + np.array([200, 220, 250]) * rows, (h, w, 3)).copy()
    horizon = (h * (0.55 + 0.1 * np.sin(np.linspace(0, 6, w) + seed))).astype(int)
    for x in range(w):
        pixels[horizon[x] :, x] = np.array([60, 120, 50]) + rng.normal(0, 10, 3)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    ImageDraw.Draw(img).ellipse((450, 40, 520, 110), fill=(255, 230, 120))
    return img


def text_page(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (420, 560), (250, 250, 245))
    draw = ImageDraw.Draw(img)
    for row in range(40, 520, 18):
        x = 30
        while x < 380:
            word = int(rng.integers(15, 60))
            draw.rectangle((x, row, x + word, row + 8), fill=(30, 30, 30))
            x += word + 8
    return img


NOT_GARMENTS = {"face": face, "landscape": landscape, "text page": text_page}
