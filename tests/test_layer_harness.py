"""Keras's own layer test harness over every layer of mtlbook.layers.

`run_layer_test` (from `keras.src.testing`: a test may use Keras's private
test helpers, the package never does) builds each layer, checks its weight
count, its `get_config` / serialization round trip, a symbolic and an eager
call, one training step and a `mixed_float16` copy (float32 weights,
outputs in the dtype its output spec promises). It has the same arguments
from the package's floor (Keras 3.9) to Colab's and ours (3.13, 3.15).

One gap, filled here: on TensorFlow the harness trains through
`tf.data.Dataset.from_generator`, which takes lists for single values and
fails on layers that read or return lists of tensors (all but `DenseStack`
and `GradientReversal`). For those the harness's training step runs on the
other backends only, and `test_one_training_step_moves_the_weights` trains
every layer on every backend through `fit` on arrays.

The mixed-precision tests then check what the harness cannot see from
outside: that the layer and every layer inside it compute in float16 (the
harness compares the outputs with an output spec, which is computed by the
same code) while all their variables stay float32.
"""

import keras
import numpy as np
import pytest
from keras.src.testing import TestCase

import mtlbook.layers
from mtlbook.layers import (
    CGC,
    PLE,
    Adapter,
    CrossStitch,
    DenseStack,
    GradientReversal,
    MMoE,
    OMoE,
)

# class: (constructor arguments, input shape, expected output shapes,
#         number of trainable weights, number of non-trainable weights)
CASES = {
    DenseStack: ({"units": [4, 3]}, (2, 5), (2, 3), 4, 0),
    CrossStitch: ({"self_weight": 0.8}, [(2, 5), (2, 5)],
                  [(2, 5), (2, 5)], 1, 0),
    MMoE: ({"num_tasks": 2, "num_experts": 3, "expert_units": [4]}, (2, 5),
           [(2, 4), (2, 4)], 3 * 2 + 2 * 2, 0),
    OMoE: ({"num_tasks": 2, "num_experts": 3, "expert_units": [4]}, (2, 5),
           [(2, 4), (2, 4)], 3 * 2 + 1 * 2, 0),
    CGC: ({"num_tasks": 2, "num_task_experts": 1, "num_shared_experts": 1,
           "expert_units": [4], "output_shared": True}, (2, 5),
          [(2, 4)] * 3, 3 * 2 + 3 * 2, 0),
    PLE: ({"num_tasks": 2, "num_levels": 2, "expert_units": [4]}, (2, 5),
          [(2, 4)] * 2, (3 * 2 + 3 * 2) + (3 * 2 + 2 * 2), 0),
    GradientReversal: ({"lambda_": 0.5}, (2, 5), (2, 5), 0, 1),
    Adapter: ({"bottleneck": 2, "activation": "gelu"}, (2, 5), (2, 5), 4, 0),
}


class _Harness(TestCase):
    """Gives access to Keras's `run_layer_test` outside unittest."""

    def runTest(self):
        pass


def harness():
    case = _Harness()
    case.setUp()  # Keras's own set-up: a clear session
    return case


def has_lists(*shapes):
    return any(isinstance(shape, list) for shape in shapes)


def inputs_for(shape, seed=0):
    rng = np.random.default_rng(seed)
    if isinstance(shape, list):
        return [rng.normal(size=s).astype("float32") for s in shape]
    return rng.normal(size=shape).astype("float32")


def as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def inner_layers(layer):
    """Every layer held by `layer`'s attributes, recursively."""
    found = []
    for value in vars(layer).values():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, keras.layers.Layer) and item is not layer:
                found += [item] + inner_layers(item)
    return found


def test_every_layer_of_the_package_has_a_case():
    layers = {getattr(mtlbook.layers, name) for name in mtlbook.layers.__all__}
    layers = {c for c in layers
              if isinstance(c, type) and issubclass(c, keras.layers.Layer)}
    assert layers == set(CASES)


@pytest.mark.parametrize("layer_class", list(CASES), ids=lambda c: c.__name__)
def test_keras_layer_harness(layer_class):
    kwargs, shape, output_shape, trainable, non_trainable = CASES[layer_class]
    # Its training step needs a backend other than TensorFlow for lists
    # (see the module's docstring); the next test trains every layer.
    training = keras.backend.backend() != "tensorflow" or not has_lists(
        shape, output_shape)
    harness().run_layer_test(
        layer_class,
        init_kwargs=kwargs,
        input_shape=shape,
        expected_output_shape=output_shape,
        expected_output_dtype=(
            ["float32"] * len(output_shape) if has_lists(output_shape)
            else "float32"),
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=non_trainable,
        run_training_check=training,
        run_mixed_precision_check=True,
    )


