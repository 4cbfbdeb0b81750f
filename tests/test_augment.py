"""Photo-robust augmentation: per-image, reproducible, and doing what each setting says."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from trainer.augment import PhotoAugment, raise_sleeves, side_by_side
from trainer.config import AugmentConfig, ConfigError, load_config
from trainer.data import FOOTWEAR, MEAN, SLEEVED, STD, InMemoryLoader


def augment_with(**settings) -> PhotoAugment:
    return PhotoAugment(OmegaConf.merge(OmegaConf.structured(AugmentConfig), {"p": 1.0, **settings}), MEAN, STD, FOOTWEAR, SLEEVED)


def run(augment: PhotoAugment, images: torch.Tensor, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
    labels = torch.zeros(len(images), dtype=torch.long) if labels is None else labels
    return augment(images, labels, torch.Generator().manual_seed(seed))


def bar_images(n: int) -> torch.Tensor:
    """Normalised tiles of a light vertical bar, 6 pixels wide and 20 tall, on black."""
    pixels = torch.zeros(n, 1, 28, 28)
    pixels[:, :, 4:24, 11:17] = 0.8
    return (pixels - MEAN) / STD


def widths(images: torch.Tensor) -> np.ndarray:
    lit = (images * STD + MEAN)[:, 0] > 0.3
    return lit.any(dim=1).sum(dim=1).numpy()


def test_off_by_default_and_identity_when_nothing_is_set():
    assert AugmentConfig().p == 0.0
    images = bar_images(4)
    assert torch.allclose(run(augment_with(), images), images, atol=1e-5)


def test_aspect_makes_garments_wider_as_photos_of_flat_laid_clothes_are():
    out = run(augment_with(aspect=[1.5, 1.5]), bar_images(8))
    assert (widths(out) >= 8).all() and (widths(out) <= 10).all(), widths(out)


def test_each_image_gets_its_own_draw_and_a_seed_repeats_it():
    aug = augment_with(rotate=20, scale=[0.8, 1.1], aspect=[1.0, 1.5], shear=0.1, translate=0.1, gamma=[0.5, 1.5], texture=0.3, blur=0.5)
    images = bar_images(16)
    first = run(aug, images, seed=5)
    assert torch.equal(first, run(aug, images, seed=5))
    assert len({tuple(np.round(im.flatten().numpy(), 3)) for im in first}) == 16, "every image differs"


def test_the_loader_augments_a_resumed_epoch_exactly_as_an_uninterrupted_one():
    images, labels = bar_images(64), torch.arange(64) % 10
    aug = augment_with(rotate=15, aspect=[1.0, 1.5], gamma=[0.5, 1.2])
    loader = InMemoryLoader(images, labels, 8, shuffle=True, seed=1, drop_last=True, hflip=True, augment=aug)
    loader.set_epoch(3)
    whole = [x for x, _ in loader]
    loader.set_epoch(3, start_batch=5)
    resumed = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(whole[5:], resumed)) and len(resumed) == 3


def test_no_two_batches_share_their_draws_however_many_an_epoch_has():
    """One image, 1,100 batches of it an epoch (more than the seeds' old stride of 1,009): every batch of two epochs
    gets its own draws, so the end of one epoch does not repeat the start of the next."""
    images, labels = bar_images(1).expand(1100, -1, -1, -1), torch.zeros(1100, dtype=torch.long)
    loader = InMemoryLoader(images, labels, 1, shuffle=False, seed=0, drop_last=True, augment=augment_with(rotate=30))
    drawn = []
    for epoch in (3, 4):
        loader.set_epoch(epoch)
        drawn += [x.numpy().tobytes() for x, _ in loader]
    assert len(set(drawn)) == len(drawn) == 2200


def test_the_largest_seed_a_config_takes_draws_with_the_smallest_batches():
    """seed=10**9 (config.MAX_SEED) with an epoch of 4,000 batches: the per-batch seeds wrap within 63 bits."""
    images, labels = bar_images(1).expand(4000, -1, -1, -1), torch.zeros(4000, dtype=torch.long)
    loader = InMemoryLoader(images, labels, 1, shuffle=True, seed=10**9, drop_last=True, augment=augment_with(rotate=30))
    loader.set_epoch(50)
    batches = iter(loader)
    assert all(next(batches)[0].shape == (1, 1, 28, 28) for _ in range(3))


def test_tone_brightens_and_flattens_the_chosen_garments_only_and_keeps_the_background_black():
    """A photo's garment is brighter and flatter than a product shot's: a gamma below 1 lifts the mid-greys, a
    contrast above 1 pushes the light ones to white; images not chosen (`p`) keep their grey levels exactly."""
    pixels = torch.zeros(64, 1, 28, 28)
    pixels[:, :, 4:24, 8:20] = torch.linspace(0.2, 0.8, 12)  # a garment shaded from dark to light, left to right
    out = run(augment_with(p=0.5, gamma=[0.6, 0.6], contrast=[1.4, 1.4]), (pixels - MEAN) / STD) * STD + MEAN
    toned = ~torch.isclose(out, pixels, atol=1e-5).flatten(1).all(1)
    assert 16 < toned.sum() < 48, "about half the images chosen"
    expected = (pixels[toned] ** 0.6 * 1.4).clamp(max=1)
    assert torch.allclose(out[toned], expected, atol=1e-5) and (out[toned][:, :, 4:24, 19] == 1).all()
    assert torch.equal(out[~toned], pixels[~toned]) and (out[:, :, :4] == 0).all()


def test_only_footwear_is_turned_upright_as_photos_from_above_show_it():
    lying = torch.zeros(40, 1, 28, 28)
    lying[:, :, 16:24, 2:26] = 0.8  # a shoe's side view: wide and low
    labels = torch.tensor([FOOTWEAR[i % 3] for i in range(20)] + [0] * 20)
    out = run(augment_with(p=0.0, footwear_from_above=1.0), (lying - MEAN) / STD, labels=labels) * STD + MEAN
    lit = out[:, 0] > 0.3
    tall = lit.any(dim=2).sum(dim=1) > lit.any(dim=1).sum(dim=1)
    assert tall[:20].all() and not tall[20:].any(), "footwear stands up, T-shirts stay as they are"
    assert torch.allclose(out[20:], lying[20:], atol=1e-5)


def pullover_images(n: int) -> torch.Tensor:
    """Normalised tiles of a long-sleeved top as product shots show it: a body with sleeves hanging down its sides."""
    pixels = torch.zeros(n, 1, 28, 28)
    pixels[:, :, 2:26, 9:19] = 0.8
    pixels[:, :, 3:23, 5:9] = 0.6
    pixels[:, :, 3:23, 19:23] = 0.6
    return (pixels - MEAN) / STD


def test_sleeves_of_tops_are_raised_as_laid_flat_garments_show_them():
    labels = torch.tensor([SLEEVED[i % 4] for i in range(16)] + [1] * 16)  # tops, then trousers
    images = pullover_images(32)
    out = run(augment_with(p=0.0, sleeves_spread=1.0), images, labels=labels) * STD + MEAN
    lit = out[:, 0] > 0.3
    tall, wide = lit.any(dim=2).sum(dim=1), lit.any(dim=1).sum(dim=1)
    assert (wide[:16] > 18).all() and (tall[:16] < 24).all(), "raised sleeves make a top wider, zoomed out to keep them in the tile"
    assert torch.allclose(out[16:], images[16:] * STD + MEAN, atol=1e-5), "trousers have no sleeves to raise"


def test_raising_sleeves_by_no_angle_changes_nothing():
    x, y = torch.meshgrid(torch.linspace(-1, 1, 9), torch.linspace(-1, 1, 9), indexing="xy")
    source_x, source_y = raise_sleeves(x[None], y[None], torch.zeros(1, 1, 1), torch.full((1, 1, 1), 0.4))
    assert torch.allclose(source_x, x) and torch.allclose(source_y, y)


def test_a_pair_of_shoes_is_two_shoes_side_by_side_fitted_to_the_tile():
    upright = torch.zeros(8, 1, 28, 28)
    upright[:, :, 2:26, 10:17] = 0.8  # a shoe from above: long and narrow
    pair = side_by_side(upright, torch.Generator().manual_seed(0))[:, 0] > 0.3
    for lit in pair:
        columns = lit.any(dim=0).int()
        runs = int((columns.diff() == 1).sum()) + int(columns[0])
        rows, cols = torch.nonzero(lit.any(dim=1)).flatten(), torch.nonzero(columns).flatten()
        assert runs in (1, 2), "two shoes, touching or a few pixels apart"
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= 25, "the pair fills the tile, as preprocess fits a photo's garment"
        assert cols[-1] - cols[0] + 1 >= 14, "two shoes are wider than one"


def test_random_erasing_fills_one_rectangle_of_the_chosen_images_with_noise():
    images = bar_images(64)
    out = run(augment_with(p=0.0, erase=0.5), images, seed=3)
    differs = (out - images).abs() > 1e-4
    changed = differs.flatten(1).any(dim=1)
    assert 16 <= int(changed.sum()) <= 48, "about half of the images are erased"
    assert torch.allclose(out[~changed], images[~changed], atol=1e-5)
    for after, where in zip(out[changed], differs[changed]):
        rows, cols = torch.nonzero(where[0], as_tuple=True)
        box = slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)
        assert where[0][box].float().mean() > 0.9, "one solid rectangle"
        noise = after[0][box] * STD + MEAN
        assert noise.numel() >= 8 and noise.min() >= 0 and noise.max() <= 1, "of noise in [0, 1]"
        assert noise.std() > 0.1, "noise, not a flat fill"


@pytest.mark.parametrize("override", ["train.augment.p=1.5", "train.augment.sleeves_spread=2", "train.augment.erase=-0.1",
                                      "train.augment.scale=[1.2,0.8]", "train.augment.gamma=[0,1]",
                                      "train.augment.rotate=400", "train.augment.aspect=[1.0]"])
def test_bad_settings_are_refused(override):
    with pytest.raises(ConfigError, match="train.augment"):
        load_config(overrides=[override])
