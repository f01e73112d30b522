"""Knowledge distillation: soft targets and teacher annealing.

- `soft_target_loss`: Hinton et al.'s loss between a teacher's and a
  student's logits, `T^2 * KL(softmax(t / T) || softmax(s / T))`.
- `annealed_targets`: the teacher-annealing mix of Clark et al. (BAM!),
  `lambda * y + (1 - lambda) * teacher` with `lambda = step / total_steps`.
- `distillation_targets` and `DistillationLoss`: train a student with plain
  `compile` / `fit` on labels, soft targets or both: the teacher's logits
  travel in `y` next to the one-hot labels, and the loss splits them.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops


def _check_temperature(temperature):
    if (not isinstance(temperature, numbers.Real)
            or isinstance(temperature, bool)
            or not math.isfinite(temperature) or temperature <= 0):
        raise ValueError(
            "`temperature` must be a finite number > 0. "
            f"Received: temperature={temperature!r}"
        )
    return float(temperature)


def _soft_target_loss(teacher_logits, student_logits, temperature):
    """Per-example `T^2 * KL(softmax(t / T) || softmax(s / T))`."""
    teacher_log_probabilities = ops.log_softmax(
        teacher_logits / temperature, axis=-1
    )
    student_log_probabilities = ops.log_softmax(
        student_logits / temperature, axis=-1
    )
    kl = ops.sum(
        ops.exp(teacher_log_probabilities)
        * (teacher_log_probabilities - student_log_probabilities),
        axis=-1,
    )
    return temperature**2 * kl


def soft_target_loss(teacher_logits, student_logits, temperature=2.0):
    """Hinton et al.'s soft-target loss, averaged over the batch.

    `loss = T^2 * mean_batch KL(softmax(t / T) || softmax(s / T))`, with
    `t` the teacher's logits, `s` the student's and `T` the temperature.
    A temperature above 1 flattens both distributions, so the student also
    learns from the small probabilities the teacher gives wrong classes
    ("dark knowledge"). The gradient of the KL term with respect to a
    student logit is `(softmax(s / T) - softmax(t / T)) / T`, which shrinks
    as `1 / T^2` for large `T` (the softmax differences shrink as `1 / T`
    too); multiplying by `T^2` makes it tend to
    `((s - mean(s)) - (t - mean(t))) / classes`, independent of `T`, so
    changing `T` does not change the effective learning rate, nor the
    balance with a hard-label loss.

    The teacher's logits are treated as constants: no gradient flows into
    the teacher.

    Args:
        teacher_logits: tensor `(batch, classes)`, the teacher's logits.
        student_logits: tensor `(batch, classes)`, the student's logits.
        temperature: float > 0. `T`; 1 gives the plain KL divergence.

    Returns:
        Scalar tensor, the batch mean of the per-example loss.

    Example:

    ```python
    loss = soft_target_loss(teacher(x), student(x), temperature=4.0)
    ```

    Reference:
        Hinton et al., 2015, "Distilling the Knowledge in a Neural
        Network".
    """
    temperature = _check_temperature(temperature)
    shapes = []
    for name, value in (("teacher_logits", teacher_logits),
                        ("student_logits", student_logits)):
        # the static shape: None for a batch size unknown while tracing
        shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(
            value)
        if len(shape) != 2:
            raise ValueError(
                f"`{name}` must be 2-D (batch, classes). "
                f"Received: {name} of shape {shape}"
            )
        shapes.append(shape)
    if any(a is not None and b is not None and a != b
           for a, b in zip(*shapes)):
        raise ValueError(
            "`teacher_logits` and `student_logits` must have the same shape. "
            f"Received: teacher_logits of shape {shapes[0]}, "
            f"student_logits of shape {shapes[1]}"
        )
    teacher_logits = ops.stop_gradient(
        ops.convert_to_tensor(teacher_logits, "float32")
    )
    student_logits = ops.convert_to_tensor(student_logits, "float32")
    return ops.mean(
        _soft_target_loss(teacher_logits, student_logits, temperature)
    )


def _as_float_array(name, value, ndim):
    try:
        array = np.asarray(value, dtype="float32")
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be an array of numbers. Received: "
            f"{name}={value!r}"
        ) from None
    if array.ndim != ndim or array.size == 0:
        raise ValueError(
            f"`{name}` must be a non-empty {ndim}-D array. Received: "
            f"{name} of shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(
            f"`{name}` must hold finite numbers. Received: {name} with "
            f"{array.size - np.isfinite(array).sum()} NaN or infinite values"
        )
    return array


def _one_hot(labels, num_classes):
    """Integer labels `(n,)` as float32 one-hot rows `(n, num_classes)`."""
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if (array.ndim != 1 or array.size == 0
            or not np.issubdtype(array.dtype, np.integer)
            or array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            "`labels` must be a non-empty 1-D array of integer class indices "
            f"in [0, {num_classes}). Received: labels={labels!r}"
        )
    return np.eye(num_classes, dtype="float32")[array]


def annealed_targets(labels, teacher_probabilities, step, total_steps):
    """Teacher annealing: targets that move from the teacher to the labels.

    `target = lambda * one_hot(labels) + (1 - lambda) * teacher`, with
    `lambda = step / total_steps`: at step 0 the student imitates the
    teacher, at the last step it learns from the gold labels alone, so it
    can end up better than its teacher. Train the student with a
    cross-entropy against these soft targets
    (`keras.losses.CategoricalCrossentropy(from_logits=True)` on logits).

    Args:
        labels: 1-D array of `n` integer class indices.
        teacher_probabilities: array `(n, classes)`, the teacher's
            predicted class probabilities (rows sum to 1).
        step: int in `[0, total_steps]`, the current training step (or
            epoch).
        total_steps: int >= 1, the number of steps (or epochs) of training.

    Returns:
        float32 NumPy array `(n, classes)` whose rows sum to 1.

    Example:

    ```python
    for epoch in range(epochs):
        targets = annealed_targets(y, teacher_probabilities, epoch, epochs)
        student.fit(x, targets, initial_epoch=epoch, epochs=epoch + 1)
    ```

    Reference:
        Clark et al., 2019, "BAM! Born-Again Multi-Task Networks for
        Natural Language Understanding".
    """
    teacher = _as_float_array("teacher_probabilities", teacher_probabilities,
                              2)
    if (teacher < 0).any() or not np.allclose(teacher.sum(axis=1), 1.0,
                                              atol=1e-3):
        raise ValueError(
            "`teacher_probabilities` must hold probabilities (rows >= 0 that "
            "sum to 1; apply a softmax to logits). Received rows summing to "
            f"{teacher.sum(axis=1)[:5]}"
        )
    one_hot = _one_hot(labels, teacher.shape[1])
    if len(one_hot) != len(teacher):
        raise ValueError(
            "`labels` and `teacher_probabilities` must have the same number "
            f"of rows. Received: {len(one_hot)} labels, {len(teacher)} "
            "teacher rows"
        )
    for name, value, low in (("total_steps", total_steps, 1),
                             ("step", step, 0)):
        if not isinstance(value, numbers.Integral) or isinstance(
                value, bool) or value < low:
            raise ValueError(
                f"`{name}` must be an int >= {low}. "
                f"Received: {name}={value!r}"
            )
    if step > total_steps:
        raise ValueError(
            "`step` must be <= `total_steps`. "
            f"Received: step={step}, total_steps={total_steps}"
        )
    mix = step / total_steps
    return (mix * one_hot + (1.0 - mix) * teacher).astype("float32")


def distillation_targets(labels, teacher_logits):
    """Packs labels and a teacher's logits into one `y` for `fit`.

    Returns `[one_hot(labels) | teacher_logits]`, shape `(n, 2 * classes)`:
    `DistillationLoss` splits it again, so a student trains on labels, soft
    targets or both with plain `compile` / `fit` (for a multi-task student,
    one such array per task in the `y` dict).

    Args:
        labels: 1-D array of `n` integer class indices.
        teacher_logits: array `(n, classes)`, the teacher's logits on the
            same examples.

    Returns:
        float32 NumPy array `(n, 2 * classes)`.

    Example:

    ```python
    y = {task: distillation_targets(y_train[task], teachers[task].predict(x))
         for task in tasks}
    student.compile("adam", loss={task: DistillationLoss(4.0, 0.5)
                                  for task in tasks})
    student.fit(x, y)
    ```
    """
    teacher = _as_float_array("teacher_logits", teacher_logits, 2)
    one_hot = _one_hot(labels, teacher.shape[1])
    if len(one_hot) != len(teacher):
        raise ValueError(
            "`labels` and `teacher_logits` must have the same number of "
            f"rows. Received: {len(one_hot)} labels, {len(teacher)} teacher "
            "rows"
        )
    return np.concatenate([one_hot, teacher], axis=1)


@keras.saving.register_keras_serializable(package="mtlbook")
class DistillationLoss(keras.losses.Loss):
    """Hard labels, soft targets, or a weighted mix of both.

    For each example, with `y_true = [one_hot(y) | t]` (built by
    `distillation_targets`), student logits `s` and `w = label_weight`:

    `loss = w * CE(y, softmax(s)) + (1 - w) * T^2 * KL(softmax(t / T) ||
    softmax(s / T))`,

    averaged over the batch. `w = 1` trains on the labels alone, `w = 0` on
    the teacher's soft targets alone (`soft_target_loss`), in between on
    both, as Hinton et al. do; the `T^2` keeps the soft term's gradient
    from vanishing as `1 / T^2` at high temperature, so `w` balances the
    two terms whatever the temperature.

    Args:
        temperature: float > 0. `T`, the softmax temperature of the soft
            term.
        label_weight: float in [0, 1]. `w`, the weight of the label term.
        **kwargs: base `keras.losses.Loss` arguments (`name`, `reduction`).

    Call arguments:
        y_true: tensor `(batch, 2 * classes)`, labels and teacher logits.
        y_pred: tensor `(batch, classes)`, the student's logits.

    Returns:
        The loss, reduced over the batch (`"sum_over_batch_size"`: mean).

    Example:

    ```python
    student.compile("adam", loss=DistillationLoss(temperature=4.0,
                                                  label_weight=0.5))
    student.fit(x, distillation_targets(y, teacher.predict(x)))
    ```

    Reference:
        Hinton et al., 2015, "Distilling the Knowledge in a Neural
        Network".
    """

    def __init__(self, temperature=2.0, label_weight=0.5,
                 name="distillation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = _check_temperature(temperature)
        if (not isinstance(label_weight, numbers.Real)
                or isinstance(label_weight, bool)
                or not 0.0 <= label_weight <= 1.0):
            raise ValueError(
                "`label_weight` must be a float in [0, 1]. "
                f"Received: label_weight={label_weight!r}"
            )
        self.label_weight = float(label_weight)

    def call(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        y_true = ops.convert_to_tensor(y_true, "float32")
        y_pred = ops.convert_to_tensor(y_pred, "float32")
        one_hot = y_true[:, :classes]
        teacher_logits = ops.stop_gradient(y_true[:, classes:])
        hard = -ops.sum(one_hot * ops.log_softmax(y_pred, axis=-1), axis=-1)
        soft = _soft_target_loss(teacher_logits, y_pred, self.temperature)
        return self.label_weight * hard + (1.0 - self.label_weight) * soft

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature,
                      label_weight=self.label_weight)
        return config