class _SumOfOutputs(keras.Model):
    """`layer` under a scalar per example: the sum of all its outputs."""

    def __init__(self, layer):
        super().__init__(name="sum_of_outputs")
        self.layer = layer

    def call(self, inputs):
        total = [keras.ops.sum(y, axis=-1, keepdims=True)
                 for y in as_list(self.layer(inputs))]
        return sum(total[1:], total[0])


@pytest.mark.parametrize("layer_class", list(CASES), ids=lambda c: c.__name__)
def test_one_training_step_moves_the_weights(layer_class):
    kwargs, shape, _, _, _ = CASES[layer_class]
    keras.utils.set_random_seed(0)
    # GradientReversal has no weights of its own: a Dense layer after it
    model = _SumOfOutputs(
        keras.Sequential([GradientReversal(**kwargs), keras.layers.Dense(3)])
        if layer_class is GradientReversal else layer_class(**kwargs))
    x = inputs_for(shape)
    model(x)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=lambda y_true, y_pred: keras.ops.mean(y_pred))
    before = [w.copy() for w in model.get_weights()]
    # An adapter's up-projection starts at zero, so the first step moves
    # only it (the down-projection's gradient is zero): take two steps.
    model.fit(x, np.zeros((len(as_list(x)[0]), 1), "float32"),
              epochs=2 if layer_class is Adapter else 1,
              batch_size=len(as_list(x)[0]), verbose=0)
    changed = [not np.array_equal(a, b)
               for a, b in zip(before, model.get_weights())]
    assert np.mean(changed) > 0.5, changed


@pytest.mark.parametrize("layer_class", list(CASES), ids=lambda c: c.__name__)
def test_mixed_float16_computes_in_float16_with_float32_weights(layer_class):
    kwargs, shape, _, _, _ = CASES[layer_class]
    layer = layer_class(**kwargs, dtype="mixed_float16")
    outputs = as_list(layer(inputs_for(shape)))
    assert [keras.backend.standardize_dtype(y.dtype) for y in outputs] == [
        "float16"] * len(outputs)
    for inner in [layer] + inner_layers(layer):
        assert inner.dtype_policy.name == "mixed_float16", inner.name
        assert inner.compute_dtype == "float16", inner.name
    assert layer.weights
    assert {keras.backend.standardize_dtype(w.dtype)
            for w in layer.weights} == {"float32"}


@pytest.mark.parametrize("layer_class", [DenseStack, MMoE, CGC, PLE],
                         ids=lambda c: c.__name__)
def test_float16_policy_reaches_every_inner_layer(layer_class):
    # (float16 rather than float64, which JAX gives only with jax_enable_x64)
    kwargs, shape, _, _, _ = CASES[layer_class]
    layer = layer_class(**kwargs, dtype="float16")
    outputs = as_list(layer(inputs_for(shape)))
    assert {keras.backend.standardize_dtype(y.dtype) for y in outputs} == {
        "float16"}
    assert {keras.backend.standardize_dtype(w.dtype)
            for w in layer.weights} == {"float16"}
    assert all(inner.dtype_policy.name == "float16"
               for inner in inner_layers(layer))


@pytest.mark.parametrize("layer_class", [DenseStack, MMoE, CGC, PLE],
                         ids=lambda c: c.__name__)
def test_mixed_precision_survives_a_keras_file(layer_class, tmp_path):
    kwargs, shape, _, _, _ = CASES[layer_class]
    inputs = keras.Input(shape[1:])
    outputs = as_list(layer_class(**kwargs, dtype="mixed_float16")(inputs))
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    layer = restored.layers[-1]
    assert all(inner.compute_dtype == "float16"
               for inner in [layer] + inner_layers(layer))
    x = inputs_for(shape)
    for a, b in zip(as_list(model.predict(x, verbose=0)),
                    as_list(restored.predict(x, verbose=0))):
        assert a.dtype == b.dtype == np.float16
        np.testing.assert_array_equal(a, b)
