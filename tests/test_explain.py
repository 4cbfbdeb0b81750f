"""Attribution maps are right, not just present: on hand-built models whose answer is known, the map puts its mass
where the evidence is; and they are drawn where the tile came from in the photo."""

import io

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from captum.attr import Occlusion
from PIL import Image

from trainer.data import BLACK, CLASS_NAMES, MEAN, STD
from trainer.attribution import METHODS, OCCLUSION_STRIDE, OCCLUSION_WINDOW, attribute, attribute_views, method_for
from trainer.explain import FAINT, explain, explain_file
from trainer.heatmap import NEGATIVE, OPACITY, POSITIVE, heat_rgba
from trainer.export import save_model_file
from trainer.model import MODELS, build_model
from trainer.predict import Classifier
from trainer.preprocess import normalise_tile
from trainer.views import PHOTO_SIZES, TILE_SIZES, views

WHITE = (1 - MEAN) / STD  # BLACK, the background of every tile, as trainer.data normalises it
PATCH, DECOY = (slice(4, 12), slice(4, 12)), (slice(16, 24), slice(16, 24))  # rows, columns


def blank_tiles(n: int = 1) -> torch.Tensor:
    return torch.full((n, 1, 28, 28), BLACK)


def share(heat: torch.Tensor, region: tuple[slice, slice], margin: int = 0) -> float:
    """The share of the map's absolute mass inside `region` grown by `margin` pixels on each side."""
    rows, cols = region
    inside = heat.abs()[max(rows.start - margin, 0) : rows.stop + margin, max(cols.start - margin, 0) : cols.stop + margin]
    return float(inside.sum() / heat.abs().sum())


class PatchModel(nn.Module):
    """Class 0's logit is the sum of the pixels in PATCH, class 1's of those in DECOY; the rest are 0.

    The convolution is the identity: it is there so that Grad-CAM has a layer to look at.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        masks = torch.zeros(10, 28, 28)
        masks[(0, *PATCH)] = masks[(1, *DECOY)] = 1
        self.register_buffer("masks", masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv(x) * self.masks).sum((-2, -1))


class StrokeModel(nn.Module):
    """Class 0's logit counts vertical strokes (3 or more lit pixels in a column of 5), class 1's horizontal ones,
    anywhere in the tile: evidence by content, not by place, which is what Grad-CAM assumes.

    A stroke fires from halfway along the path from black: gradient SHAP's 16 random points on that path then always
    reach it (asking for all 5 lit, only the last fifth of the path fired, and none of the 16 did for about 3% of seeds).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 5, padding=2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, :, 2] = 1  # a column of 5
            self.conv.weight[1, 0, 2, :] = 1  # a row of 5
            self.conv.bias.fill_(-2.5 * (WHITE + BLACK))  # fires when 3 of the 5 are lit, never for 1 across a stroke

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts = F.relu(self.conv(x)).sum((-2, -1))
        return torch.cat([counts, torch.zeros(len(x), 8)], 1)


def two_patches() -> torch.Tensor:
    """A tile lit in PATCH and, as brightly, in DECOY."""
    tiles = blank_tiles()
    tiles[(0, 0, *PATCH)] = tiles[(0, 0, *DECOY)] = WHITE
    return tiles


def two_strokes() -> torch.Tensor:
    """A vertical stroke in PATCH and a horizontal one in DECOY."""
    tiles = blank_tiles()
    tiles[0, 0, PATCH[0], 8] = WHITE
    tiles[0, 0, 20, DECOY[1]] = WHITE
    return tiles


@pytest.mark.parametrize("method", [m for m in METHODS if m != "grad_cam"])
def test_the_map_puts_its_mass_on_the_patch_that_decides_the_class(method):
    torch.manual_seed(0)
    heat = attribute(PatchModel(), two_patches(), 0, BLACK, method)[0]
    assert share(heat, PATCH) > 0.95 and share(heat, DECOY) < 0.01
    assert heat[PATCH].sum() > 0, "the evidence is for the class, not against it"


def test_grad_cam_cannot_tell_where_the_evidence_is():
    """Why it is not the default: Grad-CAM weighs a channel by its mean gradient over the whole image, so a network
    that reads each place with its own weights (LeNet-5's fully connected layers) gets a map of where there is
    anything, not of what it used. The decoy here gets as much as the patch."""
    heat = attribute(PatchModel(), two_patches(), 0, BLACK, "grad_cam")[0]
    assert share(heat, DECOY) > 0.4


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target, evidence, decoy", [(0, PATCH, DECOY), (1, DECOY, PATCH)])
def test_the_map_puts_its_mass_on_the_stroke_that_decides_the_class(method, target, evidence, decoy):
    torch.manual_seed(0)
    heat = attribute(StrokeModel(), two_strokes(), target, BLACK, method)[0]
    assert share(heat, evidence, margin=4) > 0.9 and share(heat, decoy, margin=4) < 0.05


