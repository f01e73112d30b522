"""Static weighting: fixed, hand-chosen task weights."""

import collections.abc
import math
import numbers

import keras

from .base import LossWeighting


def _check_weights(weights):
    """Returns the names (or None) and floats of `weights`, or an error."""
    if isinstance(weights, dict):
        names, values = list(weights), list(weights.values())
        labels = [f"weights[{name!r}]" for name in names]
        for name in names:
            if not isinstance(name, str):
                raise TypeError(
                    "The keys of `weights` must be task names (str). "
                    f"Received: key {name!r} in weights={weights!r}"
                )
    elif isinstance(weights, (list, tuple)):
        names, values = None, list(weights)
        labels = [f"weights[{i}]" for i in range(len(values))]
    else:
        raise TypeError(
            "`weights` must be a list, tuple or dict of floats. "
            f"Received: weights={weights!r}"
        )
    if not values:
        raise ValueError(
            "`weights` must hold one weight per task. "
            f"Received: weights={weights!r}"
        )
    for label, value in zip(labels, values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                "`weights` must hold finite, non-negative floats. "
                f"Received: {label}={value!r}"
            )
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                "`weights` must hold finite, non-negative floats. "
                f"Received: {label}={value!r}"
            )
    if not any(value > 0 for value in values):
        raise ValueError(
            "`weights` must hold at least one positive weight (with all "
            "weights 0 the total loss is 0 and nothing trains). "
            f"Received: weights={weights!r}"
        )
    return names, [float(value) for value in values]


@keras.saving.register_keras_serializable(package="mtlbook")
class StaticWeighting(LossWeighting):
    """Weighted sum with fixed weights: `total = sum_i w_i * L_i`.

    Args:
        weights: sequence of `T` finite, non-negative floats, at least one
            positive (in the order of the model's tasks), or dict
            `{task: weight}` (then `set_tasks` orders it and rejects
            unknown or missing task names).
        num_tasks: optional int, `T` (taken from `weights`; a different
            value raises).
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        task_losses: `(T,)` tensor of task losses.

    Returns:
        Scalar tensor `sum_i w_i * L_i`.

    Example:

    ```python
    total = StaticWeighting([1.0, 0.1])(keras.ops.array([0.5, 2.0]))  # 0.7
    ```
    """

    def __init__(self, weights, num_tasks=None, **kwargs):
        names, values = _check_weights(weights)
        if num_tasks is not None and (
            isinstance(num_tasks, bool) or num_tasks != len(values)
        ):
            raise ValueError(
                f"`num_tasks` must be None or {len(values)}, the number of "
                f"`weights`. Received: num_tasks={num_tasks!r}"
            )
        super().__init__(num_tasks=len(values), **kwargs)
        self.weight_names = names
        self.weights_value = values

    def set_tasks(self, task_names):
        """Orders dict weights like `task_names` (rejecting unknown or
        missing names), then as `Strategy.set_tasks`.

        Args:
            task_names: sequence of the model's task names.
        """
        # new names only (a reuse, or names that are no list of str, get
        # the base class's errors)
        names_ok = False
        if self.task_names is None and isinstance(
            task_names, collections.abc.Iterable
        ) and not isinstance(task_names, str):
            task_names = list(task_names)
            names_ok = all(isinstance(name, str) for name in task_names) \
                and len(set(task_names)) == len(task_names)
        if self.weight_names is not None and names_ok:
            unknown = [n for n in self.weight_names if n not in task_names]
            missing = [n for n in task_names if n not in self.weight_names]
            if unknown or missing:
                raise ValueError(
                    "The keys of `weights` must be exactly the model's "
                    f"tasks {list(task_names)}: unknown tasks {unknown}, "
                    f"missing tasks {missing}. Received: weights="
                    f"{dict(zip(self.weight_names, self.weights_value))}"
                )
            by_name = dict(zip(self.weight_names, self.weights_value))
            super().set_tasks(task_names)
            self.weights_value = [by_name[name] for name in task_names]
            self.weight_names = list(task_names)
            return
        if names_ok:
            self.check_num_tasks(len(task_names))
        super().set_tasks(task_names)

    def task_weights(self):
        return keras.ops.convert_to_tensor(self.weights_value, dtype=self.dtype)

    def get_config(self):
        config = super().get_config()
        config.pop("num_tasks")
        weights = (
            dict(zip(self.weight_names, self.weights_value))
            if self.weight_names is not None
            else list(self.weights_value)
        )
        config.update({"weights": weights})
        return config
