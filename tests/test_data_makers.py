"""Tests of the generated data sets: MultiDigits, Shapes, MMoE synthetic."""

import numpy as np
import pytest

from mtlbook.data import make_mmoe_synthetic, make_multidigits, make_shapes
from mtlbook.data.mmoe_synthetic import label_correlation, mmoe_weight_vectors


def test_multidigits_shapes_labels_and_determinism():
    a = make_multidigits(n_train=50, n_validation=10, n_test=20, seed=3)
    b = make_multidigits(n_train=50, n_validation=10, n_test=20, seed=3)
    assert a["train"].x.shape == (50, 24, 24, 1)
    assert a["train"].x.dtype == np.float32
    assert 0.0 <= a["test"].x.min() and a["test"].x.max() <= 1.0
    for name in a:
        np.testing.assert_array_equal(a[name].x, b[name].x)
        for task in ("left", "right"):
            assert a[name].y[task].min() >= 0 and a[name].y[task].max() <= 9
    c = make_multidigits(n_train=50, n_validation=10, n_test=20, seed=4)
    assert not np.array_equal(a["train"].x, c["train"].x)


def test_multidigits_places_each_digit_in_its_corner():
    data = make_multidigits(n_train=5, n_validation=0, n_test=5, image_size=24,
                            digit_size=16)
    x = data["train"].x[..., 0]
    assert set(data) == {"train", "test"}
    # the top-right and bottom-left 8x8 corners are covered by no digit
    assert x[:, :8, 16:].max() == 0.0 and x[:, 16:, :8].max() == 0.0


def test_multidigits_splits_share_no_source_image():
    # Recover the source pools: with 24 px canvases and 16 px digits, the
    # top-left 8x8 block shows only the left digit's top-left block.
    data = make_multidigits(n_train=3000, n_validation=300, n_test=600)
    blocks = {name: {s[:8, :8, 0].tobytes() for s in split.x}
              for name, split in data.items()}
    # a few source digits are pixel duplicates in scikit-learn's data set
    assert len(blocks["train"] & blocks["test"]) <= 5
    assert len(blocks["train"] & blocks["validation"]) <= 5


@pytest.mark.parametrize("kwargs, match", [
    ({"n_train": 0}, "n_train"),
    ({"n_validation": -1}, "n_validation"),
    ({"digit_size": 24}, "digit_size"),
])
def test_multidigits_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_multidigits(**kwargs)


