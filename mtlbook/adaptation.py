"""Domain-adversarial training (DANN): a model builder and a training loop.

`domain_adversarial_model` puts a label head and, behind a
`GradientReversal` layer, a domain head on one feature extractor.
`DomainAdversarialTrainer` trains it with `tf.GradientTape` on labelled
source batches and unlabelled target batches, one `tf.function` step at a
time, with the DANN schedule for the reversal strength.

With `lambda_max=0` the domain head still learns, but no gradient reaches
the features from it: the features, and the label head, are trained
exactly as a source-only classifier.
"""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from mtlbook.layers.gradient_reversal import GradientReversal, dann_lambda


def _check(name, value, low, kind=numbers.Real, low_included=True):
    # Bools are refused (True is an int in Python), NaN and infinities too.
    if not isinstance(value, kind) or isinstance(value, bool) or (
            not math.isfinite(value)
            or (value < low if low_included else value <= low)):
        what = "an int" if kind is numbers.Integral else "a finite float"
        sign = ">=" if low_included else ">"
        raise ValueError(
            f"`{name}` must be {what} {sign} {low}. "
            f"Received: {name}={value!r}"
        )


def _check_features(name, x, feature_shape):
    """`x` as a float32 array of finite rows shaped `feature_shape`."""
    x = np.asarray(x, "float32")
    if x.ndim < 1 or len(x) == 0 or len(x.shape) != len(feature_shape) + 1 \
            or any(want is not None and want != got
                   for want, got in zip(feature_shape, x.shape[1:])):
        raise ValueError(
            f"`{name}` must be a non-empty array of shape (n, "
            f"{', '.join(map(str, feature_shape))}) (the model's input). "
            f"Received: {name} of shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError(
            f"`{name}` must hold finite numbers. Received: {name} with "
            f"{np.size(x) - np.isfinite(x).sum()} NaN or infinite values"
        )
    return x


