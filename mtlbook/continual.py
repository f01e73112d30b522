"""Learning a new task without forgetting the old: Fisher and EWC.

`fisher_diagonal` estimates the diagonal of the Fisher information of a
classifier's weights on the data of an old task (the expected squared
gradient of the log-likelihood). `ElasticWeightConsolidation` holds those
values, the weights the old task ended with (the anchors) and a strength,
and returns the quadratic penalty of Elastic Weight Consolidation that
keeps important weights near their anchors while a new task trains. It
works in a hand-written loop (`loss + ewc()`) and in `fit` (`ewc.attach()`
puts the penalty on the variables as regularizers); `save` / `load` keep
its state in a NumPy `.npz` file.

`fisher_diagonal` computes per-example gradients with `tf.GradientTape`
(TensorFlow backend); the penalty uses `keras.ops` only.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

__all__ = ["ElasticWeightConsolidation", "fisher_diagonal"]

FISHER_LABELS = ("data", "model", "sampled")


def _shown(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_int(name, value, minimum):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) \
            or value < minimum:
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. "
            f"Received: {name}={_shown(value)}"
        )


def _check_strength(strength):
    if not isinstance(strength, numbers.Real) or isinstance(strength, bool) \
            or not math.isfinite(strength) or strength < 0:
        raise ValueError(
            "`strength` must be a finite float >= 0. "
            f"Received: strength={_shown(strength)}"
        )
    return float(strength)


def _check_variables(variables):
    if isinstance(variables, keras.Variable):
        variables = [variables]
    if not isinstance(variables, (list, tuple)) or not variables or not all(
            isinstance(v, keras.Variable) for v in variables):
        raise TypeError(
            "`variables` must be a non-empty list of keras.Variable (e.g. "
            "model.trainable_variables). "
            f"Received: variables={_shown(variables)}"
        )
    return list(variables)


def _check_arrays(name, arrays, variables):
    """`arrays` as float32 arrays shaped like `variables`, finite."""
    if isinstance(arrays, np.ndarray) or not isinstance(
            arrays, (list, tuple)):
        raise TypeError(
            f"`{name}` must be a list of arrays, one per variable. "
            f"Received: {name}={_shown(arrays)} of type "
            f"{type(arrays).__name__}"
        )
    if len(arrays) != len(variables):
        raise ValueError(
            f"`{name}` must hold one array per variable ({len(variables)}). "
            f"Received: {len(arrays)} arrays"
        )
    checked = []
    for index, (array, variable) in enumerate(zip(arrays, variables)):
        try:
            array = np.asarray(array, dtype="float32")
        except (TypeError, ValueError):
            raise TypeError(
                f"`{name}[{index}]` must be an array of numbers. "
                f"Received: {name}[{index}]={_shown(array)}"
            ) from None
        if array.shape != tuple(variable.shape):
            raise ValueError(
                f"`{name}[{index}]` must have the shape of its variable "
                f"{tuple(variable.shape)}. Received shape {array.shape}"
            )
        if not np.isfinite(array).all():
            raise ValueError(
                f"`{name}[{index}]` must be finite. Received "
                f"{np.size(array) - np.isfinite(array).sum()} NaN or "
                "infinite values"
            )
        checked.append(array)
    return checked


def _single_output(model):
    try:
        output = model.output
    except (AttributeError, ValueError):
        output = None
    if not hasattr(output, "shape") or len(output.shape) != 2 \
            or output.shape[-1] is None or output.shape[-1] < 2:
        raise ValueError(
            "`model` must have one output of shape (batch, num_classes) "
            "with num_classes >= 2 (for a multi-head model, pass "
            "keras.Model(model.input, model.get_layer(head).output)). "
            f"Received: output={_shown(output)}"
        )
    return int(output.shape[-1])


def fisher_diagonal(model, x, y=None, labels="model", batch_size=32,
                    samples=1, seed=0, variables=None, from_logits=True):
    """Diagonal of the Fisher information of a classifier's weights.

    For each weight `theta_i` it returns the mean over the `n` examples of
    the expected squared gradient of the log-likelihood,

    `F_i = (1 / n) sum_x E_{c ~ q(c | x)} [(d log p(c | x) / d theta_i)^2]`,

    where `p(c | x)` is the model's softmax and the labels `c` come from:

    - `labels="model"`: the model itself, exactly: `q = p` and the
      expectation is the sum over all classes weighted by `p(c | x)`. This
      is the true Fisher information (one gradient per class).
    - `labels="sampled"`: the model, by Monte Carlo: `samples` labels per
      example drawn from `p(c | x)` (seeded by `seed`), averaged. An
      unbiased estimate of the true Fisher; what Kirkpatrick et al. did.
    - `labels="data"`: the data labels `y` (`q` puts all its mass on
      `y`): the *empirical* Fisher. Cheapest, but small where the model
      already fits the data well, and it is not the Fisher information.

    Gradients are per example (a Jacobian over each batch of
    `batch_size` examples, `tf.GradientTape`, so the TensorFlow backend is
    needed); the model runs in inference mode (`training=False`).

    Args:
        model: `keras.Model` with one output `(batch, num_classes)`: logits
            (`from_logits=True`) or probabilities.
        x: array, the model's input for the old task's examples.
        y: int class indices, one per example; needed for `"data"` only.
        labels: str. `"model"`, `"sampled"` or `"data"` (see above).
        batch_size: int >= 1. Examples per Jacobian.
        samples: int >= 1. Labels drawn per example with `"sampled"`.
        seed: int >= 0. Seed of those draws.
        variables: optional list of `keras.Variable` of `model`; default
            `model.trainable_variables`.
        from_logits: bool. Whether the output is logits.

    Returns:
        List of float32 NumPy arrays, one per variable and shaped like it.

    Example:

    ```python
    fisher = fisher_diagonal(old_task_model, x_old, labels="model")
    ewc = ElasticWeightConsolidation(old_task_model.trainable_variables,
                                     fisher, strength=100.0)
    ```

    Reference:
        Kirkpatrick et al., 2017, "Overcoming catastrophic forgetting in
        neural networks"; Martens, 2020, "New insights and perspectives on
        the natural gradient method" (true vs empirical Fisher).
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "fisher_diagonal computes per-example gradients with "
            "tf.GradientTape: it needs the TensorFlow backend. Received: "
            f"backend {keras.backend.backend()!r}"
        )
    import tensorflow as tf

    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. "
            f"Received: model={_shown(model)} of type "
            f"{type(model).__name__}"
        )
    num_classes = _single_output(model)
    if not isinstance(labels, str) or labels not in FISHER_LABELS:
        raise ValueError(
            f"`labels` must be one of {FISHER_LABELS}. "
            f"Received: labels={_shown(labels)}"
        )
    _check_int("batch_size", batch_size, 1)
    _check_int("samples", samples, 1)
    _check_int("seed", seed, 0)
    if not isinstance(from_logits, (bool, np.bool_)):
        raise TypeError(
            "`from_logits` must be a bool. "
            f"Received: from_logits={_shown(from_logits)}"
        )
    variables = _check_variables(
        model.trainable_variables if variables is None else variables)
    own = {id(v) for v in model.variables}
    if any(id(v) not in own for v in variables):
        raise ValueError(
            "`variables` must be variables of `model`. Received: "
            f"{[v.path for v in variables if id(v) not in own][:3]}"
        )
    try:
        x = np.asarray(x, dtype="float32")
    except (TypeError, ValueError):
        raise TypeError(
            f"`x` must be an array of numbers. Received: x={_shown(x)}"
        ) from None
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(
            f"`x` must hold at least one example. Received shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("`x` must be finite. Received NaN or infinite "
                         "values")
    expected = tuple(getattr(model, "input_shape", ()) or ())[1:]
    if len(expected) != x.ndim - 1 or any(
            want is not None and want != got
            for want, got in zip(expected, x.shape[1:])):
        raise ValueError(
            f"`x` must have the model's input shape (n, "
            f"{', '.join(map(str, expected))}). Received shape {x.shape}"
        )
    if labels == "data":
        if y is None:
            raise ValueError(
                '`y` is needed with labels="data" (the empirical Fisher). '
                "Received: y=None"
            )
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.shape != (len(x),) or y.dtype.kind not in "iu" \
                or y.min() < 0 or y.max() >= num_classes:
            raise ValueError(
                f"`y` must be {len(x)} int class indices in "
                f"[0, {num_classes}). Received: y of shape {y.shape}, "
                f"dtype {y.dtype}"
            )
    rng = np.random.default_rng(seed)
    values = [v.value for v in variables]
    signature = [
        tf.TensorSpec((None,) + x.shape[1:], "float32"),
        tf.TensorSpec((None, None), "int32"),
        tf.TensorSpec((None, None), "float32"),
    ]

    @tf.function(input_signature=signature)
    def weighted_squares(batch, chosen, weights):
        # sum over the batch and the chosen labels of
        # weight * (d log p(label | x) / d theta)^2
        with tf.GradientTape() as tape:
            output = tf.cast(model(batch, training=False), "float32")
            if from_logits:
                log_p = tf.nn.log_softmax(output, axis=-1)
            else:
                log_p = tf.math.log(tf.clip_by_value(output, 1e-12, 1.0))
            picked = tf.gather(log_p, chosen, axis=1, batch_dims=1)
        jacobians = tape.jacobian(picked, values)
        sums = []
        for value, jacobian in zip(values, jacobians):
            if jacobian is None:  # the output does not depend on it
                sums.append(tf.zeros_like(value))
                continue
            shape = tf.concat([tf.shape(weights),
                               tf.ones([len(value.shape)], "int32")], 0)
            sums.append(tf.reduce_sum(
                tf.reshape(weights, shape) * tf.square(jacobian), [0, 1]))
        return sums

    totals = [np.zeros(tuple(v.shape), "float64") for v in variables]
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        if labels == "data":
            chosen = y[start:start + batch_size, None]
            weights = np.ones(chosen.shape)
        else:
            output = ops.convert_to_numpy(model(batch, training=False))
            output = output.astype("float64")
            if from_logits:
                p = np.exp(output - output.max(axis=1, keepdims=True))
            else:
                p = np.clip(output, 0.0, None)
            p /= p.sum(axis=1, keepdims=True)
            if labels == "model":  # every class, weighted by p(c | x)
                chosen = np.tile(np.arange(num_classes), (len(batch), 1))
                weights = p
            else:  # `samples` labels drawn from p(c | x): each class
                # weighted by the share of the draws that picked it
                chosen = np.tile(np.arange(num_classes), (len(batch), 1))
                weights = np.stack([rng.multinomial(samples, q)
                                    for q in p]) / samples
        sums = weighted_squares(batch, chosen.astype("int32"),
                                weights.astype("float32"))
        for total, part in zip(totals, sums):
            total += part.numpy()
    return [(total / len(x)).astype("float32") for total in totals]


