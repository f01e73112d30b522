"""Static weighting: fixed, hand-chosen task weights."""

import numbers

import keras

from .base import LossWeighting


@keras.saving.register_keras_serializable(package="mtlbook")
class StaticWeighting(LossWeighting):
    """Weighted sum with fixed weights: `total = sum_i w_i * L_i`.

    Args:
        weights: sequence of `T` non-negative floats (in the order of the
            model's tasks) or dict `{task: weight}` (then `MultiTaskModel`
            orders it and rejects unknown or missing task names).
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

    def __init__(self, weights, **kwargs):
        kwargs.pop("num_tasks", None)
        if isinstance(weights, dict):
            names, values = list(weights), list(weights.values())
        elif isinstance(weights, (list, tuple)):
            names, values = None, list(weights)
        else:
            raise TypeError(
                "`weights` must be a list, tuple or dict of floats. "
                f"Received: weights={weights!r}"
            )
        if not values or not all(
            isinstance(v, numbers.Real) and v >= 0 for v in values
        ):
            raise ValueError(
                "`weights` must be non-empty and non-negative. "
                f"Received: weights={weights!r}"
            )
        super().__init__(num_tasks=len(values), **kwargs)
        self.weight_names = names
        self.weights_value = [float(v) for v in values]

    def set_tasks(self, task_names):
        """Orders dict weights like `task_names` (rejecting unknown or
        missing names), then as `Strategy.set_tasks`.

        Args:
            task_names: sequence of the model's task names.
        """
        self.check_num_tasks(len(task_names))
        if self.weight_names is not None:
            unknown = sorted(set(self.weight_names) - set(task_names))
            missing = sorted(set(task_names) - set(self.weight_names))
            if unknown or missing:
                raise ValueError(
                    "`weights` must name exactly the model's tasks "
                    f"{list(task_names)}. Received: unknown={unknown}, "
                    f"missing={missing}"
                )
            by_name = dict(zip(self.weight_names, self.weights_value))
            self.weights_value = [by_name[name] for name in task_names]
            self.weight_names = list(task_names)
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
