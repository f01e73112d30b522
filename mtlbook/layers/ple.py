"""Customized Gate Control (CGC) and Progressive Layered Extraction (PLE)."""

import numbers

import keras
from keras import ops

from .dense_stack import (
    DenseStack,
    check_activation,
    check_matrix_shape,
    check_units,
    is_shape,
)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < minimum:
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}"
        )


@keras.saving.register_keras_serializable(package="mtlbook")
class CGC(keras.layers.Layer):
    """One extraction level: task-specific and shared experts, gated per task.

    Task `t` has `num_task_experts` experts of its own; `num_shared_experts`
    experts are shared. With `h_t` task `t`'s input and `h_s` the shared
    input (all equal to `x` when a single tensor is given):

        E_t = [task t's experts(h_t), shared experts(h_s)]
        out_t = sum_k softmax(h_t @ G_t + c_t)[:, k] * E_t[k]

    With `output_shared=True` (every PLE level but the last) it also returns
    a shared output, gated by `h_s` over *all* experts:

        out_s = sum_k softmax(h_s @ G_s + c_s)[:, k] * E_all[k]

    Args:
        num_tasks: int >= 1.
        num_task_experts: int >= 1. Experts per task.
        num_shared_experts: int >= 0. Shared experts.
        expert_units: list or tuple of ints > 0. Widths of each expert's
            Dense stack.
        expert_activation: str, callable or None. Activation of the
            experts' layers.
        output_shared: bool. Also return the shared gate's output.
        **kwargs: Base layer arguments (`name`, `dtype`, ...). The dtype
            policy (say `"mixed_float16"`) is passed on to the experts and
            gates.

    Call arguments:
        inputs: one tensor `(batch, features)`, or a list of `num_tasks + 1`
            tensors `(batch, features)`: one per task, then the shared one
            (a previous level's output).
        return_gates: bool. Also return the gate weights.

    Returns:
        List of `num_tasks` tensors `(batch, expert_units[-1])`, plus the
        shared output last when `output_shared`; with `return_gates=True`,
        the pair `(outputs, gates)`, one gate tensor per output.

    Example:

    ```python
    task_a, task_b = CGC(num_tasks=2, num_task_experts=2,
                         num_shared_experts=2)(features)
    ```

    Reference:
        Tang et al., 2020, "Progressive Layered Extraction (PLE): A Novel
        Multi-Task Learning (MTL) Model for Personalized Recommendations".
    """

    def __init__(self, num_tasks=2, num_task_experts=1, num_shared_experts=1,
                 expert_units=(16,), expert_activation="relu",
                 output_shared=False, **kwargs):
        super().__init__(**kwargs)
        _check_int("num_tasks", num_tasks, 1)
        _check_int("num_task_experts", num_task_experts, 1)
        _check_int("num_shared_experts", num_shared_experts, 0)
        check_activation("expert_activation", expert_activation)
        if not isinstance(output_shared, bool):
            raise ValueError(
                "`output_shared` must be a bool. "
                f"Received: output_shared={output_shared!r}"
            )
        self.num_tasks = num_tasks = int(num_tasks)
        self.num_task_experts = num_task_experts = int(num_task_experts)
        self.num_shared_experts = num_shared_experts = int(num_shared_experts)
        self.expert_units = check_units("expert_units", expert_units)
        self.expert_activation = expert_activation
        self.output_shared = output_shared

        def stack(name):
            return DenseStack(self.expert_units, activation=expert_activation,
                              name=name, dtype=self.dtype_policy)

        # One flat list, task by task (task t's experts are
        # `experts_of_task(t)`): Keras before 3.15 silently skips the weights
        # of layers inside nested lists when saving a `.keras` file.
        self.task_experts = [
            stack(f"task_{t}_expert_{k}")
            for t in range(num_tasks) for k in range(num_task_experts)
        ]
        self.shared_experts = [
            stack(f"shared_expert_{k}") for k in range(num_shared_experts)
        ]
        per_task = num_task_experts + num_shared_experts
        self.task_gates = [
            keras.layers.Dense(per_task, name=f"task_{t}_gate",
                               dtype=self.dtype_policy)
            for t in range(num_tasks)
        ]
        self.shared_gate = None
        if self.output_shared:
            total = num_tasks * num_task_experts + num_shared_experts
            self.shared_gate = keras.layers.Dense(
                total, name="shared_gate", dtype=self.dtype_policy)

    def experts_of_task(self, task):
        """The `num_task_experts` expert layers of task index `task`."""
        start = task * self.num_task_experts
        return self.task_experts[start:start + self.num_task_experts]

    def _split_inputs(self, inputs, is_list):
        if is_list:
            if len(inputs) != self.num_tasks + 1:
                raise ValueError(
                    "`inputs` must be one tensor or a list of num_tasks + 1 "
                    f"({self.num_tasks + 1}) tensors. "
                    f"Received: {len(inputs)} inputs"
                )
            return list(inputs[:-1]), inputs[-1]
        return [inputs] * self.num_tasks, inputs

    def build(self, input_shape):
        is_list = not is_shape(input_shape)
        task_shapes, shared_shape = self._split_inputs(input_shape, is_list)
        for shape in task_shapes + [shared_shape]:
            check_matrix_shape("inputs", shape)
        for t, shape in enumerate(task_shapes):
            for layer in self.experts_of_task(t) + [self.task_gates[t]]:
                layer.build(shape)
        for layer in self.shared_experts:
            layer.build(shared_shape)
        if self.shared_gate is not None:
            self.shared_gate.build(shared_shape)

    def call(self, inputs, return_gates=False):
        task_inputs, shared_input = self._split_inputs(
            inputs, isinstance(inputs, (list, tuple))
        )
        shared = [f(shared_input) for f in self.shared_experts]
        own = [[f(h) for f in self.experts_of_task(t)]
               for t, h in enumerate(task_inputs)]
        outputs, gates = [], []
        for t, h in enumerate(task_inputs):
            experts = ops.stack(own[t] + shared, axis=1)
            gate = ops.softmax(self.task_gates[t](h), axis=-1)
            outputs.append(ops.einsum("bk,bku->bu", gate, experts))
            gates.append(gate)
        if self.shared_gate is not None:
            experts = ops.stack(sum(own, []) + shared, axis=1)
            gate = ops.softmax(self.shared_gate(shared_input), axis=-1)
            outputs.append(ops.einsum("bk,bku->bu", gate, experts))
            gates.append(gate)
        return (outputs, gates) if return_gates else outputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_tasks": self.num_tasks,
            "num_task_experts": self.num_task_experts,
            "num_shared_experts": self.num_shared_experts,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
            "output_shared": self.output_shared,
        })
        return config


