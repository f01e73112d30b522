"""Multi-gate Mixture-of-Experts (MMoE) and its one-gate baseline (OMoE)."""

import numbers

import keras
from keras import ops

from .dense_stack import (
    DenseStack,
    check_activation,
    check_matrix_shape,
    check_units,
)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}"
        )


@keras.saving.register_keras_serializable(package="mtlbook")
class MMoE(keras.layers.Layer):
    """Experts shared by all tasks, mixed by one softmax gate per task.

    With experts `f_1 ... f_K` (Dense stacks) and gate `t`'s logits
    `x @ G_t + c_t`, task `t` receives

        g_t = softmax(x @ G_t + c_t)          # (batch, K)
        out_t = sum_k g_t[:, k] * f_k(x)

    With `num_gates=1` all tasks share one gate and receive the same
    mixture: the one-gate mixture of experts (OMoE) baseline of the paper.

    Args:
        num_tasks: int >= 1. Number of outputs (one per task).
        num_experts: int >= 1. Number of experts `K`.
        expert_units: list or tuple of ints > 0. Widths of each expert's
            Dense stack.
        expert_activation: str, callable or None. Activation of the
            experts' layers.
        num_gates: int or None. `None` (default) or `num_tasks`: one gate
            per task (MMoE); `1`: one gate for all tasks (OMoE).
        **kwargs: Base layer arguments (`name`, `dtype`, ...). The dtype
            policy (say `"mixed_float16"`) is passed on to the experts and
            gates.

    Call arguments:
        inputs: tensor of shape `(batch, features)`.
        return_gates: bool. Also return the gate weights.

    Returns:
        List of `num_tasks` tensors `(batch, expert_units[-1])`; with
        `return_gates=True`, the pair `(outputs, gates)` where `gates` is a
        list of `num_tasks` tensors `(batch, num_experts)`.

    Example:

    ```python
    task_a, task_b = MMoE(num_tasks=2, num_experts=8)(features)
    ```

    Reference:
        Ma et al., 2018, "Modeling Task Relationships in Multi-task
        Learning with Multi-gate Mixture-of-Experts".
    """

    def __init__(self, num_tasks=2, num_experts=4, expert_units=(16,),
                 expert_activation="relu", num_gates=None, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_tasks", num_tasks)
        _check_positive_int("num_experts", num_experts)
        if num_gates is None:
            num_gates = num_tasks
        if isinstance(num_gates, bool) or not isinstance(
                num_gates, numbers.Integral) or num_gates not in (1, num_tasks):
            raise ValueError(
                "`num_gates` must be None, 1 or num_tasks "
                f"({num_tasks}). Received: num_gates={num_gates!r}"
            )
        check_activation("expert_activation", expert_activation)
        self.num_tasks = int(num_tasks)
        self.num_experts = int(num_experts)
        self.expert_units = check_units("expert_units", expert_units)
        self.expert_activation = expert_activation
        self.num_gates = int(num_gates)
        self.experts = [
            DenseStack(self.expert_units, activation=expert_activation,
                       name=f"expert_{k}", dtype=self.dtype_policy)
            for k in range(self.num_experts)
        ]
        self.gates = [
            keras.layers.Dense(self.num_experts, name=f"gate_{t}",
                               dtype=self.dtype_policy)
            for t in range(self.num_gates)
        ]

    def build(self, input_shape):
        check_matrix_shape("inputs", input_shape)
        for layer in self.experts + self.gates:
            layer.build(input_shape)

    def call(self, inputs, return_gates=False):
        experts = ops.stack([f(inputs) for f in self.experts], axis=1)
        weights = [ops.softmax(gate(inputs), axis=-1) for gate in self.gates]
        weights = weights * self.num_tasks if self.num_gates == 1 else weights
        # (batch, K) x (batch, K, units) -> (batch, units)
        outputs = [ops.einsum("bk,bku->bu", g, experts) for g in weights]
        return (outputs, weights) if return_gates else outputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_tasks": self.num_tasks,
            "num_experts": self.num_experts,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
            "num_gates": self.num_gates,
        })
        return config


@keras.saving.register_keras_serializable(package="mtlbook")
class OMoE(MMoE):
    """One-gate mixture of experts: `MMoE` with `num_gates=1`.

    Every task receives the same mixture `sum_k g[:, k] * f_k(x)` with
    `g = softmax(x @ G + c)`. Arguments as `MMoE`, without `num_gates`.

    Example:

    ```python
    task_a, task_b = OMoE(num_tasks=2, num_experts=8)(features)
    ```

    Reference:
        Ma et al., 2018 (the OMoE baseline).
    """

    def __init__(self, num_tasks=2, num_experts=4, expert_units=(16,),
                 expert_activation="relu", **kwargs):
        # `get_config` stores num_gates=1; any other value is a mistake.
        num_gates = kwargs.pop("num_gates", None)
        if num_gates is not None and (
                isinstance(num_gates, bool) or num_gates != 1):
            raise ValueError(
                "`num_gates` of OMoE is always 1 (use MMoE for more "
                f"gates). Received: num_gates={num_gates!r}"
            )
        super().__init__(num_tasks=num_tasks, num_experts=num_experts,
                         expert_units=expert_units,
                         expert_activation=expert_activation, num_gates=1,
                         **kwargs)
