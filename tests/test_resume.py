"""Exact resume with the package's own `tf.data` pipeline (`to_dataset`).

A run that `keras.callbacks.BackupAndRestore` resumes in a fresh model and
pipeline must end bit-identical to an uninterrupted one: the shuffled order
of epoch `e` is a function of `(seed, e)` only, and the pipeline's
`epoch_callback` tells a fresh pipeline the epoch Keras resumes at.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtlbook.data import to_dataset
from mtlbook.data.pipelines import ShuffleEpoch
from mtlbook.training import MultiTaskModel
from mtlbook.weighting import DynamicWeightAverage

pytestmark = pytest.mark.tensorflow

EXAMPLES = 40


def make_data(n=EXAMPLES):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = {"a": (x[:, 0] > 0).astype("int32"),
         "b": (2.0 * x[:, 1] - x[:, 2]).astype("float32")[:, None]}
    return x, y


def make_model(multitask):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    trunk = keras.layers.Dense(8, activation="tanh", name="trunk")(inputs)
    outputs = {"a": keras.layers.Dense(2, name="a")(trunk),
               "b": keras.layers.Dense(1, name="b")(trunk)}
    loss = {"a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "b": "mse"}
    if multitask:
        model = MultiTaskModel(inputs, outputs,
                               strategy=DynamicWeightAverage())
    else:
        model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=loss)
    return model


class _InterruptInSecondEpoch(keras.callbacks.Callback):
    """Raises after one batch of epoch 2 (the backup holds epoch 1)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1:
            raise RuntimeError("interrupted")


def train(multitask, callbacks=(), repeat=False, fresh_seed=0,
          pass_epoch_callback=True):
    """Fits a fresh model on a fresh shuffled pipeline for 3 epochs."""
    model = make_model(multitask)
    # The global seed must not matter: the order is drawn from `seed`.
    keras.utils.set_random_seed(fresh_seed)
    x, y = make_data()
    dataset = to_dataset(x, y, batch_size=16, shuffle=True, seed=3,
                         repeat=repeat)
    steps = dict(steps_per_epoch=2) if repeat else {}
    own = [dataset.epoch_callback] if pass_epoch_callback else []
    model.fit(dataset, epochs=3, verbose=0, shuffle=False,
              callbacks=[*own, *callbacks], **steps)
    return model