class _AnchoredPenalty(keras.regularizers.Regularizer):
    """`(strength / 2) * sum(fisher * (w - anchor)^2)` on one variable.

    Set on a variable by `ElasticWeightConsolidation.attach`; adds any
    regularizer the variable had before.
    """

    def __init__(self, owner, index, previous=None):
        self.owner, self.index, self.previous = owner, index, previous

    def __call__(self, x):
        penalty = self.owner._term(self.index, x)
        if self.previous is not None:
            penalty = penalty + self.previous(x)
        return penalty

    def get_config(self):
        raise NotImplementedError(
            "The EWC penalty is not saved with a model: save its state with "
            "ElasticWeightConsolidation.save and attach it again after "
            "loading."
        )


class ElasticWeightConsolidation:
    """The Elastic Weight Consolidation penalty, for a loop or for `fit`.

    With anchors `theta*` (the weights after the old task), the diagonal
    Fisher `F` (from `fisher_diagonal` on the old task) and a strength
    `lambda`, calling the object returns

    `penalty = (lambda / 2) * sum_i F_i * (theta_i - theta*_i)^2`

    summed over every element of every variable, as a scalar tensor. Add it
    to the new task's loss. In a hand-written loop: `loss = task_loss +
    ewc()` inside the gradient tape. With `fit`: `ewc.attach()` sets a
    regularizer on each variable that adds its term to the model's
    `losses` (and so to the loss `fit` minimises; call it before `compile`
    or compile again); `ewc.detach()` takes it off. Only the variables'
    values are read: weights of the new head are not in `variables` and
    are free.

    Anchors, Fisher values and `lambda` are held in non-trainable
    `keras.Variable`s (`fisher`, `anchors`, and `strength` as a float
    property), so `update` and `ewc.strength = ...` reach a step function
    traced before without retracing it. They are not part of a model's
    `.keras` file: `save` and `load` keep them in a NumPy `.npz` file.

    Args:
        variables: list of `keras.Variable`, the weights to consolidate.
        fisher: list of arrays shaped like `variables`, finite (`>= 0`).
        strength: finite float >= 0, `lambda`.
        anchors: optional list of arrays shaped like `variables`; default
            the variables' current values.

    Call arguments:
        values: optional list of tensors to use instead of the variables'
            values (for a stateless loop, e.g. on JAX).

    Returns:
        (when called) a scalar float32 tensor, the penalty.

    Example:

    ```python
    fisher = fisher_diagonal(old_model, x_old)
    ewc = ElasticWeightConsolidation(old_model.trainable_variables, fisher,
                                     strength=100.0)
    with tf.GradientTape() as tape:  # a hand-written step
        loss = new_task_loss(model(x_new), y_new) + ewc()
    ewc.attach()  # or: ordinary fit, the penalty now in model.losses
    model.compile(...); model.fit(x_new, y_new)
    ewc.save("ewc.npz")  # anchors, Fisher and strength
    ```

    Reference:
        Kirkpatrick et al., 2017, "Overcoming catastrophic forgetting in
        neural networks".
    """

    def __init__(self, variables, fisher, strength=1.0, anchors=None):
        self.variables = _check_variables(variables)
        self._strength = keras.Variable(_check_strength(strength),
                                        dtype="float32", trainable=False,
                                        name="ewc_strength")
        self.fisher = [keras.Variable(np.zeros(v.shape, "float32"),
                                      trainable=False, name="ewc_fisher")
                       for v in self.variables]
        self.anchors = [keras.Variable(np.zeros(v.shape, "float32"),
                                       trainable=False, name="ewc_anchor")
                        for v in self.variables]
        self._attached = []
        self.update(fisher, anchors)

    @property
    def strength(self):
        """The strength `lambda`, a float; assigning it needs no retrace."""
        return float(ops.convert_to_numpy(self._strength.value))

    @strength.setter
    def strength(self, value):
        self._strength.assign(_check_strength(value))

    def update(self, fisher, anchors=None):
        """Replaces the Fisher values and the anchors.

        They live in non-trainable variables, so a step function traced
        before (a `tf.function`, `fit`) uses the new values without
        retracing: one traced step serves several seeds or tasks.

        Args:
            fisher: list of arrays shaped like `variables`, finite, >= 0.
            anchors: optional list of arrays shaped like `variables`;
                default the variables' current values.

        Returns:
            `self`.
        """
        fisher = _check_arrays("fisher", fisher, self.variables)
        for index, array in enumerate(fisher):
            if (array < 0).any():
                raise ValueError(
                    f"`fisher[{index}]` must be >= 0 (a mean of squares). "
                    f"Received a minimum of {float(array.min())!r}"
                )
        if anchors is None:
            anchors = [ops.convert_to_numpy(v.value) for v in self.variables]
        anchors = _check_arrays("anchors", anchors, self.variables)
        for target, array in zip(self.fisher + self.anchors,
                                 fisher + anchors):
            target.assign(array)
        return self

    def _term(self, index, value):
        difference = ops.cast(value, "float32") - self.anchors[index].value
        return 0.5 * self._strength.value * ops.sum(
            self.fisher[index].value * ops.square(difference))

    def __call__(self, values=None):
        if values is None:
            values = [v.value for v in self.variables]
        elif not isinstance(values, (list, tuple)) or len(values) != len(
                self.variables):
            raise ValueError(
                "`values` must be a list with one tensor per variable "
                f"({len(self.variables)}). Received: {_shown(values)}"
            )
        terms = [self._term(i, value) for i, value in enumerate(values)]
        return ops.sum(ops.stack(terms))

    def attach(self):
        """Puts the penalty on the variables as regularizers (for `fit`).

        A regularizer the variable already had is kept and added. Compile
        the model (again) after attaching so that `fit` traces the loss
        anew.

        Returns:
            `self`.
        """
        if self._attached:
            raise ValueError(
                "The penalty is already attached. Received a second "
                "attach() without detach()"
            )
        for index, variable in enumerate(self.variables):
            previous = variable.regularizer
            variable.regularizer = _AnchoredPenalty(self, index, previous)
            self._attached.append(previous)
        return self

    def detach(self):
        """Restores the variables' previous regularizers.

        Returns:
            `self`.
        """
        for variable, previous in zip(self.variables, self._attached):
            variable.regularizer = previous
        self._attached = []
        return self

    def save(self, path):
        """Writes anchors, Fisher and strength to a NumPy `.npz` file.

        Args:
            path: str or path-like, the file (`.npz` is appended by NumPy
                when missing).
        """
        arrays = {"strength": np.float64(self.strength)}
        for index, (fisher, anchor) in enumerate(zip(self.fisher,
                                                     self.anchors)):
            arrays[f"fisher_{index}"] = ops.convert_to_numpy(fisher.value)
            arrays[f"anchor_{index}"] = ops.convert_to_numpy(anchor.value)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path, variables):
        """Rebuilds a saved penalty on `variables` (e.g. of a loaded model).

        Args:
            path: the `.npz` file written by `save`.
            variables: list of `keras.Variable`, in the order they were
                saved with.

        Returns:
            An `ElasticWeightConsolidation` with the saved anchors, Fisher
            and strength.
        """
        variables = _check_variables(variables)
        with np.load(path) as stored:
            count = sum(key.startswith("fisher_") for key in stored.files)
            if count != len(variables):
                raise ValueError(
                    f"`variables` must match the {count} saved arrays. "
                    f"Received: {len(variables)} variables"
                )
            return cls(variables,
                       [stored[f"fisher_{i}"] for i in range(count)],
                       float(stored["strength"]),
                       anchors=[stored[f"anchor_{i}"] for i in range(count)])
