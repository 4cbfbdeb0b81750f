"""Bring an uploaded photo to the form of a Fashion-MNIST tile, as pure functions.

Fashion-MNIST tiles were made from product photos (arXiv:1708.07747, section 2): the background
was trimmed, the longest edge resized to 28, the image sharpened, the short edge padded to 28 with
the garment centred, the intensities negated and converted to 8-bit grey.  What people upload is a
photo: a darker garment on a light, often textured or cluttered background, any size, RGB,
sometimes transparent.  Fed through a plain resize, the model sees a bright frame around a dark
blob and does no better than chance; this module redoes the paper's steps on such a photo.
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from trainer.data import normalise
from trainer.errors import UserError

SIZE = 28
MAX_PIXELS = 40_000_000  # refuse before decoding: 40 MP is more than any phone photo
MAX_FILE_BYTES = 50 * 1024 * 1024
MIN_SIDE = 8  # below this there is nothing to segment
MAX_ASPECT = 10.0  # a garment photo is never a thin strip
WORK_SIDE = 192  # the background model and the mask are computed at this size: fast, and plenty for 28x28
# colour distances from the background model, in robust standard deviations, at which the garment is cut out: the
# first makes the tile shown; the second, tighter, leaves out a garment's shadow, pale edges and what touches it, and
# the classifier looks at both (trainer.views.photo_logits; docs/real_photos.md, "Thirteenth round")
THRESHOLDS = (5.5, 13.0)
CENTRE_THRESHOLD = 3.0  # the fallback: colour distance from the middle of the picture, in robust standard deviations
MIN_GARMENT_SHARE = 0.02  # a cut-out smaller than this share of the picture is a speck, not the garment
MIN_FILL = 0.4  # a cut-out covering less of its bounding box than this is scraps of a garment (chosen on real photos)
MAX_FALLBACK_SHARE = 0.8  # a fallback cut-out larger than this share of the picture has found the background too
MAX_FALLBACK_BORDER = 0.5  # ... as has one round half the picture's border, for a cut-out that missed the middle
# a cut-out down more than this share of both side edges runs across the picture: scenery, such as the ground below a
# horizon, not a garment lying or hanging in the frame (chosen on real photos and drawn landscapes, docs/real_photos.md)
MAX_SIDE_SHARE = 0.4
OPEN_RADIUS, CLOSE_RADIUS = 1, 2  # `_clean`'s opening and closing, by squares of 2r + 1 pixels
# `_clean` keeps nothing farther than CLOSE_RADIUS from the pixels it is given, and to see that it needs one empty
# pixel beyond: its result over a box this much wider than theirs is its result over the whole picture
CLEAN_REACH = CLOSE_RADIUS + 1
BLANK_RANGE = 10.0  # a picture whose luminance and colour vary less than this (of 255) is blank
# ... and one whose most different 5x5 patch stands out from its fitted background by less than this: a blank sheet
# under a lamp's gradient or a lens's vignette (`_stands_out`; docs/reliability.md gives the figures)
BLANK_RESIDUAL = 20.0
# a tile is stretched to peak at 255, as every Fashion-MNIST tile does (254-255), by at most this factor; a garment
# whose grey levels stay below FLAT (flat white, negated to nothing) has no detail to stretch, and its outline is drawn
MAX_STRETCH = 64.0
FLAT = 255.0 / MAX_STRETCH
MIN_ELLIPSE_IOU = 0.9  # how near a photo cropped to an ellipse is to it (intersection over union, `_cropped_photo`)
COLOURED = 40  # the spread of a pixel's R, G and B above which a dark picture is a photo in colour, not a black tile
BLANK = "No garment could be told apart from the background in this picture: it looks blank."
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG includes phones' MPO files

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # pixels touching diagonally are one garment
_GREY16 = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)  # 16-bit grey to 8, rounded as to_rgb rounds
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, what Pillow's "L" uses


class ImageError(UserError, ValueError):
    """An input that cannot be used; the message is one sentence meant for the person who uploaded it."""


# --------------------------------------------------------------------------- decoding


def open_image(source: str | Path | bytes | BinaryIO, max_side: int | None = None) -> Image.Image:
    """Decode an untrusted upload to an RGB (or RGBA) image, or raise ImageError with a sentence a user understands.

    The size is checked from the header before any pixel data is decoded (decompression bombs),
    EXIF orientation is applied (phone photos), the first frame of an animation is used, and
    16-bit, CMYK and palette images are converted to RGB keeping what they show; one with transparent
    pixels to RGBA, whose transparency `cut_out` takes as the garment's outline (`to_rgb` composites it).
    With `max_side`, a JPEG is decoded at the smallest of 1/2, 1/4 or 1/8 scale that still has
    at least that many pixels on each side: a 12 MP phone photo then decodes in milliseconds.
    Other formats cannot decode at a smaller scale; with `max_side` they are reduced by an integer
    factor to the same size before any per-pixel conversion, so a 40 MP image packed into a 60 KB
    palette GIF costs about 200 MB and a second, not 2.5 GB and several seconds.
    """
    data = _read_bytes(source)
    if not data:
        raise ImageError("The file is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb warnings: our own limit is lower; others: noise about damaged files
            img = Image.open(io.BytesIO(data), formats=_formats())
    except Image.DecompressionBombError:
        raise ImageError(f"The image is too large; please upload one of at most {MAX_PIXELS // 1_000_000} megapixels.") from None
    except Image.UnidentifiedImageError:
        raise ImageError("The file is not an image in a format we can read (JPEG, PNG, GIF, WebP, BMP or TIFF).") from None
    except Exception:  # any other failure of a decoder on hostile bytes is the file's fault, not ours
        raise ImageError("The file looks like an image but is damaged and cannot be read.") from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"The image is too large ({width}x{height} pixels); please upload one of at most {MAX_PIXELS // 1_000_000} megapixels."
        )
    if width < 1 or height < 1:
        raise ImageError("The image has no pixels.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.seek(0)  # first frame of an animated GIF / WebP
            if max_side and img.format in ("JPEG", "MPO"):
                img.draft(None, (max_side, max_side))
            img.load()
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise ImageError("The image file is incomplete (it was cut off); please upload it again.") from None
        raise ImageError("The image is damaged and its pixels cannot be decoded.") from None
    except Exception:
        raise ImageError("The image is damaged and its pixels cannot be decoded.") from None
    sixteen_bit = img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG")
    _scale_low_bit_key(img, data)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block should not cost the user their upload
        pass
    if max_side and min(img.size) >= 2 * max_side:
        img = _reduce(img, min(img.size) // max_side, sixteen_bit)
    rgba = _rgba(img, sixteen_bit)
    if rgba is not None and rgba.getchannel("A").getextrema()[0] < 255:
        return rgba
    return to_rgb(img, sixteen_bit=sixteen_bit)


def _scale_low_bit_key(img: Image.Image, data: bytes) -> None:
    """A 2- or 4-bit grey PNG's colour key on Pillow's 0-255 scale: Pillow scales its pixels up to 8 bits but keeps
    the key as stored (3, not 255), so no pixel would match it."""
    key = img.info.get("transparency")
    if img.format != "PNG" or img.mode != "L" or not isinstance(key, int):
        return
    depth, colour_type = data[24], data[25]  # after the signature and IHDR's length, type, width and height
    if colour_type == 0 and depth in (2, 4):
        img.info["transparency"] = key * 255 // (2**depth - 1)


def _reduce(img: Image.Image, factor: int, sixteen_bit: bool = False) -> Image.Image:
    """Average `factor` x `factor` blocks, in a mode where averaging keeps the meaning of the pixels.

    Palette indices cannot be averaged (to RGB or RGBA first), 16-bit grey has no reducer (to 32-bit
    grey, which to_rgb scales the same way), 1-bit goes to grey; alpha is averaged premultiplied.
    """
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    elif "transparency" in img.info and (img.mode in ("1", "L", "RGB") or img.mode.startswith("I")):
        img = _rgba(img, sixteen_bit) or img  # a colour key: its alpha, before it is averaged away
    if img.mode.startswith("I;16"):
        img = img.convert("I")
    elif img.mode == "1":
        img = img.convert("L")
    try:
        return img.reduce(factor)
    except (ValueError, OSError):  # a mode Pillow cannot reduce: convert at full size, as before
        return img


@functools.cache
def _formats() -> tuple[str, ...]:
    """The decoders we allow (a smaller attack surface than all of Pillow's), those this Pillow build has."""
    Image.init()
    return tuple(f for f in FORMATS if f in Image.OPEN)


def _read_bytes(source: str | Path | bytes | BinaryIO) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        try:
            if path.is_dir():
                raise ImageError(f"{path.name} is a folder, not an image file.")
            if not path.exists():
                raise ImageError(f"The file {path.name} does not exist.")
            if not path.is_file():  # a device or a pipe, which could block or never end
                raise ImageError(f"{path.name} is not a regular file, so it cannot be read as an image.")
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ImageError(f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; please upload a smaller image.")
            data = path.read_bytes()
        except OSError as exc:  # no permission, a name too long for the file system, a disk that fails
            raise ImageError(f"The file {path.name[:100]} cannot be read: {exc.strerror or exc}.") from None
    else:
        data = source.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; please upload a smaller image.")
    return data


def to_rgb(img: Image.Image, *, sixteen_bit: bool | None = None, under: float | None = None) -> Image.Image:
    """Any Pillow mode to RGB uint8 without losing meaning.

    16-bit grey is scaled by 1/257 (Pillow's own conversion would clip everything above 255 to
    white); float images in [0, 1] are scaled to [0, 255]; transparency is composited onto the grey
    `under`, by default the one that keeps it background: black under a light cut-out, white under a dark one.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:  # a PNG's colour key (tRNS) is transparency too
        return img
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_grey(np.asarray(img), mode, sixteen_bit), "L").convert("RGB")
    rgba = _rgba(img)
    if rgba is None:
        return _convert(img, "RGB")
    rgb, alpha = rgba.convert("RGB"), rgba.getchannel("A")
    if alpha.getextrema()[1] == 0:  # entirely transparent: nothing to show; composite onto white
        return Image.new("RGB", img.size, (255, 255, 255))
    if under is None:  # transparent pixels must contrast with the garment: its luminance, weighted by its opacity
        weights = np.asarray(alpha, dtype=np.float32)
        luma = float((np.asarray(rgb.convert("L"), dtype=np.float32) * weights).sum() / weights.sum())
        under = 0.0 if luma > 127.5 else 255.0
    out = Image.new("RGB", img.size, (round(under),) * 3)
    out.paste(rgb, mask=alpha)  # in Pillow's integer arithmetic: a tenth of the time of a float composite
    return out


def _grey(a: np.ndarray, mode: str, sixteen_bit: bool | None) -> np.ndarray:
    """The pixels of an I or F image as 8-bit grey (`to_rgb`'s rules); 16 bits through a table, not in floats, so a
    40 MP picture costs tens of MB rather than hundreds."""
    if mode == "F":
        a = a.astype(np.float64)
        a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
    elif sixteen_bit or mode.startswith("I;16") or (a.size and a.max() > 255):
        if a.min() >= 0 and a.max() <= 65535:
            return _GREY16[a]
        a = a / 257.0
    # in place: by now `a` is a float copy of its own (the F branch's, the division's, or this astype's of integers)
    a = np.nan_to_num(a.astype(np.float64, copy=False), nan=0.0, posinf=255.0, neginf=0.0, copy=False)
    if a.size and a.max() > 255.0:  # wider than 16 bits (a 32-bit TIFF): scale its range instead of clipping
        a = a * (255.0 / a.max())
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _rgba(img: Image.Image, sixteen_bit: bool | None = None) -> Image.Image | None:
    """The image as RGBA (itself if it is) when it has an alpha band or a colour key (a PNG's tRNS), else None.

    Pillow's own conversion of 16-bit grey clips its greys to white: a 16-bit PNG's key (a grey level) is read here,
    its greys scaled as `to_rgb` scales them (`_grey`)."""
    if img.mode == "F":
        return None
    if img.mode.startswith("I"):
        key = img.info.get("transparency")
        if not isinstance(key, int):
            return None
        a = np.asarray(img)
        opaque = (a != key).view(np.uint8)
        opaque *= 255
        grey_image = Image.fromarray(_grey(a, img.mode, sixteen_bit), "L")
        return Image.merge("RGBA", (grey_image, grey_image, grey_image, Image.fromarray(opaque, "L")))
    if img.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in img.info:
        return None
    return img if img.mode == "RGBA" else _convert(img, "RGBA")


def _convert(img: Image.Image, mode: str) -> Image.Image:
    try:
        return img.convert(mode)
    except (ValueError, OSError):
        raise ImageError(f"The image uses a colour format ({img.mode}) that cannot be converted to RGB.") from None


# --------------------------------------------------------------------------- to Fashion-MNIST


@dataclass
class Cutout:
    """What the model is shown of a photo, and where it came from."""

    tile: np.ndarray  # 28x28 uint8, garment light on black
    box: tuple[float, float, float, float]  # (left, top, right, bottom) of the square the tile shows, in the photo's pixels
    segmented: bool  # False: the garment could not be cut out from its background, and a fallback was used
    across: bool = False  # the cut-out runs across the picture, down both side edges (`_across`): not a garment
    photo: bool = True  # False: the input already looked like a Fashion-MNIST tile (grey, light on a dark border)
    tiles: tuple[np.ndarray, ...] = ()  # the garment cut out at each of THRESHOLDS, `tile` first; only `tile` if not a photo

    def __post_init__(self) -> None:
        if not self.tiles:
            self.tiles = (self.tile,)


def to_fashion_mnist(image: Image.Image) -> np.ndarray:
    """Photo -> 28x28 uint8, garment light on black, centred, its longest edge filling the frame (see `cut_out`)."""
    return cut_out(image).tile


def cut_out(image: Image.Image) -> Cutout:
    """Photo -> Fashion-MNIST tile, with the square of the photo it shows.

    An input that already looks like Fashion-MNIST (dark border, grey) only goes to grey and to 28x28.
    Otherwise a colour model of the background is fitted to the image border (a smooth surface,
    robust to clutter touching the border, so gradients, vignetting and tinted sheets are
    background too); the garment is what differs from it in colour, not only in brightness, by more
    than each of THRESHOLDS (a tile for each: `tiles`, the first also `tile`), cleaned up
    morphologically and reduced to its main connected component(s).  When that finds
    nothing (a busy pattern behind the garment, or a garment filling the frame), or only scraps of
    it (`_scraps`: a garment close to its background in colour), the garment is taken to be what
    looks like the middle of the picture (`_centre_mask`).  A garment whose background was cut
    away (transparent) is its own outline (`_cut_along`).  Its luminance is negated, whatever it
    lies on (`_tone`), the background zeroed, and its box padded to square, resized, lightly
    sharpened and stretched to peak at 255 as Fashion-MNIST tiles do.  Raises ImageError only for a
    blank picture.
    """
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"The image is only {width}x{height} pixels; it must be at least {MIN_SIDE} pixels on each side.")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"The image is a thin strip ({width}x{height} pixels), not a photo of a garment.")
    scale = min(1.0, WORK_SIDE / max(width, height))  # everything below runs on at most 192x192
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    to_photo = (width / size[0], height / size[1])
    rgba = _rgba(image)
    if rgba is None:
        rgb = to_rgb(image)
    elif image.size == (SIZE, SIZE):  # a tile, its black keyed transparent: back on black, it passes through as one
        rgb = to_rgb(rgba, under=0.0)
    else:
        outline = _outline(rgba.getchannel("A"), size)
        if outline is not None:
            return _cut_along(rgba, outline, to_photo)
        rgb = _filled(rgba, size)  # transparent corners or frame: the photo's own background, continued
    # integer pre-reduction (reducing_gap): 2x faster on 12 MP
    work = rgb.resize(size, Image.Resampling.BOX, reducing_gap=2.0) if rgb.size != size else rgb
    if _has_dark_border(work) and not _coloured(work):  # a tile is grey; a garment in colour on black is a photo
        return _pass_through(work, to_photo)

    x = np.asarray(work, dtype=np.float32)
    feats = _opponent(x)
    low, high = np.percentile(feats[0, ::2, ::2], (1, 99))  # every other pixel: the same range in a quarter of the time
    chroma = feats[1:]
    if float(high - low) < BLANK_RANGE and float(np.abs(chroma - np.median(chroma, axis=(1, 2))[:, None, None]).max()) < BLANK_RANGE:
        raise ImageError(BLANK)
    background, sigma = _fit_background(feats)
    if _stands_out(feats - background) < BLANK_RESIDUAL:
        raise ImageError(BLANK)
    scaled = (feats - background) / sigma
    scaled *= scaled
    distance2 = scaled.sum(axis=0)
    centre = functools.cache(lambda: _centre_mask(feats))  # the fallback, found at most once for all thresholds
    masks = [_garment(distance2, threshold, centre) for threshold in THRESHOLDS]
    mask, segmented = masks[0]
    if not segmented:
        colour = np.median(feats[:, ~mask], axis=1) if (~mask).any() else feats.mean(axis=(1, 2))
        background = np.broadcast_to(colour[:, None, None], feats.shape)
    value = _tone(feats[0], background[0], mask)
    tiles = tuple(_tile(value, garment) for garment, _ in masks)
    box = _bounds(mask)
    square = _square_box(box[0].start, box[1].start, value[box].shape, to_photo)
    return Cutout(tiles[0], square, segmented, across=segmented and _across(mask), tiles=tiles)


def _stands_out(residual: np.ndarray) -> float:
    """How far the most different 5x5 patch stands out from the fitted background, over its channels: averaging a
    patch quiets a sensor's noise, and a garment of a few hundred pixels, even a small one, keeps its contrast."""
    from scipy import ndimage  # as `_main_components`: imported once a photo is cut out, not by every training run

    patches = ndimage.uniform_filter(residual, size=(1, 5, 5), mode="nearest")
    return float((patches.max(axis=(1, 2)) - patches.min(axis=(1, 2))).max())


def _garment(distance2: np.ndarray, threshold: float, centre: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """The garment's mask where it differs from the background by `threshold`, and whether it was cut out (False:
    the fallback's colour of the middle of the picture)."""
    mask = _pieces(distance2 > threshold**2)
    segmented = bool(mask.mean() >= MIN_GARMENT_SHARE)
    if not segmented or _scraps(mask):
        # nothing found, or only scraps of a garment close to its background in colour (its print, folds and
        # shadows): the colour of the middle of the picture usually finds it whole
        fallback = centre()
        if not segmented or (not _scraps(fallback) and fallback.mean() < MAX_FALLBACK_SHARE):
            return fallback, False
    elif _misses_middle(mask):
        # a garment filling the frame: fitted to a border that is mostly garment, the background is the garment's
        # colour, and what stands out is the sheet beside it (between trouser legs, under a sleeve); but where the
        # middle is the sheet (a pair of shoes apart), its colour finds the sheet, round the picture's border
        fallback = centre()
        if not _misses_middle(fallback) and fallback.mean() < MAX_FALLBACK_SHARE and _border_share(fallback) < MAX_FALLBACK_BORDER:
            return fallback, False
    return mask, segmented


def _misses_middle(mask: np.ndarray) -> bool:
    """Whether the mask leaves out the whole middle fifth of the picture, each way."""
    h, w = mask.shape
    return not mask[round(0.4 * h):round(0.6 * h) + 1, round(0.4 * w):round(0.6 * w) + 1].any()


def _ring(pixels: np.ndarray) -> np.ndarray:
    """The picture's outermost pixels, each once."""
    return np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])


def _border_share(mask: np.ndarray) -> float:
    """The share of the picture's outermost pixels that the mask covers."""
    return float(_ring(mask).mean())


def _pieces(above: np.ndarray) -> np.ndarray:
    """The garment's pieces among the pixels above a threshold: `_clean`, then `_main_components`, run over the box of
    those pixels and as far round it as `_clean` reaches, which gives the same mask as the whole picture in less time."""
    mask = np.zeros_like(above)
    if above.any():
        window = _bounds(above, margin=CLEAN_REACH)
        mask[window] = _main_components(_clean(above[window]), (window[0].start, window[1].start), above.shape)
    return mask


def _tone(luma: np.ndarray, bg_luma: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The picture's grey levels as Fashion-MNIST's, from the first cut-out: the paper's negation of the product's
    luminance, whatever the garment lies on. Fashion-MNIST's products were photographed on white, so a light garment is
    dim in its tiles; shown light because it lay on a dark floor, it read as a dark garment (docs/real_photos.md,
    "Twenty-eighth round")."""
    if float(np.median(luma[mask] - bg_luma[mask])) > 0.0:
        # lighter than what it lies on: neither that nor the garment's own lightest part is the photo's white, so the
        # photo is taken as exposed (scaled to its lightest part, a white garment would be erased)
        return 255.0 - luma
    # the photo's white point (the background, or the garment's lightest part) is scaled towards 255 first, so a dim
    # photo reads as white (the background's 95th percentile from every other pixel: it is a smooth surface)
    white = max(float(np.percentile(bg_luma[::2, ::2], 95)), float(np.percentile(luma[mask], 99)))
    gain = min(max(255.0 / max(white, 1.0), 1.0), 1.5)
    return np.clip(255.0 - luma * gain, 0.0, 255.0)


def _tile(value: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The garment's grey levels, the background zeroed with a soft edge, cropped to its box and finished."""
    box = _bounds(mask)
    # the blur reaches one pixel: the box and a ring round it, the image's edge repeated beyond it as Pillow does
    rows, cols = (np.clip(np.arange(b.start - 1, b.stop + 1), 0, n - 1) for b, n in zip(box, mask.shape))
    ring = mask[np.ix_(rows, cols)]
    soft = np.asarray(Image.fromarray(ring.astype(np.uint8) * 255).filter(ImageFilter.BoxBlur(0.6)), dtype=np.float32)[1:-1, 1:-1] / 255.0
    garment = value[box] * soft
    if float(np.percentile(garment[mask[box]], 75)) < FLAT:  # mostly flat white, negated to nothing: the outline, mid-grey,
        garment = np.maximum(garment * (255.0 / max(float(garment.max()), FLAT)), 128.0 * soft)  # its marks on top
    return _finish(garment)


def _square_box(top: int, left: int, shape: tuple[int, int], to_photo: tuple[float, float]) -> tuple[float, float, float, float]:
    """The square `_finish` pads a crop at (top, left) of this shape to, in the photo's pixels."""
    side, pad_top, pad_left = _square_padding(*shape)
    x0, y0 = left - pad_left, top - pad_top
    return (x0 * to_photo[0], y0 * to_photo[1], (x0 + side) * to_photo[0], (y0 + side) * to_photo[1])


def _square_padding(h: int, w: int) -> tuple[int, int, int]:
    """The side of the square an h x w crop is padded to, and where the crop sits in it (top, left): centred."""
    side = max(h, w)
    return side, (side - h) // 2, (side - w) // 2


def _bounds(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """The rows and columns of the smallest box around a non-empty mask's pixels, `margin` wider on each side within
    the mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, h)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, w)))


def _across(mask: np.ndarray) -> bool:
    """A garment lies or hangs within the frame; a cut-out that runs down both side edges for much of their height is
    a band across the picture, such as the ground below a horizon, which the background model took for a garment."""
    return float(mask[:, 0].mean()) > MAX_SIDE_SHARE and float(mask[:, -1].mean()) > MAX_SIDE_SHARE


def _scraps(mask: np.ndarray) -> bool:
    """A garment is one solid shape: pieces scattered over less than MIN_FILL of their box are not one."""
    return float(mask.sum()) < MIN_FILL * mask[_bounds(mask)].size


def _centre_mask(feats: np.ndarray) -> np.ndarray:
    """The fallback garment: the pixels that look like the middle of the picture, joined to it.

    People centre what they photograph; when the border tells nothing (the garment fills the frame, or
    lies on a loud pattern), the colour of the central patch is a better model of the garment than the
    border is of the background.  If even that finds too little, the central 80% of the picture is used.
    """
    _, h, w = feats.shape
    centre = feats[:, int(0.4 * h) : int(0.6 * h) + 1, int(0.4 * w) : int(0.6 * w) + 1].reshape(3, -1)
    colour = np.median(centre, axis=1, keepdims=True)
    spread = np.maximum(1.4826 * np.median(np.abs(centre - colour), axis=1, keepdims=True), np.array([[12.0], [8.0], [8.0]], dtype=np.float32))
    near = ((((feats - colour[..., None]) / spread[..., None]) ** 2).sum(axis=0)) < CENTRE_THRESHOLD**2
    mask = _pieces(near)
    if mask.mean() >= MIN_GARMENT_SHARE:
        return mask
    mask = np.zeros((h, w), dtype=bool)
    mask[int(0.1 * h) : int(0.9 * h) + 1, int(0.1 * w) : int(0.9 * w) + 1] = True
    return mask


def _outline(alpha: Image.Image, size: tuple[int, int]) -> np.ndarray | None:
    """The garment's outline at `size`, where its background was cut away (transparent round most of the border, as
    background-removal apps and catalogues save garments), or None."""
    opaque = np.asarray(alpha.resize(size, Image.Resampling.BOX) if alpha.size != size else alpha) >= 128
    if float(np.mean(~_ring(opaque))) < 0.5:  # however small what is left opaque, it was left so on purpose
        return None
    mask = _pieces(opaque)
    return mask if mask.any() and not _cropped_photo(mask) else None


def _cropped_photo(mask: np.ndarray) -> bool:
    """Whether an opaque part is a photo cropped to a circle or an ellipse (as apps crop pictures), not a garment: it is
    near enough the ellipse the picture's frame inscribes. A garment cut out tight to its edges spans the picture too,
    but no garment is that ellipse."""
    h, w = mask.shape
    rows, cols = np.ogrid[:h, :w]
    ellipse = ((rows + 0.5) / h * 2 - 1) ** 2 + ((cols + 0.5) / w * 2 - 1) ** 2 <= 1
    return float((mask & ellipse).sum()) > MIN_ELLIPSE_IOU * float((mask | ellipse).sum())


def _filled(rgba: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The picture at `size`, each transparent pixel given the colour of the nearest opaque one: what lies round a
    photo's transparent corners or frame is its own background, continued (a picture with next to nothing opaque
    becomes that, and blank)."""
    from scipy import ndimage

    rgb, alpha = rgba.convert("RGB"), rgba.getchannel("A")
    if rgb.size != size:
        rgb, alpha = (band.resize(size, Image.Resampling.BOX, reducing_gap=2.0) for band in (rgb, alpha))
    transparent = np.asarray(alpha) < 128
    if transparent.all():
        return Image.new("RGB", size, (255, 255, 255))
    nearest = ndimage.distance_transform_edt(transparent, return_distances=False, return_indices=True)
    return Image.fromarray(np.asarray(rgb)[tuple(nearest)])


def _cut_along(rgba: Image.Image, outline: np.ndarray, to_photo: tuple[float, float]) -> Cutout:
    """A garment whose background was cut away: its outline is known, and it is taken as a product photographed on
    white, its luminance negated as the paper did (which keeps a light garment dim, as `_tone` does, and its edges
    fading to the background); the tighter cut-out is the same."""
    on_white = to_rgb(rgba, under=255.0)
    size = outline.shape[::-1]
    if on_white.size != size:
        on_white = on_white.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
    value = 255.0 - _opponent(np.asarray(on_white, dtype=np.float32))[0]
    tile = _tile(value, outline)
    box = _bounds(outline)
    square = _square_box(box[0].start, box[1].start, value[box].shape, to_photo)
    return Cutout(tile, square, True, tiles=(tile,) * len(THRESHOLDS))


def _has_dark_border(rgb: Image.Image) -> bool:
    """Fashion-MNIST-like inputs have black borders, which no ordinary photo background is."""
    grey = np.asarray(rgb.convert("L"))
    ring = _ring(grey)
    return float(np.mean(ring < 48)) >= 0.5 and float(np.median(ring)) < 32


def _coloured(rgb: Image.Image) -> bool:
    """Whether some of the picture is clearly in colour (a maroon or navy garment), which a grey tile never is."""
    x = np.asarray(rgb, dtype=np.int16)
    return float(np.percentile(x.max(axis=2) - x.min(axis=2), 99)) >= COLOURED


def _pass_through(rgb: Image.Image, to_photo: tuple[float, float]) -> Cutout:
    """Already light on black: a 28x28 tile is returned as is; anything else goes to grey and 28x28.

    Only a garment clearly smaller than the picture (a dark photo with wide margins) is cropped
    first; cropping a tile-like image to its bright pixels would rescale it and lose its dim edges.
    """
    grey = np.asarray(rgb.convert("L"))
    h, w = grey.shape
    if grey.shape == (SIZE, SIZE):
        return Cutout(grey.copy(), (0.0, 0.0, SIZE * to_photo[0], SIZE * to_photo[1]), True, photo=False)
    on = grey > 32
    if not on.any():
        raise ImageError("The picture is blank: there is nothing but a dark background in it.")
    box = _bounds(on)
    top, left = 0, 0
    if max(on[box].shape) < 0.85 * max(h, w):  # true of 0.2% of real tiles
        grey = grey[box]
        top, left = box[0].start, box[1].start
    tile = _finish(grey.astype(np.float32), sharpen=False, stretch=False)
    return Cutout(tile, _square_box(top, left, grey.shape, to_photo), True, photo=False)


def _finish(crop: np.ndarray, sharpen: bool = True, stretch: bool = True) -> np.ndarray:
    """Pad to square keeping the garment centred, resize the longest edge to 28, sharpen, stretch to 255."""
    h, w = crop.shape
    side, top, left = _square_padding(h, w)
    square = np.zeros((side, side), dtype=np.uint8)
    square[top : top + h, left : left + w] = np.clip(np.rint(crop), 0, 255)
    img = Image.fromarray(square)
    if side != SIZE:
        img = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS if side > SIZE else Image.Resampling.BICUBIC)
    if sharpen:
        img = img.filter(ImageFilter.UnsharpMask(radius=1.0, percent=30, threshold=0))  # light: stronger measured worse
    out = np.asarray(img, dtype=np.float32)
    peak = float(out.max())
    if stretch and peak > 0:
        out = out * min(255.0 / peak, MAX_STRETCH)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _opponent(x: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) -> (3, H, W): luma and two opponent chroma axes, nearly decorrelated, so a per-axis scale is
    meaningful.  Channels first: every per-pixel step after this runs over contiguous rows, not strided triples."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    luma = _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b  # not x @ _LUMA: no BLAS threads for a tiny product
    return np.stack([luma, r - g, 0.5 * (r + g) - b])


def _fit_background(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit a smooth (quadratic) colour surface to the border band, trimming outliers (clutter, a garment touching the edge).

    Returns the surface over the whole image, (3, H, W) as `feats`, and a robust per-channel noise scale (texture,
    JPEG), (3, 1, 1) to divide it by.
    """
    _, h, w = feats.shape
    ys_all, xs_all, design = _border_samples(h, w)
    samples = feats[:, ys_all, xs_all].T.astype(np.float64)
    floor = np.array([2.5, 2.0, 2.0], dtype=np.float32)
    keep = np.ones(len(samples), dtype=bool)
    for _ in range(3):
        coef = _least_squares(design[keep], samples[keep])
        resid = samples - design @ coef
        sigma = np.maximum(1.4826 * np.median(np.abs(resid[keep]), axis=0), floor)
        dist = ((resid / sigma) ** 2).sum(axis=1)
        keep = dist < max(3.5**2, float(np.percentile(dist, 60)))
    coef = coef.astype(np.float32)[..., None, None]
    uu = np.linspace(-1, 1, w, dtype=np.float32)[None, None, :]
    vv = np.linspace(-1, 1, h, dtype=np.float32)[None, :, None]
    # a(y) + u * (b(y) + u * c): one pass over the image per term instead of six, in place
    surface = (coef[1] + vv * coef[3]) + uu * coef[4]
    surface *= uu
    surface += coef[0] + vv * (coef[2] + vv * coef[5])
    return surface, sigma.astype(np.float32)[:, None, None]


@functools.lru_cache(maxsize=8)
def _border_samples(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where `_fit_background` samples an h x w image's border band, and its quadratic design matrix there: the
    same for every photo of that size, so made once."""
    band = max(2, round(0.03 * min(h, w)))
    step = max(1, round(band * 2 * (h + w) / 800))  # ~800 samples are plenty for 6 coefficients per channel
    ys, xs = np.arange(h)[::step], np.arange(w)[::step]
    near, far_y, far_x = np.arange(band), h - 1 - np.arange(band), w - 1 - np.arange(band)
    ys_all = np.concatenate([np.repeat(near, len(xs)), np.repeat(far_y, len(xs)), np.tile(ys, 2 * band)])
    xs_all = np.concatenate([np.tile(xs, 2 * band), np.repeat(near, len(ys)), np.repeat(far_x, len(ys))])
    u = (xs_all / max(w - 1, 1) * 2 - 1).astype(np.float32)
    v = (ys_all / max(h - 1, 1) * 2 - 1).astype(np.float32)
    design = np.stack([np.ones_like(u), u, v, u * v, u * u, v * v], axis=1).astype(np.float64)
    for array in (ys_all, xs_all, design):
        array.flags.writeable = False  # shared between calls
    return ys_all, xs_all, design


def _least_squares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normal equations: np.linalg.lstsq's SVD is slow for six unknowns, and products this small run on one thread, so a
    busy CPU does not stall them."""
    return np.linalg.solve(a.T @ a + 1e-6 * np.eye(a.shape[1]), a.T @ b)


def _clean(mask: np.ndarray) -> np.ndarray:
    """Opening removes texture specks and thin grain lines; closing fills small gaps inside the garment."""
    mask = _dilate(~_dilate(~mask, OPEN_RADIUS), OPEN_RADIUS)
    return ~_dilate(~_dilate(mask, CLOSE_RADIUS), CLOSE_RADIUS)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)-square, as shifted ORs (separable); outside the image counts as empty."""
    out = mask.copy()
    for k in range(1, r + 1):
        out[:, k:] |= mask[:, :-k]
        out[:, :-k] |= mask[:, k:]
    tmp = out.copy()
    for k in range(1, r + 1):
        out[k:] |= tmp[:-k]
        out[:-k] |= tmp[k:]
    return out


def _main_components(mask: np.ndarray, origin: tuple[int, int] = (0, 0), frame: tuple[int, int] | None = None) -> np.ndarray:
    """Keep the garment: the largest central component plus sizeable pieces next to it; clutter goes.

    `mask` may be a part of a picture of shape `frame`, at `origin` (top, left), with nothing outside it: where each
    piece lies in the whole picture decides which is the garment."""
    from scipy import ndimage  # here, not at the top: every training run imports this module, SciPy adds 0.3 s to its start

    h, w = frame or mask.shape
    labels, n = ndimage.label(mask, structure=EIGHT_CONNECTED, output=np.intp)  # bincount's type: no copy
    if n == 0:
        return mask
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    boxes = ndimage.find_objects(labels)
    top, bottom, left, right = (np.array([(b[0].start, b[0].stop, b[1].start, b[1].stop) for b in boxes]) + np.repeat(origin, 2)).T
    cy, cx = (top + bottom) / 2 / h - 0.5, (left + right) / 2 / w - 0.5
    off_centre = np.sqrt(cx**2 + cy**2) / np.sqrt(0.5)
    touches = (top == 0) | (left == 0) | (bottom == h) | (right == w)
    # clutter is typically cut off by the frame and off-centre; the garment is whole and nearer the middle
    score = area * (1.0 - 0.5 * off_centre) * np.where(touches, 0.3, 1.0)
    best = int(np.argmax(score))
    gap = 0.015 * max(h, w)
    # separate pieces overlapping the garment's box: a strap, a sole, a far sleeve
    near = (top <= bottom[best] + gap) & (bottom >= top[best] - gap) & (left <= right[best] + gap) & (right >= left[best] - gap)
    keep = near & (area >= 0.03 * area[best]) & ~(touches & ~touches[best])
    keep[best] = True
    return np.concatenate([[False], keep]).take(labels)  # 2x faster than indexing


# --------------------------------------------------------------------------- to tensors


def normalise_tile(tile: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """A 28x28 uint8 tile as the model's input: float32 (1, 28, 28), normalised as in training."""
    return normalise(torch.tensor(np.asarray(tile, dtype=np.uint8))[None], mean, std)[0]


def preprocess(image: Image.Image, mean: float, std: float) -> torch.Tensor:
    """The model's input for a photo: float32 (1, 28, 28), normalised as in training."""
    return normalise_tile(to_fashion_mnist(image), mean, std)


def naive_preprocess(image: Image.Image, mean: float, std: float) -> torch.Tensor:
    """Plain grey + resize to 28x28, no segmentation or negation: the baseline the benchmark compares against."""
    grey = to_rgb(image).convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return normalise_tile(np.asarray(grey), mean, std)
