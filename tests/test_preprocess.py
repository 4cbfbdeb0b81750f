"""The demo's photo preprocessing: photo-like inputs, Fashion-MNIST pass-through, and every kind of bad upload."""

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFile, ImageFilter

from benchmarks.photo_like import build_benchmark, cut_away, load_test_set, make_photo_like
from tests.bad_images import (
    BAD_INPUTS,
    CMYK_BOX,
    CUTOUT_BOX,
    LONG_NAME,
    PALETTE_BOX,
    alpha_cutout,
    animated_gif,
    as_bytes,
    cmyk_jpeg,
    garment_alone,
    garment_mask,
    low_bit_grey_png,
    palette_png_transparency,
    photo,
    photo_jpeg,
    png_with_size,
    shirt_tile,
    sixteen_bit_png,
    write_bad_inputs,
)
from tests.not_garments import landscape
from trainer.errors import UserError
from trainer.predict import DECODE_SIDE
from trainer.preprocess import (
    THRESHOLDS, ImageError, _clean, _main_components, _pieces, cut_out, naive_preprocess, open_image, preprocess, to_fashion_mnist,
    to_rgb,
)

torch.set_num_threads(1)
MEAN, STD = 0.2860, 0.3530


@pytest.fixture(scope="session")
def test_set(data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = load_test_set(str(data_root))
    return images, labels


def one_per_class(labels: np.ndarray, k: int = 1) -> list[int]:
    return [int(i) for c in range(10) for i in np.flatnonzero(labels == c)[:k]]


def expected_tile(box: tuple[int, int, int, int]) -> np.ndarray:
    """Where the garment drawn in `box` should land in 28x28: longest edge filling the frame, centred."""
    w, h = box[2] - box[0], box[3] - box[1]
    scale = 28 / max(w, h)
    left, top = (28 - w * scale) / 2, (28 - h * scale) / 2
    return np.asarray(garment_mask((28, 28), (left, top, left + w * scale, top + h * scale))) > 127


def bbox(a: np.ndarray, threshold: int = 40) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(a > threshold)
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


def assert_fashion_mnist_like(out: np.ndarray) -> None:
    """Light on black, centred, the longest edge filling the frame."""
    assert out.shape == (28, 28) and out.dtype == np.uint8
    ring = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
    assert np.median(ring) < 10, "the background must come out black"
    assert out.max() >= 250, "the garment must come out light (Fashion-MNIST tiles peak at 255)"
    y0, y1, x0, x1 = bbox(out)
    assert max(y1 - y0, x1 - x0) + 1 >= 25, f"the garment should fill the frame, its box is {(y0, y1, x0, x1)}"
    assert abs((y0 + y1) / 2 - 13.5) <= 2.0 and abs((x0 + x1) / 2 - 13.5) <= 2.0, "the garment should be centred"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def assert_user_message(exc: pytest.ExceptionInfo, *words: str) -> None:
    message = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert message.endswith(".") and ". " not in message and "\n" not in message and len(message) < 200, message
    assert "Traceback" not in message and "Error" not in message, message
    for word in words:
        assert word in message.lower(), message


# --------------------------------------------------------------------------- Fashion-MNIST passes through


def test_real_tiles_pass_through_unchanged(test_set):
    images, _ = test_set
    for tile in images[:300]:
        assert np.array_equal(to_fashion_mnist(Image.fromarray(tile)), tile)
    tile = images[0]
    assert np.array_equal(to_fashion_mnist(Image.fromarray(tile).convert("RGB")), tile)
    x = preprocess(Image.fromarray(tile), MEAN, STD)
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    expected = (torch.from_numpy(tile).float() / 255 - MEAN) / STD
    assert torch.allclose(x[0], expected, atol=1e-6), "a real tile must reach the model exactly as in training"


def test_upscaled_tile_comes_back_close(test_set):
    images, labels = test_set
    for i in one_per_class(labels):
        tile = images[i]
        big = Image.fromarray(tile).resize((280, 280), Image.Resampling.BICUBIC)
        out = to_fashion_mnist(big).astype(int)
        assert np.abs(out - tile.astype(int)).mean() < 12, f"test image {i}"


# --------------------------------------------------------------------------- photo-like inputs


def test_photo_like_real_tiles_come_out_like_the_tile(test_set):
    images, labels = test_set
    scores = []
    for i in one_per_class(labels, 2):
        picture = Image.open(io.BytesIO(as_bytes(make_photo_like(images[i], np.random.default_rng([7, i])), "JPEG", quality=85)))
        out = to_fashion_mnist(picture)
        assert out.shape == (28, 28) and out.dtype == np.uint8
        assert np.median(np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])) < 10, f"test image {i}: background not black"
        scores.append(np.corrcoef(out.ravel().astype(float), images[i].ravel().astype(float))[0, 1])
    assert np.median(scores) > 0.85 and min(scores) > 0.5, np.round(scores, 2)


def test_synthetic_shape_on_photo_like_background():
    tile = shirt_tile()
    for seed in range(4):
        out = to_fashion_mnist(photo(seed))
        assert_fashion_mnist_like(out)
        assert iou(out > 60, tile > 60) > 0.75, f"seed {seed}"


