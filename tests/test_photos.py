import numpy as np

from trainer.photos import macro_interval


def test_the_macro_interval_is_what_the_photos_sampling_allows():
    """Seven classes of 150 photos, 65% right in each: the bootstrap's 95% interval should match the normal
    approximation, 1.96 standard errors of a mean of seven proportions either side, and not move with the seed."""
    right = [np.arange(150) < 0.65 * 150 for _ in range(7)]
    p = right[0].mean()
    half = 1.96 * np.sqrt(p * (1 - p) / 150) / np.sqrt(7)
    low, high = macro_interval(right)
    assert abs((high - low) / 2 - half) < 0.1 * half and abs((low + high) / 2 - p) < 0.005
    assert macro_interval(right, seed=1) != (low, high) and abs(macro_interval(right, seed=1)[0] - low) < 0.005
    assert macro_interval([np.ones(20, dtype=bool)] * 3) == (1.0, 1.0), "photos all right leave no doubt"