def test_shapes_tasks_ranges_and_determinism():
    sizes = dict(n_train=200, n_validation=0, n_test=50, image_size=24)
    a = make_shapes(**sizes, seed=1)
    b = make_shapes(**sizes, seed=1)
    x, y = a["train"]
    assert x.shape == (200, 24, 24, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(y) == {"shape", "color", "scale", "rotation", "x", "y"}
    assert set(np.unique(y["shape"])) == {0, 1, 2}
    assert set(np.unique(y["color"])) == {0, 1, 2}
    for task in ("scale", "rotation", "x", "y"):
        assert y[task].dtype == np.float32
        assert 0.0 <= y[task].min() and y[task].max() <= 1.0
    assert np.all(y["rotation"][y["shape"] == 1] == 0.0)  # circles
    np.testing.assert_array_equal(x, b["train"].x)


def test_shapes_colour_and_position_are_visible():
    data = make_shapes(n_train=300, n_validation=0, n_test=10, image_size=32)
    x, y = data["train"]
    lit = x.max(axis=-1) > 0.15
    # the brightest channel of the shape's pixels is its colour
    channel = np.array([np.argmax(img[m].mean(0)) for img, m in zip(x, lit)])
    assert np.mean(channel == y["color"]) == 1.0
    # the centre of mass moves with x (left -> right)
    cols = np.array([np.nonzero(m)[1].mean() for m in lit])
    assert np.corrcoef(cols, y["x"])[0, 1] > 0.95
    squares = y["shape"] == 0  # areas differ between shapes: compare squares
    sizes = lit[squares].sum(axis=(1, 2))
    assert np.corrcoef(sizes, y["scale"][squares])[0, 1] > 0.9


def test_shapes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        make_shapes(image_size=8)
    with pytest.raises(ValueError, match="n_test"):
        make_shapes(n_test=0)


@pytest.mark.parametrize("correlation", [1.0, 0.9, 0.5, 0.0, -0.3])
def test_mmoe_weight_vectors_have_the_requested_cosine(correlation):
    w1, w2 = mmoe_weight_vectors(correlation, num_features=100, seed=7)
    cosine = w1 @ w2 / (np.linalg.norm(w1) * np.linalg.norm(w2))
    assert cosine == pytest.approx(correlation, abs=1e-6)


def test_mmoe_linear_parts_correlate_as_requested():
    data = make_mmoe_synthetic(n_train=20000, n_validation=0, n_test=10,
                               correlation=0.5, num_features=16, seed=2)
    w1, w2 = mmoe_weight_vectors(0.5, num_features=16, seed=2)
    x = data["train"].x
    assert np.corrcoef(x @ w1, x @ w2)[0, 1] == pytest.approx(0.5, abs=0.03)
    # the sinusoids make the labels less correlated than the weights
    assert label_correlation(data["train"]) < 0.5


def test_mmoe_synthetic_shapes_and_determinism():
    sizes = dict(n_train=100, n_validation=20, n_test=30, num_features=8)
    a = make_mmoe_synthetic(**sizes)
    b = make_mmoe_synthetic(**sizes)
    assert a["train"].x.shape == (100, 8) and a["validation"].x.shape == (20, 8)
    assert set(a["test"].y) == {"task_a", "task_b"}
    np.testing.assert_array_equal(a["test"].y["task_b"], b["test"].y["task_b"])
    with pytest.raises(ValueError, match="correlation"):
        make_mmoe_synthetic(correlation=1.5)
    with pytest.raises(ValueError, match="num_features"):
        make_mmoe_synthetic(num_features=1)
    with pytest.raises(ValueError, match="n_train"):
        make_mmoe_synthetic(n_train=0)
    with pytest.raises(TypeError, match="shared_waves"):
        make_mmoe_synthetic(shared_waves="no")


def test_mmoe_shared_waves_false_changes_task_b_only():
    sizes = dict(n_train=200, n_validation=10, n_test=50, num_features=8)
    same = make_mmoe_synthetic(**sizes, correlation=0.0, seed=5)
    own = make_mmoe_synthetic(**sizes, correlation=0.0, seed=5,
                              shared_waves=False)
    default = make_mmoe_synthetic(**sizes, correlation=0.0, seed=5,
                                  shared_waves=True)
    for name in same:  # the default is the paper's generator, unchanged
        np.testing.assert_array_equal(same[name].x, default[name].x)
        np.testing.assert_array_equal(same[name].y["task_b"],
                                      default[name].y["task_b"])
        # same inputs and task A; task B follows other sinusoids
        np.testing.assert_array_equal(same[name].x, own[name].x)
        np.testing.assert_array_equal(same[name].y["task_a"],
                                      own[name].y["task_a"])
        assert not np.allclose(same[name].y["task_b"], own[name].y["task_b"])
    # task B is still its direction plus ten unit sinusoids plus noise
    _, w2 = mmoe_weight_vectors(0.0, num_features=8, seed=5)
    residual = own["train"].y["task_b"] - own["train"].x @ w2
    assert np.abs(residual).max() <= 10 + 5 * 0.1


# --- bad input: a clear error naming the argument ----------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"n_train": True}, "`n_train`"),
    ({"n_test": 2.0}, "`n_test`"),
    ({"image_size": True}, "`image_size`"),
    ({"digit_size": True}, "`digit_size`"),
    ({"seed": -1}, "`seed`"),
    ({"seed": 0.5}, "`seed`"),
])
def test_multidigits_rejects_bools_floats_and_negative_seeds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_multidigits(**kwargs)


def test_shapes_rejects_bools_and_bad_seeds():
    with pytest.raises(ValueError, match="`n_validation`"):
        make_shapes(n_validation=False)
    with pytest.raises(ValueError, match="`seed`"):
        make_shapes(seed=-3)


@pytest.mark.parametrize("kwargs, match", [
    ({"correlation": True}, "`correlation`"),
    ({"correlation": float("nan")}, "`correlation`"),
    ({"num_features": True}, "`num_features`"),
    ({"n_validation": True}, "`n_validation`"),
    ({"seed": -1}, "`seed`"),
    ({"seed": 1.5}, "`seed`"),
    ({"waves": 3}, "`waves`"),
])
def test_mmoe_synthetic_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        arguments = dict(n_train=10, n_validation=0, n_test=10)
        arguments.update(kwargs)
        make_mmoe_synthetic(**arguments)


