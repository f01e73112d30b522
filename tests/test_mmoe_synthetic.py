"""Tests of the MMoE synthetic data's sinusoids: fixed or drawn per seed."""

import numpy as np
import pytest

from mtlbook.data import make_mmoe_synthetic
from mtlbook.data.mmoe_synthetic import (ALPHAS, ALPHAS_B, BETAS, BETAS_B,
                                         mmoe_waves, mmoe_weight_vectors)

SIZES = dict(n_train=200, n_validation=0, n_test=50, num_features=8)


def test_fixed_waves_are_the_constants_for_every_seed():
    for seed in (0, 7):
        alphas, betas, alphas_b, betas_b = mmoe_waves(seed, "fixed")
        np.testing.assert_array_equal(alphas, ALPHAS)
        np.testing.assert_array_equal(betas_b, BETAS)
    _, _, alphas_b, betas_b = mmoe_waves(0, "fixed", shared_waves=False)
    np.testing.assert_array_equal(alphas_b, ALPHAS_B)
    np.testing.assert_array_equal(betas_b, BETAS_B)


def test_drawn_waves_differ_per_seed_and_repeat_per_seed():
    first = mmoe_waves(1, "drawn")
    again = mmoe_waves(1, "drawn")
    other = mmoe_waves(2, "drawn")
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], other[0])
    np.testing.assert_array_equal(first[0], first[2])  # shared by default
    own = mmoe_waves(1, "drawn", shared_waves=False)
    np.testing.assert_array_equal(own[0], first[0])
    assert not np.allclose(own[2], own[0])
    # ten standard normal draws per parameter, over many seeds
    draws = np.concatenate([mmoe_waves(s, "drawn")[0] for s in range(200)])
    assert abs(draws.mean()) < 0.1 and abs(draws.std() - 1) < 0.1


def test_drawn_waves_keep_inputs_and_follow_the_formula():
    fixed = make_mmoe_synthetic(**SIZES, correlation=0.5, seed=4)
    drawn = make_mmoe_synthetic(**SIZES, correlation=0.5, seed=4,
                                waves="drawn")
    np.testing.assert_array_equal(fixed["train"].x, drawn["train"].x)
    assert not np.allclose(fixed["train"].y["task_a"],
                           drawn["train"].y["task_a"])
    alphas, betas, _, _ = mmoe_waves(4, "drawn")
    w1, _ = mmoe_weight_vectors(0.5, num_features=8, seed=4)
    z = drawn["train"].x.astype("float64") @ w1
    clean = z + np.sin(np.outer(z, alphas) + betas).sum(axis=1)
    residual = drawn["train"].y["task_a"] - clean
    assert np.std(residual) == pytest.approx(0.1, rel=0.2)  # noise only


def test_waves_rejects_bad_values():
    with pytest.raises(ValueError, match="waves"):
        make_mmoe_synthetic(**SIZES, waves="random")
    with pytest.raises(ValueError, match="waves"):
        mmoe_waves(0, waves=None)