@keras.saving.register_keras_serializable(package="mtlbook")
class PLE(keras.layers.Layer):
    """Progressive Layered Extraction: `num_levels` stacked CGC levels.

    Level 1 reads `x` everywhere; level `l + 1` reads level `l`'s task
    outputs (task `t`'s experts and gate read task `t`'s output) and its
    shared output (the shared experts and shared gate read it). Every level
    but the last has a shared gate over all its experts; the last returns
    the task outputs only.

    Args:
        num_tasks: int >= 1.
        num_levels: int >= 1. Number of CGC levels (1 gives plain CGC).
        num_task_experts: int >= 1. Experts per task and level.
        num_shared_experts: int >= 0. Shared experts per level.
        expert_units: list or tuple of ints > 0. Widths of each expert's
            Dense stack.
        expert_activation: str, callable or None. Activation of the
            experts' layers.
        **kwargs: Base layer arguments (`name`, `dtype`, ...). The dtype
            policy (say `"mixed_float16"`) is passed on to every level.

    Call arguments:
        inputs: tensor of shape `(batch, features)`.
        return_gates: bool. Also return the last level's task gates.

    Returns:
        List of `num_tasks` tensors `(batch, expert_units[-1])`; with
        `return_gates=True`, the pair `(outputs, gates)`.

    Example:

    ```python
    task_a, task_b = PLE(num_tasks=2, num_levels=2)(features)
    ```

    Reference:
        Tang et al., 2020, "Progressive Layered Extraction (PLE)".
    """

    def __init__(self, num_tasks=2, num_levels=2, num_task_experts=1,
                 num_shared_experts=1, expert_units=(16,),
                 expert_activation="relu", **kwargs):
        super().__init__(**kwargs)
        _check_int("num_levels", num_levels, 1)
        self.levels = [
            CGC(num_tasks=num_tasks, num_task_experts=num_task_experts,
                num_shared_experts=num_shared_experts,
                expert_units=expert_units,
                expert_activation=expert_activation,
                output_shared=level < num_levels - 1, name=f"level_{level}",
                dtype=self.dtype_policy)
            for level in range(num_levels)
        ]
        first = self.levels[0]  # its arguments are checked
        self.num_tasks = first.num_tasks
        self.num_levels = int(num_levels)
        self.num_task_experts = first.num_task_experts
        self.num_shared_experts = first.num_shared_experts
        self.expert_units = first.expert_units
        self.expert_activation = expert_activation

    def build(self, input_shape):
        check_matrix_shape("inputs", input_shape)
        shape = tuple(input_shape)
        for level in self.levels:
            level.build(shape)
            shape = [(input_shape[0], self.expert_units[-1])] * (
                self.num_tasks + 1
            )

    def call(self, inputs, return_gates=False):
        h = inputs
        for level in self.levels[:-1]:
            h = level(h)
        return self.levels[-1](h, return_gates=return_gates)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_tasks": self.num_tasks,
            "num_levels": self.num_levels,
            "num_task_experts": self.num_task_experts,
            "num_shared_experts": self.num_shared_experts,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
        })
        return config