@pytest.mark.parametrize(
    "multitask, repeat, pass_epoch_callback",
    [(False, False, True), (True, False, True), (False, True, True),
     (True, False, False)],
    ids=["keras_model", "multitask_dwa", "repeat_steps_per_epoch",
         "multitask_adds_the_callback_itself"],
)
def test_backup_and_restore_resumes_bit_identically(tmp_path, multitask,
                                                      repeat,
                                                      pass_epoch_callback):
    reference = make_model(multitask)
    x, y = make_data()
    steps = dict(steps_per_epoch=2) if repeat else {}
    # The plain usage, without the callback: an uninterrupted run.
    reference.fit(to_dataset(x, y, batch_size=16, shuffle=True, seed=3,
                             repeat=repeat),
                  epochs=3, verbose=0, shuffle=False, **steps)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        train(multitask, [backup, _InterruptInSecondEpoch()], repeat,
              pass_epoch_callback=pass_epoch_callback)
    resumed = train(multitask, [backup], repeat, fresh_seed=7,
                    pass_epoch_callback=pass_epoch_callback)

    for a, b in zip(reference.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    if multitask:
        assert resumed.strategy.epochs_seen.numpy() == 3.0
        for a, b in zip(reference.strategy.weights, resumed.strategy.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def epoch_orders(dataset, epochs):
    return [np.concatenate([batch.numpy().ravel() for batch in dataset])
            for _ in range(epochs)]


def test_every_epoch_is_a_new_permutation_drawn_from_seed_and_epoch():
    x = np.arange(EXAMPLES, dtype="int64")
    keras.utils.set_random_seed(0)
    orders = epoch_orders(to_dataset(x, batch_size=16, shuffle=True,
                                     seed=5), 3)
    keras.utils.set_random_seed(1)
    again = epoch_orders(to_dataset(x, batch_size=16, shuffle=True,
                                    seed=5), 3)
    for epoch, order in enumerate(orders):
        np.testing.assert_array_equal(np.sort(order), x)
        np.testing.assert_array_equal(order, again[epoch])
        expected = [
            tf.random.experimental.index_shuffle(
                i, [5, epoch], EXAMPLES - 1).numpy()
            for i in range(EXAMPLES)
        ]
        np.testing.assert_array_equal(order, expected)
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    other_seed = epoch_orders(to_dataset(x, batch_size=16, shuffle=True,
                                         seed=6), 1)
    assert not np.array_equal(orders[0], other_seed[0])


def test_epoch_callback_sets_the_epoch_of_a_fresh_pipeline():
    x = np.arange(EXAMPLES, dtype="int64")
    reference = epoch_orders(to_dataset(x, batch_size=16, shuffle=True), 3)
    fresh = to_dataset(x, batch_size=16, shuffle=True)
    fresh.epoch_callback.on_epoch_begin(2)
    np.testing.assert_array_equal(epoch_orders(fresh, 1)[0], reference[2])


def test_repeat_and_cache_keep_working():
    x = np.arange(10, dtype="float32")[:, None]
    y = np.arange(10, dtype="int32")
    repeated = to_dataset(x, y, batch_size=4, shuffle=True, cache=True,
                          repeat=True)
    assert repeated.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    stream = np.concatenate([b[1].numpy() for b in repeated.take(10)])
    assert len(stream) == 40  # batches run across passes
    passes = stream.reshape(4, 10)
    for one_pass in passes:
        np.testing.assert_array_equal(np.sort(one_pass), y)
    assert not np.array_equal(passes[0], passes[1])
    pairs = next(iter(repeated))
    np.testing.assert_array_equal(pairs[0].numpy()[:, 0], pairs[1].numpy())
    finite = to_dataset(x, y, batch_size=4, shuffle=True, cache=False)
    assert finite.cardinality().numpy() == 3
    assert [b[0].shape[0] for b in finite] == [4, 4, 2]


def test_without_shuffle_the_pipeline_is_unchanged():
    x, y = make_data()
    for cache in (True, False):
        dataset = to_dataset(x, y, batch_size=16, cache=cache)
        expected = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        assert dataset.element_spec == expected.element_spec
        for (bx, by), (ex, ey) in zip(dataset, expected, strict=True):
            np.testing.assert_array_equal(bx.numpy(), ex.numpy())
            for task in ey:
                np.testing.assert_array_equal(by[task].numpy(),
                                              ey[task].numpy())
    shuffled = to_dataset(x, y, batch_size=16, shuffle=True)
    assert shuffled.element_spec == expected.element_spec
    assert isinstance(dataset.epoch_callback, ShuffleEpoch)


class _Recorder(keras.Model):
    """Records the first column of every input batch `fit` draws."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.batches = []
        self.epoch_starts = []

    def call(self, inputs):
        return self.dense(inputs)

    def train_step(self, data):
        self.batches.append(data[0].numpy()[:, 0].tolist())
        return {"batches": tf.constant(float(len(self.batches)))}


class _MarkEpochs(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.model.epoch_starts.append(len(self.model.batches))


# steps_per_epoch=2 on a finite pipeline: Keras warns at each pass's end
@pytest.mark.filterwarnings("ignore:Your input ran out of data")
@pytest.mark.parametrize("repeat, steps, execution", [
    (False, None, 2), (False, 2, 1), (True, 3, 2), (True, 5, 1),
])
def test_epoch_callback_follows_what_fit_draws(repeat, steps, execution):
    # Whatever `fit` draws per epoch (a whole pass, `steps_per_epoch`
    # batches, rounded up to executions, cut at the end of a finite pass),
    # a fresh pipeline told the epoch starts with that epoch's first batch.
    x = np.arange(10, dtype="float32")[:, None]
    y = np.zeros(10, dtype="float32")
    model = _Recorder()
    model.compile(run_eagerly=True, steps_per_execution=execution)
    model(x[:1])
    dataset = to_dataset(x, y, batch_size=4, shuffle=True, repeat=repeat)
    model.fit(dataset, epochs=4, verbose=0, shuffle=False,
              steps_per_epoch=steps,
              callbacks=[dataset.epoch_callback, _MarkEpochs()])
    params = {"steps": steps if steps or repeat else 3, "epochs": 4}
    for epoch, start in enumerate(model.epoch_starts):
        fresh = to_dataset(x, y, batch_size=4, shuffle=True, repeat=repeat)
        fresh.epoch_callback.set_model(model)
        fresh.epoch_callback.set_params(params)
        fresh.epoch_callback.on_epoch_begin(epoch)
        first = next(iter(fresh))[0].numpy()[:, 0].tolist()
        assert first == model.batches[start], epoch


def test_start_of_epoch_arithmetic():
    callback = ShuffleEpoch(10, 4)
    assert callback.start_of_epoch(3) == 30
    assert callback.start_of_epoch(3, steps=3) == 30
    # 2 batches per epoch, 3 per pass: a pass lasts 2 epochs
    assert callback.start_of_epoch(1, steps=2) == 8
    assert callback.start_of_epoch(2, steps=2) == 10
    repeated = ShuffleEpoch(10, 4, repeat=True)
    assert repeated.start_of_epoch(2, steps=3) == 24
    assert repeated.start_of_epoch(2, steps=3, steps_per_execution=2) == 32
    assert repeated.start_of_epoch(0) == 0
    with pytest.raises(ValueError, match="steps_per_epoch"):
        repeated.start_of_epoch(1)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(batch_size=True), TypeError, "`batch_size`.*batch_size=True"),
    (dict(batch_size=2.0), TypeError, "`batch_size`"),
    (dict(batch_size=0), ValueError, "`batch_size`.*batch_size=0"),
    (dict(seed=True), TypeError, "`seed` must be an int.*seed=True"),
    (dict(seed=1.5), TypeError, "`seed`.*seed=1.5"),
    (dict(seed="0"), TypeError, "`seed`"),
    (dict(seed=None), TypeError, "`seed`.*seed=None"),
    (dict(seed=2**64), ValueError, "`seed` must fit in int64"),
    (dict(shuffle="no"), TypeError, "`shuffle` must be a bool.*'no'"),
    (dict(shuffle=1), TypeError, "`shuffle`"),
    (dict(cache="yes"), TypeError, "`cache`"),
    (dict(repeat=None), TypeError, "`repeat`"),
    (dict(x=np.zeros((0, 2))), ValueError, r"`x`.*shape \(0, 2\)"),
    (dict(x=3.0), TypeError, r"`x` must be an array of shape `\(n, ...\)`"),
    (dict(x=[[1, 2], [3]]), TypeError, "`x`"),
    (dict(y={"a": 3}), TypeError, r"`y\['a'\]`.*Received"),
    (dict(y={"a": None}), TypeError, r"`y\['a'\]`"),
    (dict(y={"a": "abc"}), TypeError, r"`y\['a'\]`"),
    (dict(y={"a": [object()] * 4}), TypeError, r"`y\['a'\]`"),
    (dict(y={"a": np.zeros(3)}), ValueError, r"len\(y\['a'\]\)=3"),
    (dict(y={}), ValueError, "`y` must be a non-empty dict"),
    (dict(y={0: np.zeros(4)}), TypeError, "task names"),
    (dict(y=np.zeros(5)), ValueError, r"len\(x\)=4, len\(y\)=5"),
])
def test_to_dataset_rejects_bad_arguments(kwargs, error, match):
    arguments = dict(x=np.zeros((4, 2)), y=None)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        to_dataset(**arguments)


def test_shuffle_epoch_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`examples`.*examples=0"):
        ShuffleEpoch(0, 4)
    with pytest.raises(TypeError, match="`batch_size`.*batch_size=True"):
        ShuffleEpoch(4, True)
    callback = ShuffleEpoch(4, 2)
    with pytest.raises(ValueError, match="`epoch` must be an int >= 0"):
        callback.start_of_epoch(-1)
    with pytest.raises(TypeError, match="`steps`.*steps=2.0"):
        callback.start_of_epoch(1, steps=2.0)
    with pytest.raises(ValueError, match="`steps_per_execution`"):
        callback.start_of_epoch(1, steps=2, steps_per_execution=0)
    with pytest.raises(TypeError, match="`repeat`"):
        ShuffleEpoch(4, 2, repeat="no")
