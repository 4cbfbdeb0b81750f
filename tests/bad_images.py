"""Every bad upload of the demo issue, written as files: one source for the unit tests and the demo's server tests.

`BAD_INPUTS` says what must happen to each: "refused" (open_image or to_fashion_mnist raises
ImageError with one clear sentence) or "predicted" (it decodes to a sensible picture that
to_fashion_mnist turns into a 28x28 tile).  `write_bad_inputs(folder)` writes them all, in well
under a second and a few hundred KB.  The builders are public so that tests checking one case
more closely (where a pixel must land, how 16 bits are scaled) use the very same file.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from benchmarks.photo_like import make_photo_like

# --------------------------------------------------------------------------- shared pieces


def as_bytes(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def garment_mask(shape: tuple[int, int], box: tuple[float, float, float, float]) -> Image.Image:
    """A T-shirt silhouette filling `box` (left, top, right, bottom), as an L mask."""
    l, t, r, b = box
    w, h = r - l, b - t
    pts = [(0.3, 0), (0.7, 0), (1.0, 0.15), (0.88, 0.38), (0.78, 0.3), (0.78, 1.0), (0.22, 1.0), (0.22, 0.3), (0.12, 0.38), (0.0, 0.15)]
    mask = Image.new("L", shape, 0)
    ImageDraw.Draw(mask).polygon([(l + x * w, t + y * h) for x, y in pts], fill=255)
    return mask


def shirt_tile() -> np.ndarray:
    """A synthetic 28x28 "tile": a T-shirt filling the frame, light on black, with some inner shading."""
    mask = np.asarray(garment_mask((28, 28), (0, 0, 28, 28)), dtype=np.float32) / 255
    shade = np.linspace(170, 240, 28, dtype=np.float32)[None, :]
    return np.clip(mask * shade, 0, 255).astype(np.uint8)


def photo(seed: int = 0) -> Image.Image:
    """A photo-like RGB picture of the synthetic T-shirt (made like the benchmark's, not from the real data)."""
    return make_photo_like(shirt_tile(), np.random.default_rng(seed))


def png_with_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims width x height: what a decompression bomb looks like before decoding."""
    data = bytearray(as_bytes(Image.new("L", (1, 1)), "PNG"))
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[start : start + 17])) & 0xFFFFFFFF
    data[start + 17 : start + 21] = struct.pack(">I", crc)
    return bytes(data)


def low_bit_grey_png(grey: np.ndarray, depth: int, key: int) -> bytes:
    """A grey PNG of 1, 2 or 4 bits a pixel with a colour key (tRNS), which Pillow reads but cannot write."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    bits = np.unpackbits(grey.astype(np.uint8)[..., None], axis=-1)[..., 8 - depth :]  # each pixel's low bits
    rows = b"".join(b"\0" + np.packbits(row.ravel()).tobytes() for row in bits)  # filter type 0, rows padded to bytes
    height, width = grey.shape
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0))
            + chunk(b"tRNS", struct.pack(">H", key)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- the builders, one per bad input

CMYK_SIZE, CMYK_BOX = (300, 240), (80, 30, 220, 210)
PALETTE_SIZE, PALETTE_BOX = (200, 260), (20, 30, 180, 230)
CUTOUT_SIZE, CUTOUT_BOX = (240, 300), (20, 40, 220, 260)


def photo_jpeg(seed: int = 0) -> bytes:
    return as_bytes(photo(seed), "JPEG", quality=85)


def truncated_jpeg() -> bytes:
    """The first half of a JPEG: an upload cut off mid-transfer."""
    data = photo_jpeg(2)
    return data[: len(data) // 2]


def corrupt_png() -> bytes:
    """A PNG whose compressed pixel stream has been overwritten with zeros."""
    data = bytearray(as_bytes(Image.new("RGB", (64, 64), (200, 100, 50)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 4 : idat + 20] = b"\x00" * 16
    return bytes(data)


def sixteen_bit_png() -> bytes:
    """The photo as 16-bit grey (mode I;16), as scanners and some editors save it."""
    grey = np.asarray(photo(5).convert("L"), dtype=np.uint16) * 257
    return as_bytes(Image.fromarray(grey), "PNG")


def cmyk_jpeg() -> bytes:
    """A dark garment on white paper, in CMYK as print workflows save it."""
    img = Image.new("CMYK", CMYK_SIZE, (0, 0, 0, 0))
    img.paste((30, 20, 10, 200), mask=garment_mask(CMYK_SIZE, CMYK_BOX))
    return as_bytes(img, "JPEG", quality=90)


def palette_png_transparency() -> bytes:
    """A navy garment on a transparent palette entry that is black underneath."""
    img = Image.new("P", PALETTE_SIZE, 0)
    img.putpalette([0, 0, 0, 40, 40, 60] + [0] * 762)
    img.paste(1, mask=garment_mask(PALETTE_SIZE, PALETTE_BOX))
    return as_bytes(img, "PNG", transparency=0)


def garment_alone(grey: int, band: int | None = None, hidden: tuple[int, int, int] = (0, 0, 0), feather: float = 0.0,
                  opacity: int = 255, size: tuple[int, int] = CUTOUT_SIZE, box: tuple[int, int, int, int] = CUTOUT_BOX) -> Image.Image:
    """A garment of `grey` alone, its background cut away (transparent pixels of colour `hidden`), as background-removal
    apps leave one: edges softened by `feather` pixels, the garment `opacity` opaque, with an opaque band of grey `band`
    across its middle."""
    mask = garment_mask(size, box)
    alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(feather)) if feather else mask, dtype=np.float32) * opacity / 255
    colour = np.zeros((size[1], size[0], 3), np.float32) + np.array(hidden, np.float32)
    colour[alpha > 0] = grey
    if band is not None:
        rows = slice(box[1] + (box[3] - box[1]) // 2, box[1] + (box[3] - box[1]) // 2 + (box[3] - box[1]) // 6)
        inside = np.asarray(mask)[rows] > 0
        colour[rows][inside] = band
        alpha[rows][inside] = 255
    return Image.fromarray(np.clip(np.rint(np.dstack([colour, alpha])), 0, 255).astype(np.uint8), "RGBA")


def alpha_cutout(grey: int = 50, mode: str = "RGBA") -> bytes:
    """`garment_alone` as a PNG of `mode`, the garment's own grey hidden under its transparent pixels."""
    return as_bytes(garment_alone(grey, hidden=(grey, grey, grey)).convert(mode), "PNG")


def animated_gif() -> bytes:
    """Two frames: a dark square on white, then solid blue; only the first is a picture of anything."""
    first = Image.new("RGB", (120, 100), (250, 250, 250))
    ImageDraw.Draw(first).rectangle([40, 20, 80, 80], fill=(20, 20, 20))
    second = Image.new("RGB", (120, 100), (0, 0, 255))
    return as_bytes(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def flat_png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    return as_bytes(Image.new("RGB", size, colour), "PNG")


LONG_NAME = "my_favourite_summer_t-shirt_" * 7 + "photo.jpg"  # 205 characters, under the usual 255-byte limit

# name -> (what must happen, file name, builder)
_CASES: dict[str, tuple[str, str, Callable[[], bytes]]] = {
    "empty": ("refused", "empty.png", lambda: b""),
    "not_an_image": ("refused", "notes.jpg", lambda: b"hello, this is not a picture\n" * 10),
    "pdf_as_png": ("refused", "document.png", lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"),
    "random_bytes": ("refused", "noise.webp", lambda: bytes(range(256)) * 4),
    "truncated_jpeg": ("refused", "cut_off.jpg", truncated_jpeg),
    "corrupt_png": ("refused", "corrupt.png", corrupt_png),
    "decompression_bomb": ("refused", "bomb.png", lambda: png_with_size(30000, 30000)),
    "huge_dimensions": ("refused", "huge.png", lambda: png_with_size(7000, 7000)),
    "one_pixel": ("refused", "one_pixel.png", lambda: flat_png((1, 1), (255, 255, 255))),
    "thin_strip": ("refused", "strip.png", lambda: flat_png((2000, 20), (255, 255, 255))),
    "blank_light": ("refused", "blank_wall.png", lambda: flat_png((300, 200), (240, 235, 230))),
    "blank_dark": ("refused", "lens_cap.png", lambda: flat_png((300, 200), (0, 0, 0))),
    "sixteen_bit_png": ("predicted", "sixteen_bit.png", sixteen_bit_png),
    "cmyk_jpeg": ("predicted", "cmyk.jpg", cmyk_jpeg),
    "palette_png_transparency": ("predicted", "palette.png", palette_png_transparency),
    "animated_gif": ("predicted", "animated.gif", animated_gif),
    "rgba_cutout": ("predicted", "cutout.png", alpha_cutout),
    "long_file_name": ("predicted", LONG_NAME, lambda: photo_jpeg(1)),
    "photo": ("predicted", "photo.jpg", photo_jpeg),
}

BAD_INPUTS: dict[str, str] = {name: expect for name, (expect, _, _) in _CASES.items()}


def write_bad_inputs(folder: Path) -> dict[str, Path]:
    """Write every input of BAD_INPUTS into `folder` (created if needed); returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (_, file_name, build) in _CASES.items():
        path = folder / file_name
        path.write_bytes(build())
        paths[name] = path
    return paths
