"""Base classes shared by the loss-weighting and gradient strategies.

A strategy is a small Keras layer so that its state (learned
log-variances, GradNorm's weights, DWA's loss history, ...) is made of
Keras variables: a model that holds a strategy saves it to `.keras` files
and `keras.callbacks.BackupAndRestore` restores it.

Two families:

- `LossWeighting`: called on the vector of the `T` task losses, returns
  one scalar loss to differentiate (`sum_i w_i * L_i` plus, for some
  strategies, a regularizer).
- `GradientMethod`: called on the `(T, D)` matrix of flattened per-task
  gradients of the shared parameters, returns the `(D,)` update direction.
"""

import keras


class _Strategy(keras.layers.Layer):
    """Common part: the number of tasks and its check."""

    is_gradient_method = False

    def __init__(self, num_tasks=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if num_tasks is not None and (
            not isinstance(num_tasks, int) or num_tasks < 1
        ):
            raise ValueError(
                "`num_tasks` must be a positive int or None. "
                f"Received: num_tasks={num_tasks!r}"
            )
        self.num_tasks = num_tasks

    def check_num_tasks(self, num_tasks):
        """Raises `ValueError` when built for a different number of tasks.

        Args:
            num_tasks: int. Number of tasks of the model using the strategy.
        """
        if self.num_tasks is not None and self.num_tasks != num_tasks:
            raise ValueError(
                f"`{type(self).__name__}` was built for "
                f"{self.num_tasks} tasks and cannot be used with "
                f"{num_tasks}. Received: num_tasks={num_tasks}"
            )

    def build(self, input_shape):
        num_tasks = int(input_shape[0])
        self.check_num_tasks(num_tasks)
        self.num_tasks = num_tasks
        super().build(input_shape)

    def on_epoch_end(self, mean_losses):
        """Hook called once per epoch with the `(T,)` mean task losses."""
        del mean_losses

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks})
        return config


class LossWeighting(_Strategy):
    """Base class: turns `T` task losses into one scalar loss.

    Subclasses implement `task_weights()`; the default `call` returns
    `sum_i w_i * L_i`. `on_epoch_end(mean_losses)` is called by
    `MultiTaskModel` after each training epoch with the epoch's mean task
    losses (only `DynamicWeightAverage` uses it).
    """

    def task_weights(self):
        """Returns the current `(T,)` weights."""
        raise NotImplementedError

    def call(self, task_losses):
        weights = keras.ops.stop_gradient(self.task_weights())
        return keras.ops.sum(weights * task_losses)



class GradientMethod(_Strategy):
    """Base class: combines per-task gradients of the shared parameters.

    `call(task_gradients, step)` takes a `(T, D)` tensor (row `i` is the
    flattened gradient of task `i`'s loss) and the training step (used to
    seed random choices), and returns the `(D,)` update.
    """

    is_gradient_method = True

    def task_weights(self):
        return keras.ops.ones((self.num_tasks,))
