"""Tests of mtlbook.data.make_digits_m."""

import numpy as np
import pytest

from mtlbook.data import load_digits, make_digits_m
from mtlbook.data.digits_m import blend_with_patches


def test_shapes_ranges_and_labels_match_the_digits():
    target = make_digits_m(image_size=12, validation_fraction=0.1)
    source = load_digits(image_size=12, validation_fraction=0.1)
    assert set(target) == {"train", "validation", "test"}
    for name in target:
        assert target[name].x.shape == source[name].x.shape[:-1] + (3,)
        assert target[name].x.dtype == np.float32
        assert 0.0 <= target[name].x.min() and target[name].x.max() <= 1.0
        np.testing.assert_array_equal(
            target[name].y["digit"], source[name].y["digit"]
        )


def test_deterministic_and_seed_dependent():
    a = make_digits_m(image_size=8, seed=1)["test"].x
    b = make_digits_m(image_size=8, seed=1)["test"].x
    c = make_digits_m(image_size=8, seed=2)["test"].x
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_blend_is_absolute_difference():
    black = np.zeros((3, 8, 8), "float32")
    white = np.ones((3, 8, 8), "float32")
    patches = blend_with_patches(black, seed=0)
    np.testing.assert_allclose(
        blend_with_patches(white, seed=0), 1.0 - patches, atol=1e-6
    )
    with pytest.raises(ValueError, match="images"):
        blend_with_patches(np.zeros((3, 8, 6)))