def test_flipped_views_are_mirrored_back():
    """The strokes model answers the same for a tile and its mirror image, so averaging over both views must give
    the single view's map; a map left mirrored would put half its mass on the wrong side."""
    tile = two_strokes()[0]
    single = attribute_views(StrokeModel(), tile, 0, BLACK, "integrated_gradients")
    both = attribute_views(StrokeModel(), tile, 0, BLACK, "integrated_gradients", TILE_SIZES)
    assert torch.allclose(single, both, atol=1e-5)


def test_a_network_without_convolutions_gets_another_method_not_an_error():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert method_for(mlp, "grad_cam") == "occlusion" and method_for(StrokeModel(), "grad_cam") == "grad_cam"
    heat = attribute(mlp, two_patches(), 3, BLACK, "grad_cam")
    assert torch.equal(heat, attribute(mlp, two_patches(), 3, BLACK, "occlusion"))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", METHODS)
def test_every_network_in_the_registry_gets_a_map_per_tile(name, method):
    torch.manual_seed(0)
    model = build_model(name).eval()
    tiles = torch.randn(3, 1, 28, 28)
    heat = attribute(model, tiles, torch.tensor([0, 4, 9]), BLACK, method)
    assert heat.shape == (3, 28, 28) and torch.isfinite(heat).all() and heat.abs().sum() > 0
    assert not model.training


@pytest.mark.parametrize("name", sorted(MODELS))
def test_occlusion_is_captums_occlusion_run_only_where_the_garment_is(name):
    """The occlusion skips the patches of background that blacking out would leave unchanged: its maps must be
    Captum's, on a garment that fills the tile, one in a corner, shrunk views with a black margin, and a blank tile."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    garments = torch.rand(4, 1, 28, 28) * (WHITE - BLACK) + BLACK
    garments[1, :, 10:, :] = garments[1, :, :, 9:] = BLACK  # a small garment in the top left corner
    tiles = torch.cat([garments[:2], views(garments[2:], PHOTO_SIZES, BLACK)[:3], blank_tiles()])
    targets = [0, 3, 9, 4, 6, 1]
    ours = attribute(model, tiles, torch.tensor(targets), BLACK, "occlusion")
    window, stride = (1, OCCLUSION_WINDOW, OCCLUSION_WINDOW), (1, OCCLUSION_STRIDE, OCCLUSION_STRIDE)
    captums = Occlusion(model).attribute(tiles, window, strides=stride, baselines=torch.full_like(tiles, BLACK), target=targets)
    assert torch.allclose(ours, (captums * (tiles != BLACK)).sum(1), atol=1e-5)
    assert ours[-1].abs().sum() == 0 and ours[0].abs().sum() > 0


@pytest.fixture
def classifier(tmp_path) -> Classifier:
    """A real model.pt (LeNet-5, untrained) as the demo loads one."""
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    meta = {"arch": "lenet5", "arch_kwargs": {}, "class_names": list(CLASS_NAMES), "mean": [MEAN], "std": [STD]}
    save_model_file(path, build_model("lenet5"), meta)
    return Classifier(path)


def photo() -> Image.Image:
    """A dark garment, off-centre, on a light, non-square picture."""
    pixels = np.full((300, 400, 3), 225, dtype=np.uint8)
    pixels[60:240, 220:330] = (40, 50, 70)
    return Image.fromarray(pixels)


def test_the_black_around_a_photo_s_garment_gets_no_evidence(classifier):
    """Blacking out black changes nothing: the demo's black must be the tiles' own to the last bit, or every patch of
    background counts as garment and the evidence of the patches at its edge spreads onto it; nor may the smaller
    views' maps, stretched back over the tile, spill onto it (the demo's explanation, all the photo's views), nor onto
    the faint ripples that resizing leaves two pixels off the garment, which drew its outline again beside it."""
    seen = classifier.classify(photo()).seen
    heat = attribute(classifier.model, normalise_tile(seen, classifier.mean, classifier.std)[None], 0, classifier.background)[0]
    black = torch.from_numpy(seen == 0)
    assert black.any() and (heat[black] == 0).all() and heat[~black].abs().sum() > 0
    explained = explain(classifier, photo()).heat
    faint = seen <= FAINT
    assert (faint & (seen > 0)).sum() > 20, "the photo's tile has ripples beside the garment"
    assert (explained[faint] == 0).all() and np.abs(explained[~faint]).sum() > 0


class BrightModel(nn.Module):
    """Class 0's logit sums how far pixels are above 90% white, anywhere (evidence by content, the same for a mirror
    image); class 1's sums every pixel's light: a map for one is not a map for the other."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = F.relu(x - (0.9 - MEAN) / STD).sum((-3, -2, -1))
        light = (x - BLACK).sum((-3, -2, -1))
        return torch.stack([bright, light, *torch.zeros(8, len(x))], 1)


