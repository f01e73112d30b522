"""Tests of mtlbook.continual: the diagonal Fisher and the EWC penalty."""

import keras
import numpy as np
import pytest
from keras import ops

from mtlbook.continual import ElasticWeightConsolidation, fisher_diagonal

tensorflow_only = pytest.mark.tensorflow


def softmax_regression(seed=0, inputs=3, classes=3, activation=None):
    keras.utils.set_random_seed(seed)
    x = keras.Input((inputs,))
    return keras.Model(x, keras.layers.Dense(classes, activation=activation,
                                             name="dense")(x))


def data(n=7, inputs=3, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs)).astype("float32")
    return x, rng.integers(0, classes, n).astype("int32")


def probabilities(model, x):
    kernel, bias = model.get_weights()
    z = x.astype("float64") @ kernel + bias
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def numpy(value):
    return ops.convert_to_numpy(value)


# --- fisher_diagonal, against the closed form of softmax regression ------
# For logits z = x W + b, d log p(c | x) / d W[j, k] = x_j (1[c = k] - p_k).
# True Fisher: sum_c p_c (1[c = k] - p_k)^2 = p_k (1 - p_k).

@tensorflow_only
@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_true_fisher_is_the_closed_form(batch_size):
    model, (x, _) = softmax_regression(), data()
    p = probabilities(model, x)
    expected_kernel = np.mean(x[:, :, None] ** 2 * (p * (1 - p))[:, None, :],
                              axis=0)
    expected_bias = np.mean(p * (1 - p), axis=0)
    kernel, bias = fisher_diagonal(model, x, labels="model",
                                   batch_size=batch_size)
    assert kernel.dtype == np.float32 and kernel.shape == (3, 3)
    np.testing.assert_allclose(kernel, expected_kernel, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bias, expected_bias, rtol=1e-5, atol=1e-7)


@tensorflow_only
def test_empirical_fisher_uses_the_data_labels():
    model, (x, y) = softmax_regression(), data()
    residual = np.eye(3)[y] - probabilities(model, x)
    expected = np.mean(x[:, :, None] ** 2 * residual[:, None, :] ** 2, axis=0)
    kernel, bias = fisher_diagonal(model, x, y[:, None], labels="data",
                                   batch_size=2)
    np.testing.assert_allclose(kernel, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bias, np.mean(residual ** 2, axis=0),
                               rtol=1e-5, atol=1e-7)


@tensorflow_only
def test_sampled_fisher_estimates_the_true_one_and_is_seeded():
    model, (x, _) = softmax_regression(), data()
    exact = fisher_diagonal(model, x)[0]
    sampled = fisher_diagonal(model, x, labels="sampled", samples=4000)[0]
    np.testing.assert_allclose(sampled, exact, atol=0.03 * exact.max())
    again = fisher_diagonal(model, x, labels="sampled", samples=5, seed=3)
    once = fisher_diagonal(model, x, labels="sampled", samples=5, seed=3)
    np.testing.assert_array_equal(again[0], once[0])


@tensorflow_only
def test_probabilities_give_the_same_fisher_as_logits():
    x, _ = data()
    logits = fisher_diagonal(softmax_regression(), x)
    probs = fisher_diagonal(softmax_regression(activation="softmax"), x,
                            from_logits=False)
    for a, b in zip(logits, probs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@tensorflow_only
def test_fisher_of_chosen_variables_and_of_unused_ones():
    inputs = keras.Input((3,))
    head = keras.layers.Dense(3, name="head")(inputs)
    other = keras.layers.Dense(2, name="other")(inputs)
    model = keras.Model(inputs, [head, other])
    sub = keras.Model(inputs, head)
    x, _ = data()
    kernel, = fisher_diagonal(sub, x, variables=[sub.get_layer("head").kernel])
    assert kernel.shape == (3, 3) and (kernel > 0).all()
    with pytest.raises(ValueError, match="`variables`"):
        fisher_diagonal(sub, x, variables=[model.get_layer("other").kernel])
    with pytest.raises(ValueError, match="`model`"):
        fisher_diagonal(model, x)  # two outputs


@tensorflow_only
@pytest.mark.parametrize("kwargs, argument", [
    (dict(labels="true"), "labels"),
    (dict(labels=None), "labels"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2.0), "batch_size"),
    (dict(samples=True), "samples"),
    (dict(seed=-1), "seed"),
    (dict(from_logits="yes"), "from_logits"),
    (dict(labels="data"), "y"),
    (dict(labels="data", y=np.array([0, 1, 5, 0, 0, 0, 0])), "y"),
    (dict(labels="data", y=np.zeros(3, "int32")), "y"),
    (dict(variables=[]), "variables"),
    (dict(variables="kernel"), "variables"),
])
def test_fisher_bad_arguments(kwargs, argument):
    model, (x, _) = softmax_regression(), data()
    with pytest.raises((ValueError, TypeError), match=f"`{argument}`"):
        fisher_diagonal(model, x, **kwargs)