def test_dark_garment_on_light_cluttered_background():
    w, h = 480, 360
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:h, 0:w]
    sheet = np.stack([235 - 0.04 * xs, 230 - 0.04 * xs, 222 - 0.03 * ys], axis=2)  # warm, lit from the left
    sheet += 6 * np.sin(xs / 2.5)[..., None] * np.sin(ys / 2.5)[..., None] + rng.normal(0, 2, (h, w, 1))  # weave
    img = Image.fromarray(np.clip(sheet, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.line([(0, 20), (470, 8)], fill=(60, 60, 70), width=4)  # a cable along the top edge
    draw.rectangle([0, 300, 60, 360], fill=(150, 40, 40))  # a red box in the corner
    draw.ellipse([430, 290, 480, 340], fill=(40, 90, 160))  # a blue cup
    box = (170, 60, 350, 280)
    img.paste((45, 50, 70), mask=garment_mask(img.size, box))  # a navy T-shirt, off-centre
    out = to_fashion_mnist(img.filter(ImageFilter.GaussianBlur(0.8)))
    assert_fashion_mnist_like(out)
    assert iou(out > 60, expected_tile(box)) > 0.75


def brown_floor(w: int, h: int) -> Image.Image:
    """Wooden planks, darker than a light garment."""
    rng = np.random.default_rng(1)
    ys, xs = np.mgrid[0:h, 0:w]
    grain = 10 * np.sin((xs + 8 * np.sin(ys / 40.0)) / 3.0) + rng.normal(0, 3, (h, w))
    floor = np.stack([125 + grain, 82 + 0.8 * grain, 48 + 0.5 * grain], axis=2)
    floor[:, ::90] *= 0.6  # seams between planks
    return Image.fromarray(np.clip(floor, 0, 255).astype(np.uint8))


def test_grey_garment_on_brown_floor():
    """The garment is lighter than the floor: only colour tells them apart."""
    img = brown_floor(400, 520)
    box = (60, 110, 330, 410)
    img.paste((140, 140, 140), mask=garment_mask(img.size, box))
    out = to_fashion_mnist(img.filter(ImageFilter.GaussianBlur(0.7)))
    assert_fashion_mnist_like(out)
    assert iou(out > 60, expected_tile(box)) > 0.75


@pytest.mark.parametrize("grey", [170, 215])
def test_a_light_garment_is_negated_whatever_it_lies_on(grey):
    """Fashion-MNIST negated product photos taken on white: a garment's darker parts are the brighter ones in its tile.
    A light garment with a dark band across it comes out so on a dark floor as on a white sheet (it used to come out as
    it looked, the band the darker part, when the floor was darker than the garment)."""
    box, band = (60, 110, 330, 410), (60, 250, 330, 290)
    bands = []
    for img in (brown_floor(400, 520), Image.new("RGB", (400, 520), (236, 233, 228))):
        img.paste((grey, grey, grey), mask=garment_mask(img.size, box))
        dark = Image.new("L", img.size, 0)
        dark.paste(garment_mask(img.size, box).crop(band), band[:2])
        img.paste((70, 70, 80), mask=dark)
        out = to_fashion_mnist(img.filter(ImageFilter.GaussianBlur(0.7)))
        scale = 28 / (box[3] - box[1])
        rows = slice(round((band[1] - box[1]) * scale) + 1, round((band[3] - box[1]) * scale) - 1)
        inside = expected_tile(box)
        in_band = np.zeros_like(inside)
        in_band[rows] = inside[rows]
        rest = inside & ~np.isin(np.arange(28), range(rows.start - 2, rows.stop + 2))[:, None]
        bands.append(float(out[in_band].mean() - out[rest].mean()))
    assert all(difference > 60 for difference in bands), f"the band must be brighter than the rest, by {bands}"


def test_the_box_is_where_the_garment_is_in_the_photo():
    """`Cutout.box` maps the tile back onto the photo: the square around the garment drawn in `box`."""
    img = Image.new("RGB", (640, 480), (235, 232, 226))
    box = (200, 100, 380, 400)  # 180 wide, 300 tall: the square is 300 on a side, centred on the garment
    img.paste((40, 45, 60), mask=garment_mask(img.size, box))
    cut = cut_out(img)
    assert cut.segmented and cut.photo and not cut.across
    expected = (290 - 150, 100, 290 + 150, 400)
    assert np.allclose(cut.box, expected, atol=6), (cut.box, expected)


def test_the_tighter_cut_out_leaves_out_a_pale_shadow():
    """A photo's garment is cut out twice (`THRESHOLDS`): the tile shown keeps a shadow that differs from the floor a
    little, the tighter cut-out leaves it out; a Fashion-MNIST tile is only itself."""
    img = Image.new("RGB", (640, 480), (235, 232, 226))
    img.paste((215, 212, 206), (380, 100, 440, 400))  # a pale shadow along the garment's right side
    img.paste((40, 45, 60), mask=garment_mask(img.size, (200, 100, 380, 400)))
    cut = cut_out(img)
    assert len(cut.tiles) == len(THRESHOLDS) == 2 and np.array_equal(cut.tiles[0], cut.tile)
    widths = [int((tile > 5).any(axis=0).sum()) for tile in cut.tiles]
    assert widths[1] < widths[0] - 3, f"the shadow's faint band widens the tile shown, not the tighter one: {widths}"
    columns = np.flatnonzero((cut.tiles[1] > 5).any(axis=0))
    assert abs((columns[0] + columns[-1]) / 2 - 13.5) <= 1, "the tighter cut-out is the garment alone, centred"
    tile = cut_out(Image.fromarray(cut.tile))
    assert not tile.photo and len(tile.tiles) == 1 and np.array_equal(tile.tiles[0], tile.tile)


def loud_pattern(w: int, h: int) -> np.ndarray:
    """Zebra stripes in two colours, as on the duvets many of the real photos were taken on."""
    ys, xs = np.mgrid[0:h, 0:w]
    stripes = (np.sin((xs + 0.6 * ys) / 6.0) > 0)[..., None]
    return np.where(stripes, np.array([240, 220, 200]), np.array([30, 60, 120])).astype(np.uint8)


def test_a_garment_on_a_loud_pattern_is_classified_not_refused():
    """Stripes all round the border leave no background model: the middle of the picture is taken instead."""
    img = Image.fromarray(loud_pattern(400, 500))
    box = (90, 110, 310, 400)
    img.paste((200, 40, 40), mask=garment_mask(img.size, box))  # a red T-shirt
    cut = cut_out(img.filter(ImageFilter.GaussianBlur(0.7)))
    assert not cut.segmented
    assert iou(cut.tile > 60, expected_tile(box)) > 0.6, "the fallback must still find the garment"


def test_a_garment_that_comes_out_in_scraps_is_cut_out_whole_by_its_colour():
    """A grey garment on a floor of light and dark tiles: the border model finds only its dark print, in stripes.

    Scraps over less than MIN_FILL of their box are not a garment; the middle's colour model finds it whole."""
    rng = np.random.default_rng(0)
    blocks = rng.uniform(160, 240, (20, 17, 1)).repeat(24, axis=0).repeat(24, axis=1)[:480, :400]  # a floor of light tiles
    img = Image.fromarray(blocks.repeat(3, axis=2).astype(np.uint8))
    box = (80, 90, 320, 400)
    img.paste((100, 100, 100), mask=garment_mask(img.size, box))
    stripes = Image.new("L", img.size, 0)
    draw = ImageDraw.Draw(stripes)
    for x in range(-480, 400, 40):
        draw.line((x, 0, x + 480, 480), fill=255, width=13)  # diagonal stripes
    print_mask = Image.fromarray(np.minimum(np.asarray(stripes), np.asarray(garment_mask(img.size, box))))
    img.paste((10, 10, 10), mask=print_mask)  # a dark print across the garment only
    cut = cut_out(img)
    assert not cut.segmented, "the border model's scraps are replaced"
    assert iou(cut.tile > 30, expected_tile(box)) > 0.6, "the garment comes out whole"


def test_a_garment_filling_the_frame_is_classified_not_refused():
    img = Image.new("RGB", (300, 400), (70, 90, 60))
    img.paste((200, 200, 190), mask=garment_mask(img.size, (-40, -30, 340, 430)))  # touches every edge
    cut = cut_out(img)
    assert cut.tile.max() >= 250 and (cut.tile > 60).mean() > 0.2


def test_a_garment_filling_the_frame_is_not_taken_for_the_sheet_beside_it():
    """Dark trousers from the top edge to the bottom one: the border is half trousers, so the background fitted to it
    takes their colour and what stands out is the sheet between the legs; that misses the middle of the picture, where
    the colour of the middle finds the trousers (and the demo says it could not cut them out)."""
    img = Image.new("RGB", (450, 600), (232, 228, 220))
    legs = [(126, -10), (324, -10), (346, 640), (238, 640), (225, 185), (212, 640), (104, 640)]
    ImageDraw.Draw(img).polygon(legs, fill=(40, 50, 80))
    cut = cut_out(img)
    assert not cut.segmented, "the fallback, which the demo notes"
    seen = cut.tile > 60
    assert seen[:, 10:18].mean() > 0.5 and seen.mean() > 0.3, "the trousers fill the tile, not a strip of sheet"


def test_a_pair_of_shoes_apart_keeps_its_cut_out_though_it_misses_the_middle():
    """The middle of the picture is the sheet between the shoes: its colour would find the sheet, round the border."""
    img = Image.new("RGB", (400, 300), (225, 220, 210))
    draw = ImageDraw.Draw(img)
    draw.ellipse((20, 40, 156, 280), fill=(40, 35, 30))  # the middle fifth, columns 160-240, is sheet
    draw.ellipse((244, 40, 380, 280), fill=(40, 35, 30))
    cut = cut_out(img)
    assert cut.segmented, "a shoe cut out, not the sheet taken by the colour of the middle"
    assert (cut.tile > 60).mean() > 0.3 and cut.tile[:, [0, -1]].max() < 60, "a shoe inside the tile, not a sheet across it"


@pytest.mark.parametrize("colour", [(90, 0, 10), (20, 0, 160), (130, 10, 20), (30, 40, 130)], ids=["maroon", "ultramarine", "red", "navy"])
def test_a_dark_garment_in_colour_on_black_is_cut_out_not_called_blank(colour):
    """Darker than (maroon, ultramarine) or as dark as (red, navy, grey 40-45) the dimmest grey levels of a tile's
    garment, but plainly a garment in colour: a photo, cut out and stretched to a tile's contrast, not a blank or
    dim tile."""
    img = Image.new("RGB", (300, 400), (5, 5, 5))
    ImageDraw.Draw(img).polygon([(90, 60), (210, 60), (250, 120), (225, 130), (215, 340), (85, 340), (75, 130), (50, 120)], fill=colour)
    cut = cut_out(img)
    assert cut.photo and cut.segmented and (cut.tile > 60).mean() > 0.3
    with pytest.raises(ImageError, match="nothing but a dark background"):
        cut_out(Image.new("RGB", (300, 400), (25, 25, 25)))


def test_formats_outside_the_six_are_refused_though_pillow_reads_them():
    """Pillow would decode a TGA or PCX (and hand an EPS to Ghostscript): the decoder opens only the six formats."""
    for kind in ("TGA", "PCX", "PPM"):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, kind)
        with pytest.raises(ImageError, match="not an image in a format we can read"):
            open_image(buffer.getvalue())


def test_the_ground_below_a_horizon_is_cut_out_as_running_across_the_picture():
    """What stands out from a landscape's sky is its ground, down both side edges: `across`, which no garment is."""
    for seed in range(3):
        cut = cut_out(landscape(seed))
        assert cut.segmented and cut.across, seed
    shirt = Image.new("RGB", (400, 300), (230, 228, 222))
    shirt.paste((50, 60, 90), mask=garment_mask(shirt.size, (-20, 60, 420, 240)))  # its sleeves run off both sides
    cut = cut_out(shirt)
    assert cut.segmented and not cut.across, "a garment touching both side edges, but not down much of their height"


@pytest.mark.parametrize("colour", [(240, 235, 230), (128, 128, 128), (30, 90, 200)])
def test_a_blank_picture_is_still_refused(colour):
    rng = np.random.default_rng(0)
    noisy = np.clip(np.array(colour) + rng.normal(0, 1.5, (200, 300, 3)), 0, 255).astype(np.uint8)  # sensor noise
    with pytest.raises(ImageError, match="(?i)no garment"):
        cut_out(Image.fromarray(noisy))


def blank_sheet(light: np.ndarray, noise: float) -> Image.Image:
    """A blank sheet of paper photographed: the light across it and the sensor's noise, saved as a phone saves it."""
    pixels = np.clip(np.repeat(light[..., None], 3, 2) + np.random.default_rng(0).normal(0, noise, (*light.shape, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return open_image(buffer.getvalue())


@pytest.mark.parametrize("light, noise", [("gradient", 0), ("vignette", 0), ("flat", 8), ("gradient", 4)])
def test_a_blank_sheet_under_uneven_light_is_refused_not_classified(light, noise):
    """Before, a lamp's gradient or a lens's vignette passed the range check, and the middle of the sheet was
    classified ("Bag, 98% sure")."""
    y, x = np.mgrid[0:480, 0:640] / np.array([480, 640])[:, None, None]
    lights = {"gradient": 240 - 40 * x, "vignette": 235 - 20 * ((2 * x - 1) ** 2 + (2 * y - 1) ** 2), "flat": 220 + 0 * x}
    with pytest.raises(ImageError, match="it looks blank"):
        cut_out(blank_sheet(lights[light], noise))


def test_a_small_coloured_garment_on_a_sheet_is_not_taken_for_blank():
    """0.3% of the picture: too few pixels to move the picture's percentiles, but a patch of it stands out."""
    photo = Image.new("RGB", (640, 480), (245, 245, 245))
    photo.paste((200, 30, 30), (304, 232, 336, 256))
    assert cut_out(photo).tile.any(), "classified from what could be found, not refused"


def test_preprocess_and_naive_shapes_and_normalisation():
    picture = photo(3)
    for fn in (preprocess, naive_preprocess):
        x = fn(picture, MEAN, STD)
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    tile = to_fashion_mnist(picture)
    assert torch.allclose(preprocess(picture, MEAN, STD)[0], (torch.from_numpy(tile).float() / 255 - MEAN) / STD)
    naive = naive_preprocess(picture, MEAN, STD)[0] * STD + MEAN
    assert naive[0, 0] > 0.6, "the naive row keeps the light background: it is the comparison, not a fix"


# --------------------------------------------------------------------------- decoding and bad inputs

# a word each refusal's sentence must contain: it says what is wrong, not only that something is
REASON = {
    "empty": "empty",
    "not_an_image": "not an image",
    "pdf_as_png": "not an image",
    "random_bytes": "not an image",
    "truncated_jpeg": "incomplete",
    "corrupt_png": "damaged",
    "decompression_bomb": "too large",
    "huge_dimensions": "too large",
    "one_pixel": "1x1",
    "thin_strip": "strip",
    "blank_light": "no garment",
    "blank_dark": "blank",
}


def test_sources_path_str_bytes_and_file_object(tmp_path):
    img = photo(0)
    data = as_bytes(img, "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    for source in (path, str(path), data, io.BytesIO(data)):
        out = open_image(source)
        assert out.mode == "RGB" and out.size == img.size
        assert np.array_equal(np.asarray(out), np.asarray(img))


def test_missing_file(tmp_path):
    with pytest.raises(ImageError) as exc:
        open_image(tmp_path / "nope.jpg")
    assert_user_message(exc, "does not exist")
    with pytest.raises(ImageError) as exc:
        open_image(tmp_path)
    assert_user_message(exc, "is a folder, not an image file")
    os.mkfifo(tmp_path / "pipe.png")  # opened, it would wait for a writer that never comes
    with pytest.raises(ImageError) as exc:
        open_image(tmp_path / "pipe.png")
    assert_user_message(exc, "pipe.png is not a regular file")
    with pytest.raises(ImageError) as exc:  # longer than a file system allows: the OSError comes from the first look
        open_image(tmp_path / ("x" * 300 + ".png"))
    assert_user_message(exc, "cannot be read: file name too long")


def test_unreadable_file(tmp_path, monkeypatch):
    """A file the server may not read (tests run as root, which reads anything: the refusal is simulated)."""
    path = tmp_path / "locked.jpg"
    path.write_bytes(photo_jpeg())

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ImageError) as exc:
        open_image(path)
    assert_user_message(exc, "the file locked.jpg cannot be read: permission denied.")


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    return write_bad_inputs(tmp_path_factory.mktemp("bad_inputs"))


def test_bad_inputs_are_written_small_and_complete(tmp_path):
    paths = write_bad_inputs(tmp_path)
    assert list(paths) == list(BAD_INPUTS) and set(BAD_INPUTS.values()) == {"refused", "predicted"}
    assert {name for name, expect in BAD_INPUTS.items() if expect == "refused"} == set(REASON)
    assert all(p.parent == tmp_path and p.is_file() and p.suffix for p in paths.values())
    assert paths["empty"].stat().st_size == 0 and paths["long_file_name"].name == LONG_NAME and len(LONG_NAME) >= 200
    assert paths["pdf_as_png"].suffix == ".png" and paths["not_an_image"].suffix == ".jpg"
    assert sum(p.stat().st_size for p in paths.values()) < 500_000, "the bad inputs must stay small on disk"
    bomb = paths["decompression_bomb"].read_bytes()
    assert len(bomb) < 4096 and struct.unpack(">II", bomb[16:24]) == (30000, 30000)
    assert struct.unpack(">I", bomb[29:33])[0] == zlib.crc32(bomb[12:29]), "the header's CRC must be valid: only its size is hostile"


@pytest.mark.parametrize("name", list(BAD_INPUTS))
@pytest.mark.parametrize("max_side", [None, DECODE_SIDE], ids=["full", "draft"])
def test_bad_input(bad_inputs, name, max_side):
    """Each bad upload is either refused with one sentence saying why, or becomes a sensible 28x28 tile."""
    path = bad_inputs[name]
    if BAD_INPUTS[name] == "refused":
        with pytest.raises(ImageError) as exc:
            to_fashion_mnist(open_image(path, max_side=max_side))
        assert_user_message(exc, REASON[name])
    else:
        out = to_fashion_mnist(open_image(path, max_side=max_side))
        assert out.shape == (28, 28) and out.dtype == np.uint8
        assert out.max() >= 250 and (out > 60).mean() > 0.1, "the tile must show a garment, not be blank"
        assert_fashion_mnist_like(out)


@pytest.mark.parametrize("side", [30000, 7000])  # beyond Pillow's own bomb limit, and beyond only ours (40 MP)
def test_decompression_bomb_refused_before_decoding(side, monkeypatch):
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    with pytest.raises(ImageError) as exc:
        open_image(png_with_size(side, side))  # from bytes in memory, as an upload arrives
    assert decoded == [], "must be refused from the header, before any pixel data is decoded"
    assert_user_message(exc, "too large")


def test_sixteen_bit_png_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))
    img = open_image(as_bytes(Image.fromarray(ramp), "PNG"))
    a = np.asarray(img)
    assert img.mode == "RGB"
    assert a[0, 0, 0] == 0 and a[0, -1, 0] == 255
    assert abs(int(a[0, 128, 0]) - 128) <= 2, "mid-grey must stay mid-grey"
    # the 16-bit photo of the bad inputs keeps its light background light (clipping would make it all white)
    with Image.open(io.BytesIO(sixteen_bit_png())) as raw:
        assert raw.mode.startswith("I")
    photo_grey = np.asarray(open_image(sixteen_bit_png()).convert("L"), dtype=int)
    assert np.abs(photo_grey - np.asarray(photo(5).convert("L"), dtype=int)).max() <= 1


def test_cmyk_jpeg():
    out = open_image(cmyk_jpeg())
    a = np.asarray(out)
    left, top, right, bottom = CMYK_BOX
    assert out.mode == "RGB"
    assert a[5, 5].min() > 230 and a[(top + bottom) // 2, (left + right) // 2].max() < 90, "white stays white, dark stays dark"


def test_palette_png_with_transparency():
    out = open_image(palette_png_transparency())
    assert out.mode == "RGBA" and np.asarray(to_rgb(out))[2, 2].min() == 255, "transparent pixels must become background, not black"
    assert iou(to_fashion_mnist(out) > 60, expected_tile(PALETTE_BOX)) > 0.75


def band_contrast(tile: np.ndarray, box: tuple[int, int, int, int] = CUTOUT_BOX) -> float:
    """How much brighter the tile is in the band of `garment_alone` than in the rest of the garment."""
    scale = 28 / max(box[2] - box[0], box[3] - box[1])
    middle = (box[3] - box[1]) // 2
    rows = slice(round(middle * scale) + 1, round((middle + (box[3] - box[1]) // 6) * scale) - 1)
    inside = expected_tile(box)
    in_band = np.zeros_like(inside)
    in_band[rows] = inside[rows]
    rest = inside.copy()
    rest[rows.start - 2 : rows.stop + 2] = False
    return float(tile[in_band].mean() - tile[rest].mean())


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_cutouts_dark_and_light(mode):
    """A garment whose background was cut away is cut out along its outline and negated as a product photographed on
    white, light or dark (a light one used to be composited onto black and passed through as a tile, not negated).
    Shown to a person, it is composited onto what contrasts with it."""
    for grey, under in ((50, 255), (235, 0)):
        out = open_image(alpha_cutout(grey, mode))
        assert out.mode == "RGBA" and np.asarray(to_rgb(out))[3, 3].tolist() == [under] * 3
        cut = cut_out(out)
        assert cut.photo and cut.segmented and all(np.array_equal(tile, cut.tile) for tile in cut.tiles)
        assert_fashion_mnist_like(cut.tile)
        assert iou(cut.tile > 20, expected_tile(CUTOUT_BOX)) > 0.85


@pytest.mark.parametrize("grey, band", [(230, 150), (60, 130)])
def test_a_cut_away_garment_s_darker_parts_come_out_brighter(grey, band):
    """Negated as Fashion-MNIST's products were: a light garment's darker band is the brighter part of its tile, and a
    dark garment's lighter band the dimmer part."""
    contrast = band_contrast(cut_out(garment_alone(grey, band)).tile)
    assert (contrast > 40) if band < grey else (contrast < -40), contrast


def test_a_cut_away_garment_s_hidden_colours_do_not_show_and_see_through_parts_fade():
    """What lies under fully transparent pixels is not part of the picture: with soft edges, a light garment over
    hidden black and over hidden white comes out the same. A see-through part is seen as on a white product
    background: a half-transparent body with an opaque band comes out dimmer beside its band than an opaque one."""
    tiles = [cut_out(garment_alone(220, 150, hidden, feather=3)).tile.astype(int) for hidden in ((0, 0, 0), (255, 255, 255))]
    assert np.abs(tiles[0] - tiles[1]).max() <= 2
    body, band = (slice(5, 12), slice(8, 20)), (slice(16, 19), slice(8, 20))
    ratios = [tile[body].mean() / tile[band].mean() for tile in (cut_out(garment_alone(220, 150, opacity=o)).tile for o in (255, 128))]
    assert ratios[1] < 0.7 * ratios[0], ratios


def test_a_flat_white_cut_away_garment_is_shown_by_its_outline():
    """Pure white, negated, is nothing: with no detail to stretch, the tile is the garment's outline, not a blank tile
    (which a model answers anything for); a near-white one is stretched to peak at 255 as every Fashion-MNIST tile."""
    white = cut_out(garment_alone(255)).tile
    assert white.max() == 255 and iou(white > 20, expected_tile(CUTOUT_BOX)) > 0.85
    near_white = cut_out(garment_alone(250, band=235)).tile  # negated to 5 and 20 grey levels: detail, stretched
    assert near_white.max() == 255 and band_contrast(near_white) > 100


def test_transparent_rounded_corners_leave_a_photo_a_photo():
    """Transparency only in the corners (rounded by an app) is no outline of a garment: the photo is cut out as it
    would be without it (not along its rounded frame, nor with black corners as part of the picture)."""
    opaque = photo(3)
    rounded = opaque.copy()
    corners = Image.new("L", opaque.size, 0)
    ImageDraw.Draw(corners).rounded_rectangle([0, 0, opaque.width - 1, opaque.height - 1], radius=min(opaque.size) // 6, fill=255)
    rounded.putalpha(corners)
    difference = np.abs(cut_out(rounded).tile.astype(int) - cut_out(opaque).tile)
    assert difference.mean() < 1 and difference.max() <= 12, "the corners are filled as the background round them"


def test_a_small_garment_alone_on_a_large_transparent_picture_is_cut_along_its_outline():
    """A garment of 1% of the picture, its background cut away: left opaque on purpose, it is the garment, however
    small (a photo's cut-out that small would be a speck), and fills the tile as any garment does."""
    box = (270, 250, 330, 350)
    cut = cut_out(garment_alone(200, band=120, size=(600, 600), box=box))
    assert cut.segmented and cut.photo and iou(cut.tile > 20, expected_tile(box)) > 0.8
    assert band_contrast(cut.tile, box) > 40, "cut along its outline and negated, not taken for a tile"


def test_a_photo_cropped_to_an_ellipse_is_cut_out_as_a_photo():
    """A photo cropped to an ellipse (transparent round it) is no garment's outline: it is near the ellipse its frame
    inscribes, so its own background, continued into the corners, is cut away as a photo's is."""
    opaque = Image.new("RGB", (400, 500), (226, 211, 182))
    opaque.paste((40, 45, 60), mask=garment_mask(opaque.size, (110, 120, 290, 380)))
    frame = Image.new("L", opaque.size, 0)
    ImageDraw.Draw(frame).ellipse([0, 0, opaque.width - 1, opaque.height - 1], fill=255)
    cropped = opaque.copy()
    cropped.putalpha(frame)
    cut, reference = cut_out(cropped), cut_out(opaque)
    assert cut.segmented and np.allclose(cut.box, reference.box, atol=8), (cut.box, reference.box)
    assert iou(cut.tile > 40, reference.tile > 40) > 0.85


def test_a_garment_cut_out_tight_to_its_edges_is_cut_along_its_outline():
    """Apps that lift a garment from its photo crop it to its edges: the garment then spans the picture, and a convex
    one (an A-line dress) fills all its convex hull, yet it is no photo cropped to an ellipse, and is cut along its
    outline."""
    size = (240, 300)
    shape = Image.new("L", size, 0)
    ImageDraw.Draw(shape).polygon([(60, 0), (179, 0), (239, 299), (0, 299)], fill=255)
    dress = Image.new("RGBA", size, (0, 0, 0, 0))
    dress.paste((70, 60, 50, 255), mask=shape)
    dress.paste((170, 160, 150, 255), (0, 140, 240, 180), mask=shape.crop((0, 140, 240, 180)))
    cut = cut_out(dress)
    expected = np.asarray(shape.resize((22, 28), Image.Resampling.BOX)) > 127
    assert cut.segmented and iou(cut.tile[:, 3:25] > 20, expected) > 0.9
    assert cut.tile[14:17, 8:20].mean() < cut.tile[5:11, 8:20].mean() - 40, "negated: the light band is the dim part"


def test_a_white_cut_away_garment_with_a_logo_is_shown_by_its_outline_and_the_logo():
    """Mostly flat white, negated to nothing but for a small dark logo: the tile is the outline, mid-grey, with the
    logo on top, not the logo alone stretched to fill the frame."""
    img = garment_alone(255)
    ImageDraw.Draw(img).rectangle([105, 120, 135, 150], fill=(40, 40, 40, 255))
    tile = cut_out(img).tile
    assert iou(tile > 20, expected_tile(CUTOUT_BOX)) > 0.85 and tile.max() == 255


def test_a_keyed_fashion_mnist_tile_passes_through(test_set):
    """A 28x28 tile saved with its black transparent (a colour key) is still a tile: it passes through unchanged."""
    images, _ = test_set
    for i in range(5):
        keyed = io.BytesIO()
        Image.fromarray(images[i]).save(keyed, "PNG", transparency=0)
        assert np.array_equal(cut_out(open_image(keyed.getvalue())).tile, images[i])


@pytest.mark.parametrize("mode, key, side", [("RGB", (0, 0, 0), 200), ("RGB", (0, 0, 0), 1000), ("L", 0, 1000)])
def test_a_colour_keyed_png_is_cut_out_as_its_alpha_version(mode, key, side):
    """A PNG whose background is transparent by a colour key (tRNS) rather than an alpha channel, small and large
    (decoded reduced): the keyed colour is transparency, composited as the same picture with alpha would be."""
    img = Image.new(mode, (side, side), key)
    ImageDraw.Draw(img).rectangle([side // 4, side // 5, 3 * side // 4, 4 * side // 5], fill=(40, 40, 90) if mode == "RGB" else 50)
    keyed, alpha = io.BytesIO(), io.BytesIO()
    img.save(keyed, "PNG", transparency=key)
    with_alpha = img.convert("RGBA")
    with_alpha.putalpha(Image.eval(img.convert("L"), lambda v: 0 if v == 0 else 255))
    with_alpha.save(alpha, "PNG")
    out, reference = open_image(keyed.getvalue(), max_side=DECODE_SIDE), open_image(alpha.getvalue(), max_side=DECODE_SIDE)
    assert np.asarray(to_rgb(out))[2, 2].tolist() == [255] * 3, "the keyed background becomes white under a dark garment"
    assert out.mode == reference.mode == "RGBA" and np.array_equal(np.asarray(out), np.asarray(reference))
    assert_fashion_mnist_like(to_fashion_mnist(out))


@pytest.mark.parametrize("side", [200, 1000])
def test_a_colour_keyed_sixteen_bit_png_is_cut_out_as_its_alpha_version(side):
    """A 16-bit grey PNG's colour key is a grey level, which Pillow's conversion to RGBA reads but clips every grey
    above 255 of 65535 to white: the keyed grey is transparency, and the others are scaled as without a key."""
    grey = np.zeros((side, side), np.uint16)
    grey[side // 5 : 4 * side // 5, side // 4 : 3 * side // 4] = 50 * 257
    grey[side // 2 :, side // 4 : side // 2] = 40 * 257 + 100  # not a multiple of 257: scaled and rounded, not cut
    alpha = Image.fromarray(np.where(grey == 0, 0, 255).astype(np.uint8), "L")
    reference = Image.fromarray(np.rint(grey / 257).astype(np.uint8), "L").convert("RGBA")
    reference.putalpha(alpha)
    keyed = as_bytes(Image.fromarray(grey), "PNG", transparency=0)
    with Image.open(io.BytesIO(keyed)) as raw:
        assert raw.mode == "I;16" and raw.info["transparency"] == 0
    out, expected = open_image(keyed, max_side=DECODE_SIDE), open_image(as_bytes(reference, "PNG"), max_side=DECODE_SIDE)
    assert out.mode == expected.mode == "RGBA" and np.array_equal(np.asarray(out), np.asarray(expected))
    assert np.asarray(to_rgb(out))[2, 2].tolist() == [255] * 3, "the keyed background becomes white under a dark garment"
    assert np.array_equal(cut_out(out).tile, cut_out(expected).tile)
    assert_fashion_mnist_like(to_fashion_mnist(out))


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("side", [200, 1001])
def test_a_colour_keyed_low_bit_png_is_cut_out_as_its_eight_bit_version(depth, side):
    """A grey PNG of 1, 2 or 4 bits whose white is a colour key, small and large (decoded reduced, its edges off the
    reduction's grid): the same picture as one keyed at 8 bits. Pillow keeps a 2- or 4-bit key as stored (3 or 15)
    while it scales the pixels to 255, and a 1-bit picture was reduced before its key was read (a grey halo)."""
    garment = np.zeros((side, side), bool)
    garment[side // 5 + 1 : 4 * side // 5, side // 4 + 1 : 3 * side // 4] = True
    white = 2**depth - 1
    keyed = low_bit_grey_png(np.where(garment, 0, white), depth, key=white)
    eight_bit = as_bytes(Image.fromarray(np.where(garment, 0, 255).astype(np.uint8), "L"), "PNG", transparency=255)
    out, expected = open_image(keyed, max_side=DECODE_SIDE), open_image(eight_bit, max_side=DECODE_SIDE)
    assert out.mode == expected.mode == "RGBA" and np.array_equal(np.asarray(out), np.asarray(expected))
    assert np.asarray(out)[2, 2, 3] == 0, "the keyed white is transparent"


def test_animated_gif_uses_first_frame():
    out = open_image(animated_gif())
    a = np.asarray(out)
    assert out.mode == "RGB" and a[5, 5].min() > 240 and a[50, 60].max() < 40


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    ImageDraw.Draw(img).rectangle([0, 0, 20, 100], fill=(0, 0, 0))  # dark bar on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = open_image(as_bytes(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (100, 200) and np.asarray(out)[5, 50].max() < 60, "the bar is at the top once upright"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF"])
def test_damaged_files_never_escape_as_other_errors(fmt):
    """Random byte flips and cuts: each upload either works or is refused with ImageError, never a traceback."""
    small = photo(0).resize((120, 90))
    data = as_bytes(small.convert("P") if fmt == "GIF" else small, fmt)
    rng = np.random.default_rng(1)
    outcomes = {"tile": 0, "refused": 0}
    for _ in range(40):
        damaged = bytearray(data)
        for j in rng.integers(0, len(damaged), size=int(rng.integers(1, 6))):
            damaged[j] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            damaged = damaged[: int(rng.integers(1, len(damaged)))]
        try:
            out = to_fashion_mnist(open_image(bytes(damaged)))
        except ImageError as exc:
            assert_user_message(pytest.ExceptionInfo.from_exception(exc))
            outcomes["refused"] += 1
        else:
            assert out.shape == (28, 28) and out.dtype == np.uint8
            outcomes["tile"] += 1
    assert outcomes["refused"] > 0, f"the damage must reach the decoder: {outcomes}"


def test_image_error_is_a_user_error_and_a_value_error():
    assert issubclass(ImageError, UserError) and issubclass(ImageError, ValueError)
    with pytest.raises(UserError):
        open_image(b"")


# --------------------------------------------------------------------------- the benchmark set


def test_make_photo_like_is_deterministic_and_photo_like(test_set):
    images, _ = test_set
    a = make_photo_like(images[0], np.random.default_rng([0, 0]))
    b = make_photo_like(images[0], np.random.default_rng([0, 0]))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    for i in range(5):
        img = make_photo_like(images[i], np.random.default_rng([1, i]))
        w, h = img.size
        assert img.mode == "RGB" and 200 <= max(w, h) <= 600 and w != h
        ring = np.asarray(img.convert("L"))[[0, -1]].ravel()
        assert np.median(ring) > 120, "a light background"


def test_build_benchmark_balanced_and_reused(data_root, tmp_path):
    items = build_benchmark(str(data_root), tmp_path / "set", n=10, seed=0)
    assert len(items) == 10 and sorted(label for _, label in items) == list(range(10))
    assert all(p.is_file() and p.suffix == ".jpg" and p.stem.endswith(f"_{label}") for p, label in items)
    assert (tmp_path / "set" / "labels.csv").read_text().count("\n") == 11
    for path, _ in items:  # the same garment alone, transparent round it
        with Image.open(cut_away(path)) as alone:
            alpha = np.asarray(alone.getchannel("A"))
        assert alone.mode == "RGBA" and alpha[0].max() == alpha[:, 0].max() == 0 and alpha.max() == 255
    mtimes = [p.stat().st_mtime_ns for p, _ in items]
    assert build_benchmark(str(data_root), tmp_path / "set", n=10, seed=0) == items
    assert [p.stat().st_mtime_ns for p, _ in items] == mtimes, "an existing set is reused, not rebuilt"


def test_the_garment_is_sought_only_where_it_can_be():
    """`cut_out` cleans and searches the mask only round what is above the threshold (`CLEAN_REACH`): the same
    garment as a search of the whole picture, for blobs and specks anywhere, at the edges too."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = rng.integers(20, 80, 2)
        above = rng.random((h, w)) < rng.uniform(0.0, 0.05)  # specks
        for _ in range(rng.integers(0, 4)):  # blobs, some cut off by the frame
            top, left = rng.integers(-10, h), rng.integers(-10, w)
            above[max(top, 0) : top + rng.integers(2, 30), max(left, 0) : left + rng.integers(2, 30)] = True
        assert np.array_equal(_pieces(above), _main_components(_clean(above)))
