"""Tests of the two-objective toy of the PCGrad and CAGrad papers."""

import numpy as np
import pytest

from mtlbook.data.toy_objectives import (
    STARTS, descend, distance_to_set, pareto_set, toy_losses,
)


def test_losses_values_and_shape():
    losses = np.asarray(toy_losses([[0.0, -8.355], [7.0, -8.4345]]))
    assert losses.shape == (2, 2)
    # the middle of the Pareto set: both tasks equal
    np.testing.assert_allclose(losses[0], [-15.0916, -15.0916], atol=1e-3)
    # task 1's minimum is -20 * tanh(8.43 / 2) + a small quadratic term
    assert losses[1, 0] < -19.98
    # above the x1 axis: the log valleys, clamped at log(LOWER) + 6
    upper = np.asarray(toy_losses([-8.5, 7.5]))
    assert upper.shape == (2,)
    assert np.all(upper > np.log(0.000005) + 6 - 1e-4)


def test_losses_rejects_wrong_shape():
    with pytest.raises(ValueError, match="must have shape"):
        toy_losses([1.0, 2.0, 3.0])


def test_pareto_set_ends_and_middle():
    points = pareto_set(num=5)
    assert points.shape == (5, 2)
    np.testing.assert_allclose(points[:, 0], [-7, -3.5, 0, 3.5, 7])
    np.testing.assert_allclose(points[2, 1], -8.3551, atol=1e-3)
    np.testing.assert_allclose(points[0, 1], points[-1, 1], atol=1e-6)
    assert points[0, 1] < points[2, 1]  # the set bends down at its ends
    with pytest.raises(ValueError, match="`num` must be"):
        pareto_set(num=1)


def test_distance_to_set():
    reference = np.array([[0.0, 0.0], [1.0, 0.0]])
    assert distance_to_set([0.5, 2.0], reference) == pytest.approx(
        np.sqrt(0.25 + 4.0))
    np.testing.assert_allclose(
        distance_to_set([[1.0, 1.0], [0.0, 0.0]], reference), [1.0, 0.0])
    with pytest.raises(ValueError, match="must have shape"):
        distance_to_set([[1.0, 2.0, 3.0]], reference)


def test_descend_sum_goes_downhill():
    def total(gradients, step):
        del step
        return gradients[0] + gradients[1]

    paths = descend(total, STARTS[1:2], steps=250, learning_rate=0.01,
                    record_every=100)
    assert paths.shape == (1, 4, 2)  # start, 100, 200, 250
    np.testing.assert_allclose(paths[0, 0], STARTS[1])
    before = np.asarray(toy_losses(paths[0, 0])).sum()
    after = np.asarray(toy_losses(paths[0, -1])).sum()
    assert after < before
    single = descend(total, STARTS[1], steps=10, record_every=5)
    assert single.shape == (3, 2)


def test_descend_rejects_bad_arguments():
    def total(gradients, step):
        return gradients[0] + gradients[1]

    with pytest.raises(ValueError, match="`steps` must be"):
        descend(total, STARTS[0], steps=0)
    with pytest.raises(ValueError, match="`learning_rate` must be"):
        descend(total, STARTS[0], learning_rate=-1.0)
    with pytest.raises(ValueError, match="`starts` must be"):
        descend(total, [1.0, 2.0, 3.0])