def _check_labels(y, n, num_classes):
    """`y` as int32 class indices, one per source example."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            "`source_y` must be one class index per row of `source_x` "
            f"({n}). Received: source_y of shape {y.shape}"
        )
    if y.dtype.kind not in "biuf" or (
            y.dtype.kind == "f" and not np.array_equal(y, np.round(y))) \
            or y.size and (y.min() < 0 or y.max() >= num_classes):
        shown = np.unique(y)[:10] if y.dtype.kind in "biuf" else y[:10]
        raise ValueError(
            "`source_y` must hold integer class indices in "
            f"[0, {num_classes}) (the model's num_classes). "
            f"Received values {shown}"
        )
    return y.astype("int32")


def domain_adversarial_model(feature_extractor, num_classes,
                             domain_units=(32,), lambda_=0.0, name="dann"):
    """A label head and a reversed-gradient domain head on shared features.

    ```
    x -> feature_extractor -> features -> Dense(num_classes)    "label"
    features -> GradientReversal("reversal") -> Dense(u, relu) ...
             -> Dense(1)                                         "domain"
    ```

    Args:
        feature_extractor: `keras.Model` with one input of known shape,
            mapping inputs to a feature vector `(batch, d)`.
        num_classes: int >= 2. Number of label logits.
        domain_units: list or tuple of ints > 0. Hidden widths of the
            domain head (may be empty: a linear domain classifier).
        lambda_: finite float >= 0. Initial strength of the gradient
            reversal.
        name: str. Model name.

    Returns:
        A functional `keras.Model` with outputs
        `{"label": (batch, num_classes) logits, "domain": (batch, 1) logit}`;
        its `GradientReversal` layer is named `"reversal"`.

    Example:

    ```python
    features = keras.Sequential([keras.Input((2,)),
                                 keras.layers.Dense(32, "relu")])
    model = domain_adversarial_model(features, num_classes=2)
    ```

    Reference:
        Ganin et al., 2016, "Domain-Adversarial Training of Neural Networks".
    """
    if not isinstance(feature_extractor, keras.Model):
        raise TypeError(
            "`feature_extractor` must be a keras.Model. "
            f"Received: feature_extractor={feature_extractor!r:.80} "
            f"of type {type(feature_extractor).__name__}"
        )
    _check("num_classes", num_classes, 2, numbers.Integral)
    if not isinstance(domain_units, (list, tuple)) or not all(
            isinstance(u, numbers.Integral) and not isinstance(u, bool)
            and u > 0 for u in domain_units):
        raise ValueError(
            "`domain_units` must be a list or tuple of positive ints. "
            f"Received: domain_units={domain_units!r}"
        )
    try:
        input_shape = feature_extractor.input_shape
    except (AttributeError, ValueError):
        input_shape = None  # not built: no known input
    if not isinstance(input_shape, tuple) or not all(
            d is None or isinstance(d, int) for d in input_shape):
        raise ValueError(
            "`feature_extractor` must have one input of known shape (build "
            "it with keras.Input). Received: input_shape="
            f"{input_shape}"
        )
    inputs = keras.Input(input_shape[1:], name="inputs")
    features = feature_extractor(inputs)
    if len(features.shape) != 2:
        raise ValueError(
            "`feature_extractor` must return vectors (batch, d). "
            f"Received: output shape {tuple(features.shape)}"
        )
    label = keras.layers.Dense(num_classes, name="label")(features)
    hidden = GradientReversal(lambda_, name="reversal")(features)
    for index, units in enumerate(domain_units):
        hidden = keras.layers.Dense(int(units), activation="relu",
                                    name=f"domain_hidden{index}")(hidden)
    domain = keras.layers.Dense(1, name="domain")(hidden)
    return keras.Model(inputs, {"label": label, "domain": domain}, name=name)


class DomainAdversarialTrainer:
    """Trains a `domain_adversarial_model` with a custom `tf.GradientTape` loop.

    One step takes a labelled source batch and an unlabelled target batch,
    runs both through the model in one call (so BatchNormalization, if any,
    sees both domains) and minimises

    `loss = CE(label(source), y) + domain_weight * BCE(domain(all), d)`

    with `d = 0` for source and `1` for target examples. The reversal layer
    turns the domain term's gradient on the features into `-lambda` times
    itself: the domain head learns to tell the domains apart, the features
    learn to make them indistinguishable. `fit` sets `lambda` before each
    step to `dann_lambda(step / steps, gamma, lambda_max)`.

    Args:
        model: a model from `domain_adversarial_model` (a dict of outputs
            `"label"` and `"domain"`, one `GradientReversal` layer).
        optimizer: a `keras.optimizers.Optimizer`.
        domain_weight: finite float >= 0. Weight of the domain loss.

    Example:

    ```python
    trainer = DomainAdversarialTrainer(model, keras.optimizers.Adam(1e-2))
    history = trainer.fit(x_source, y_source, x_target, steps=500,
                          lambda_max=1.0)
    ```

    Reference:
        Ganin et al., 2016, "Domain-Adversarial Training of Neural Networks".
    """

    def __init__(self, model, optimizer, domain_weight=1.0):
        if not isinstance(model, keras.Model):
            raise TypeError(
                "`model` must be a keras.Model. "
                f"Received: model={model!r:.80} "
                f"of type {type(model).__name__}"
            )
        reversal = [layer for layer in model.layers
                    if isinstance(layer, GradientReversal)]
        if len(reversal) != 1:
            raise ValueError(
                "`model` must contain exactly one GradientReversal layer. "
                f"Received: a model with {len(reversal)}"
            )
        try:
            outputs = model.output
        except (AttributeError, ValueError):
            outputs = None  # a model that was never called
        if not isinstance(outputs, dict) or not {"label", "domain"} <= set(
                outputs):
            raise ValueError(
                "`model` must return a dict with outputs 'label' and "
                "'domain', as domain_adversarial_model's models do. Received: "
                f"outputs {outputs}"
            )
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "`optimizer` must be a keras.optimizers.Optimizer. "
                f"Received: optimizer={optimizer!r:.80} "
                f"of type {type(optimizer).__name__}"
            )
        _check("domain_weight", domain_weight, 0)
        self.model, self.optimizer = model, optimizer
        self.reversal = reversal[0]
        self.domain_weight = float(domain_weight)
        self.num_classes = int(outputs["label"].shape[-1])
        self.feature_shape = tuple(model.input_shape[1:])
        self.optimizer.build(model.trainable_variables)
        self._optimizer_start = [v.numpy() for v in optimizer.variables]
        self._step = tf.function(self._train_step, reduce_retracing=True)
        self._steps = tf.function(self._train_steps, reduce_retracing=True)

    def _train_step(self, source_x, source_y, target_x, lambda_):
        self.reversal.lambda_.assign(lambda_)
        n_source = tf.shape(source_x)[0]
        inputs = tf.concat([source_x, target_x], axis=0)
        domains = tf.concat([tf.zeros([n_source, 1]),
                             tf.ones([tf.shape(target_x)[0], 1])], axis=0)
        with tf.GradientTape() as tape:
            outputs = self.model(inputs, training=True)
            label_loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(
                    source_y, outputs["label"][:n_source], from_logits=True))
            domain_loss = tf.reduce_mean(
                keras.losses.binary_crossentropy(
                    domains, outputs["domain"], from_logits=True))
            loss = label_loss + self.domain_weight * domain_loss
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(
            zip(tape.gradient(loss, variables), variables))
        domain_accuracy = tf.reduce_mean(tf.cast(
            tf.equal(tf.cast(outputs["domain"] > 0, "float32"), domains),
            "float32"))
        return {"label_loss": label_loss, "domain_loss": domain_loss,
                "domain_accuracy": domain_accuracy}

    def _train_steps(self, source_x, source_y, target_x, source_index,
                     target_index, lambdas):
        # Several steps in one graph: step i uses rows source_index[i] and
        # target_index[i] and reversal strength lambdas[i].
        logs = {name: tf.constant(0.0) for name in
                ("label_loss", "domain_loss", "domain_accuracy")}
        for i in tf.range(tf.shape(lambdas)[0]):
            logs = self._train_step(
                tf.gather(source_x, source_index[i]),
                tf.gather(source_y, source_index[i]),
                tf.gather(target_x, target_index[i]), lambdas[i])
        return logs

    def reset(self, weights):
        """Restarts training from `weights` with a fresh optimizer state.

        Reusing one trainer for several runs (seeds, methods) saves tracing
        the training graph again for each run.

        Args:
            weights: list of arrays, as from `model.get_weights()` of a
                model built the same way.
        """
        expected = len(self.model.weights)
        if not isinstance(weights, (list, tuple)) or len(weights) != expected:
            received = (f"a list of {len(weights)} arrays"
                        if isinstance(weights, (list, tuple))
                        else f"{type(weights).__name__}")
            raise ValueError(
                f"`weights` must be a list of {expected} arrays, as from "
                f"`model.get_weights()`. Received: weights={received}"
            )
        self.model.set_weights(weights)
        for variable, value in zip(self.optimizer.variables,
                                   self._optimizer_start):
            variable.assign(value)

    def _check_data(self, source_x, source_y, target_x):
        source_x = _check_features("source_x", source_x, self.feature_shape)
        target_x = _check_features("target_x", target_x, self.feature_shape)
        source_y = _check_labels(source_y, len(source_x), self.num_classes)
        return source_x, source_y, target_x

    def train_step(self, source_x, source_y, target_x, lambda_):
        """One optimizer step; returns the losses as floats.

        Args:
            source_x: array of labelled source inputs (finite numbers).
            source_y: int array of their labels, in `[0, num_classes)`.
            target_x: array of unlabelled target inputs (finite numbers).
            lambda_: finite float >= 0. Reversal strength for this step.

        Returns:
            dict with `label_loss`, `domain_loss` and `domain_accuracy`
            (the domain head's accuracy on this batch, before the update).
        """
        _check("lambda_", lambda_, 0)
        source_x, source_y, target_x = self._check_data(
            source_x, source_y, target_x)
        logs = self._step(tf.convert_to_tensor(source_x, "float32"),
                          tf.convert_to_tensor(source_y, "int32"),
                          tf.convert_to_tensor(target_x, "float32"),
                          tf.constant(float(lambda_), "float32"))
        return {name: float(value) for name, value in logs.items()}

    def fit(self, source_x, source_y, target_x, steps, lambda_max=1.0,
            gamma=10.0, batch_size=None, seed=0, log_every=1):
        """Trains for `steps` steps with the DANN lambda schedule.

        Args:
            source_x, source_y: labelled source data (NumPy arrays): finite
                inputs and integer labels in `[0, num_classes)`.
            target_x: unlabelled target data (NumPy array, finite).
            steps: int >= 1. Number of optimizer steps.
            lambda_max: finite float >= 0. Final reversal strength (0:
                source only).
            gamma: finite float > 0. Steepness of the schedule (10 in the
                paper).
            batch_size: optional int >= 1. Examples drawn per domain per
                step (with a fresh permutation each epoch); `None` uses
                every example at every step (full batch).
            seed: int >= 0. Seed of the batch order.
            log_every: int >= 1. Steps run inside one graph call; the
                losses of the last of them are recorded.

        Returns:
            dict of lists, one entry per `log_every` steps: `step`,
            `lambda`, `label_loss`, `domain_loss`, `domain_accuracy`.
        """
        _check("steps", steps, 1, numbers.Integral)
        _check("log_every", log_every, 1, numbers.Integral)
        if batch_size is not None:
            _check("batch_size", batch_size, 1, numbers.Integral)
        _check("lambda_max", lambda_max, 0)
        _check("gamma", gamma, 0, low_included=False)
        _check("seed", seed, 0, numbers.Integral)
        source_x, source_y, target_x = self._check_data(
            source_x, source_y, target_x)
        batches = {"source": _Batches(len(source_x), batch_size, seed),
                   "target": _Batches(len(target_x), batch_size, seed + 1)}
        data = [tf.convert_to_tensor(source_x), tf.convert_to_tensor(source_y),
                tf.convert_to_tensor(target_x)]
        history = {key: [] for key in ("step", "lambda", "label_loss",
                                       "domain_loss", "domain_accuracy")}
        for first in range(0, steps, log_every):
            count = min(log_every, steps - first)
            lambdas = [dann_lambda((first + i) / steps, gamma, lambda_max)
                       for i in range(count)]
            logs = self._steps(
                *data,
                np.stack([batches["source"].next() for _ in range(count)]),
                np.stack([batches["target"].next() for _ in range(count)]),
                np.asarray(lambdas, "float32"))
            history["step"].append(first + count - 1)
            history["lambda"].append(lambdas[-1])
            for name, value in logs.items():
                history[name].append(float(value))
        return history


class _Batches:
    """Index batches: all rows, or `size` rows from per-epoch shuffles."""

    def __init__(self, n, size, seed):
        self.n, self.size = n, size
        self.rng = np.random.default_rng(seed)
        self.order, self.position = np.arange(n), n

    def next(self):
        if self.size is None or self.size >= self.n:
            return self.order
        if self.position + self.size > self.n:
            self.order, self.position = self.rng.permutation(self.n), 0
        self.position += self.size
        return self.order[self.position - self.size:self.position]