@tensorflow_only
def test_fisher_bad_model_and_inputs():
    model, (x, _) = softmax_regression(), data()
    with pytest.raises(TypeError, match="`model`.*Received: model='net'"):
        fisher_diagonal("net", x)
    with pytest.raises(ValueError, match="`x`"):
        fisher_diagonal(model, x[:0])
    with pytest.raises(ValueError, match=r"`x`.*\(4, 5\)"):
        fisher_diagonal(model, np.ones((4, 5)))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="`x`"):
        fisher_diagonal(model, x)
    with pytest.raises(TypeError, match="`x`"):
        fisher_diagonal(model, [["a", "b", "c"]])
    inputs = keras.Input((3,))
    one = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(ValueError, match="num_classes >= 2"):
        fisher_diagonal(one, x)


# --- ElasticWeightConsolidation -------------------------------------------

def penalty_setup(strength=3.0):
    model = softmax_regression()
    fisher = [np.arange(9, dtype="float32").reshape(3, 3) / 10,
              np.array([1.0, 0.0, 2.0], "float32")]
    ewc = ElasticWeightConsolidation(model.trainable_variables, fisher,
                                     strength=strength)
    return model, ewc, fisher


def by_hand(model, ewc, fisher, anchors):
    return 0.5 * ewc.strength * sum(
        float(np.sum(f * (w - a) ** 2))
        for f, w, a in zip(fisher, model.get_weights(), anchors))


def test_penalty_is_zero_at_the_anchors_and_matches_the_formula():
    model, ewc, fisher = penalty_setup()
    anchors = model.get_weights()
    assert float(numpy(ewc())) == 0.0
    moved = [w + np.linspace(-1, 1, w.size).reshape(w.shape).astype("float32")
             for w in anchors]
    model.set_weights(moved)
    expected = by_hand(model, ewc, fisher, anchors)
    assert expected > 0
    np.testing.assert_allclose(float(numpy(ewc())), expected, rtol=1e-6)
    # given values instead of the variables' (a stateless loop)
    np.testing.assert_allclose(float(numpy(ewc([ops.convert_to_tensor(w)
                                                for w in anchors]))),
                               0.0, atol=1e-12)
    ewc.strength = 0.5  # lambda scales it linearly
    np.testing.assert_allclose(float(numpy(ewc())), expected / 6, rtol=1e-6)


def test_given_anchors_and_update():
    model, ewc, fisher = penalty_setup(strength=2.0)
    anchors = [np.zeros_like(w) for w in model.get_weights()]
    ewc.update(fisher, anchors)
    np.testing.assert_allclose(float(numpy(ewc())),
                               by_hand(model, ewc, fisher, anchors),
                               rtol=1e-6)
    ewc.update([np.zeros_like(f) for f in fisher])
    assert float(numpy(ewc())) == 0.0


@tensorflow_only
def test_gradient_is_lambda_fisher_times_the_displacement():
    import tensorflow as tf

    model, ewc, fisher = penalty_setup(strength=3.0)
    anchors = model.get_weights()
    model.set_weights([w + 0.5 for w in anchors])
    with tf.GradientTape() as tape:
        penalty = ewc()
    gradients = tape.gradient(penalty, model.trainable_variables)
    for g, f in zip(gradients, fisher):
        np.testing.assert_allclose(g.numpy(), 3.0 * f * 0.5, rtol=1e-6)


@tensorflow_only
def test_a_traced_step_sees_new_strength_and_fisher_without_retracing():
    import tensorflow as tf

    model, ewc, fisher = penalty_setup(strength=1.0)
    anchors = model.get_weights()
    model.set_weights([w + 1.0 for w in anchors])
    traced = tf.function(lambda: ewc())
    first = float(traced())
    ewc.strength = 4.0
    np.testing.assert_allclose(float(traced()), 4 * first, rtol=1e-6)
    ewc.update([2 * f for f in fisher], anchors)
    np.testing.assert_allclose(float(traced()), 8 * first, rtol=1e-6)
    assert traced.experimental_get_tracing_count() == 1