def test_the_explanation_is_of_the_class_asked_on_the_tile_answered_where_its_evidence_lies(classifier):
    """A garment darker on its left (lighter there in the tile): the evidence for class 0 lies on the tile's left,
    not mirrored or shifted, and is the map of the class asked for, over the views the answer averaged."""
    pixels = np.full((300, 400, 3), 225, dtype=np.uint8)
    pixels[60:240, 150:260] = (90, 95, 110)
    pixels[100:160, 160:195] = (5, 5, 5)
    image = Image.fromarray(pixels)
    classifier.model = BrightModel()
    first, second = explain(classifier, image, CLASS_NAMES[0]), explain(classifier, image, CLASS_NAMES[1])
    seen, heat = first.prediction.seen, torch.from_numpy(first.heat)
    lit = np.nonzero(seen > 240)
    assert lit[1].max() < 14 and heat[:, :14].abs().sum() > 4 * heat[:, 14:].abs().sum(), "the left, where the light patch is"
    tile = normalise_tile(seen, classifier.mean, classifier.std)
    for explanation, index in ((first, 0), (second, 1)):
        expected = attribute_views(classifier.model, tile, index, classifier.background, sizes=first.prediction.sizes) * torch.from_numpy(seen > FAINT)
        assert first.prediction.sizes == PHOTO_SIZES and torch.equal(torch.from_numpy(explanation.heat), expected)
    assert not np.allclose(first.heat, second.heat)


def test_the_photos_map_is_drawn_on_the_part_of_the_photo_the_tile_shows(classifier):
    image = photo()
    explanation = explain(classifier, image)
    left, top, right, bottom = explanation.prediction.box
    slack = 400 / 192 + 1  # the cut-out is found on the photo shrunk to 192 pixels
    assert left < 220 + slack and right > 330 - slack and top < 60 + slack and bottom > 240 - slack
    drawn = np.asarray(explanation.on_photo()).astype(int)
    changed = np.abs(drawn - np.asarray(image)).sum(2) > 0
    rows, cols = np.nonzero(changed)
    assert changed[60:240, 220:330].mean() > 0.5
    assert cols.min() >= left - 1 and cols.max() <= right + 1 and rows.min() >= top - 1 and rows.max() <= bottom + 1
    assert explanation.on_tile(224).size == (224, 224) and explanation.on_photo().size == image.size


def test_a_garment_whose_background_was_cut_away_is_explained_over_what_it_shows(classifier):
    """An upload transparent round the garment is cut out along that outline; the map is drawn over the picture as a
    person sees it, the transparency composited, not its hidden colours."""
    rgba = Image.new("RGBA", (240, 300), (255, 0, 255, 0))  # hidden round the garment: magenta
    rgba.paste((230, 230, 230, 255), (40, 30, 200, 270))  # a white garment, shown on black
    encoded = io.BytesIO()
    rgba.save(encoded, "PNG")
    explanation = explain_file(classifier, encoded.getvalue())
    assert explanation.image.mode == "RGB" and explanation.prediction.segmented
    drawn = np.asarray(explanation.on_photo())
    assert drawn.shape == (300, 240, 3) and drawn[5, 5].tolist() == [0, 0, 0] and drawn[295, 120].tolist() == [0, 0, 0]
    left, top, right, bottom = explanation.prediction.box
    assert abs(top - 30) <= 3 and abs(bottom - 270) <= 3 and abs((left + right) / 2 - 120) <= 3


def test_any_class_can_be_explained_and_the_top_one_by_default(classifier):
    image = photo()
    top = explain(classifier, image)
    assert top.class_name == top.prediction.top(1)[0][0]
    other = next(name for name in CLASS_NAMES if name != top.class_name)
    assert explain(classifier, image, other).class_name == other
    with pytest.raises(ValueError, match="unknown class"):
        explain(classifier, image, "Hat")


def test_evidence_for_is_orange_against_is_blue_and_weak_evidence_fainter():
    """The colours the demo, TensorBoard and the docs name: orange for the class, blue against it."""
    rgba = heat_rgba(np.array([[1.0, -1.0, 0.1, 0.0]]), scale=1.0)[0]
    assert tuple(rgba[0, :3]) == tuple(POSITIVE) == (255, 60, 0) and tuple(rgba[1, :3]) == tuple(NEGATIVE) == (0, 120, 255)
    assert rgba[0, 3] == rgba[1, 3] == OPACITY and 0 < rgba[2, 3] < OPACITY and rgba[3, 3] == 0