def test_mmoe_waves_and_label_correlation_reject_bad_input():
    from mtlbook.data.digits import Split
    from mtlbook.data.mmoe_synthetic import mmoe_waves

    with pytest.raises(TypeError, match="shared_waves"):
        mmoe_waves(shared_waves="yes")
    with pytest.raises(ValueError, match="seed"):
        mmoe_waves(seed=-1, waves="drawn")
    with pytest.raises(ValueError, match="split"):
        label_correlation({"task_a": [1, 2]})
    constant = Split(np.zeros((3, 1)), {"task_a": np.ones(3),
                                        "task_b": np.arange(3.0)})
    with pytest.raises(ValueError, match="non-constant"):
        label_correlation(constant)
    short = Split(np.zeros((3, 1)), {"task_a": np.arange(3.0),
                                     "task_b": np.arange(2.0)})
    with pytest.raises(ValueError, match="lengths 3 and 2"):
        label_correlation(short)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"noise": float("nan")}, ValueError, "`noise`"),
    ({"noise": float("inf")}, ValueError, "`noise`"),
    ({"noise": -0.1}, ValueError, "`noise`"),
    ({"n_per_domain": True}, ValueError, "`n_per_domain`"),
    ({"seed": -1}, ValueError, "`seed`"),
    ({"test_fraction": True}, ValueError, "`test_fraction`"),
    ({"angle_degrees": float("nan")}, TypeError, "`angle_degrees`"),
])
def test_shifted_moons_rejects_bad_arguments(kwargs, error, match):
    from mtlbook.data import make_shifted_moons

    with pytest.raises(error, match=match):
        make_shifted_moons(**{"n_per_domain": 20, **kwargs})


def test_rotate_rejects_bad_input():
    from mtlbook.data.moons import rotate

    np.testing.assert_allclose(rotate([[1.0, 0.0]], 90.0, (0.0, 0.0)),
                               [[0.0, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="points"):
        rotate([1.0, 0.0], 90.0, (0.0, 0.0))
    with pytest.raises(ValueError, match="center"):
        rotate([[1.0, 0.0]], 90.0, (0.0, np.nan))
    with pytest.raises(TypeError, match="angle_degrees"):
        rotate([[1.0, 0.0]], float("inf"), (0.0, 0.0))


def test_digits_m_rejects_sizes_beyond_the_photos_and_bad_seeds():
    from mtlbook.data import make_digits_m
    from mtlbook.data.digits_m import blend_with_patches

    with pytest.raises(ValueError, match="`image_size`"):
        make_digits_m(image_size=427)
    with pytest.raises(ValueError, match="`image_size`"):
        make_digits_m(image_size=0)
    with pytest.raises(ValueError, match="images"):
        blend_with_patches(np.zeros((1, 500, 500)))
    with pytest.raises(ValueError, match="`seed`"):
        blend_with_patches(np.zeros((1, 4, 4)), seed=True)
    with pytest.raises(ValueError, match="`seed`"):
        make_digits_m(image_size=8, seed=-1)


def test_toy_objectives_reject_bad_input():
    from mtlbook.data.toy_objectives import descend, distance_to_set, pareto_set

    with pytest.raises(ValueError, match="`num`"):
        pareto_set(num=True)
    with pytest.raises(ValueError, match="reference"):
        distance_to_set([0.0, 0.0], np.zeros((0, 2)))
    with pytest.raises(ValueError, match="`points` must be finite"):
        distance_to_set([np.nan, 0.0], [[1.0, 1.0]])
    assert distance_to_set([0.0, 0.0], [[3.0, 4.0], [6.0, 8.0]]) == 5.0

    def add(g, step):
        return g[0] + g[1]

    for kwargs, match in (
        (dict(steps=True), "`steps`"),
        (dict(record_every=0), "`record_every`"),
        (dict(learning_rate=float("nan")), "`learning_rate`"),
        (dict(learning_rate=float("inf")), "`learning_rate`"),
        (dict(learning_rate=True), "`learning_rate`"),
        (dict(starts=[np.nan, 1.0]), "`starts` must be finite"),
        (dict(starts=np.zeros((0, 2))), "`starts`"),
    ):
        arguments = dict(combine=add, starts=(1.0, 1.0), steps=2)
        arguments.update(kwargs)
        with pytest.raises(ValueError, match=match):
            descend(**arguments)
    with pytest.raises(TypeError, match="combine"):
        descend("sum", (1.0, 1.0), steps=2)