def test_attach_puts_the_penalty_in_fit_and_detach_restores():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(
        3, kernel_regularizer=keras.regularizers.L2(0.01), name="dense")
    model = keras.Model(inputs, dense(inputs))
    anchors = model.get_weights()
    fisher = [np.ones_like(w) for w in anchors]
    ewc = ElasticWeightConsolidation(model.trainable_variables, fisher,
                                     strength=1.0)
    l2 = dense.kernel.regularizer
    model.set_weights([w + 0.1 for w in anchors])

    def total_losses():
        return float(sum(numpy(loss) for loss in model.losses))

    alone = total_losses()
    assert ewc.attach() is ewc
    np.testing.assert_allclose(total_losses(), alone + float(numpy(ewc())),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="already attached"):
        ewc.attach()
    # with a huge strength, fit keeps the weights at their anchors
    model.set_weights(anchors)
    ewc.strength = 1e6
    model.compile(keras.optimizers.SGD(1e-7), "mse")
    x, _ = data(16)
    model.fit(x, np.ones((16, 3)) * 5, epochs=2, verbose=0)
    for before, after in zip(anchors, model.get_weights()):
        np.testing.assert_allclose(after, before, atol=1e-6)
    # without it, the same fit moves them
    ewc.detach()
    assert dense.kernel.regularizer is l2 and dense.bias.regularizer is None
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, np.ones((16, 3)) * 5, epochs=2, verbose=0)
    assert np.abs(model.get_weights()[0] - anchors[0]).max() > 0.1


def test_state_survives_npz_and_a_keras_round_trip(tmp_path):
    model, ewc, fisher = penalty_setup(strength=7.0)
    model.set_weights([w + 0.3 for w in model.get_weights()])
    ewc.save(tmp_path / "ewc.npz")
    model.save(tmp_path / "model.keras")
    restored_model = keras.saving.load_model(tmp_path / "model.keras")
    restored = ElasticWeightConsolidation.load(
        tmp_path / "ewc.npz", restored_model.trainable_variables)
    assert restored.strength == 7.0
    for a, b in zip(restored.fisher + restored.anchors,
                    ewc.fisher + ewc.anchors):
        np.testing.assert_array_equal(numpy(a.value), numpy(b.value))
    np.testing.assert_allclose(float(numpy(restored())),
                               float(numpy(ewc())), rtol=1e-6)
    with pytest.raises(ValueError, match="`variables`"):
        ElasticWeightConsolidation.load(tmp_path / "ewc.npz",
                                        restored_model.trainable_variables[:1])


@pytest.mark.parametrize("kwargs, argument, error", [
    (dict(strength=-1.0), "strength", ValueError),
    (dict(strength=True), "strength", ValueError),
    (dict(strength=float("inf")), "strength", ValueError),
    (dict(fisher="F"), "fisher", TypeError),
    (dict(fisher=[np.ones((3, 3))]), "fisher", ValueError),
    (dict(fisher=[np.ones((3, 2)), np.ones(3)]), "fisher", ValueError),
    (dict(fisher=[-np.ones((3, 3)), np.ones(3)]), "fisher", ValueError),
    (dict(fisher=[np.full((3, 3), np.nan), np.ones(3)]), "fisher",
     ValueError),
    (dict(anchors=[np.ones((3, 3)), np.ones(4)]), "anchors", ValueError),
    (dict(anchors=[np.ones((3, 3)), [np.inf] * 3]), "anchors", ValueError),
    (dict(variables=[]), "variables", TypeError),
    (dict(variables=[np.ones(3)]), "variables", TypeError),
])
def test_penalty_bad_arguments(kwargs, argument, error):
    model = softmax_regression()
    arguments = dict(variables=model.trainable_variables,
                     fisher=[np.ones((3, 3)), np.ones(3)])
    arguments.update(kwargs)
    with pytest.raises(error, match=f"`{argument}"):
        ElasticWeightConsolidation(**arguments)


def test_penalty_bad_values_and_strength_messages():
    model, ewc, _ = penalty_setup()
    with pytest.raises(ValueError, match="`values`"):
        ewc([model.get_weights()[0]])
    with pytest.raises(ValueError, match=r"Received: strength=-2"):
        ewc.strength = -2
    with pytest.raises(ValueError, match="`fisher\\[0\\]` must be >= 0"):
        ewc.update([-np.ones((3, 3)), np.ones(3)])


def test_fisher_says_which_backend_it_needs():
    model, (x, _) = softmax_regression(), data()
    if keras.backend.backend() == "tensorflow":
        assert len(fisher_diagonal(model, x)) == 2
    else:
        with pytest.raises(RuntimeError, match="TensorFlow backend"):
            fisher_diagonal(model, x)
