"""Loss-weighting strategies and gradient methods for multi-task training.

Loss weighting (called on the `(T,)` task losses, return one scalar):
`EqualWeighting`, `StaticWeighting`, `UncertaintyWeighting`,
`DynamicWeightAverage`, `GradNorm`.

Gradient methods (called on the `(T, D)` per-task gradients of the shared
parameters, return a `(D,)` update), as plain functions and as layers:
`pcgrad` / `PCGrad`, `mgda_weights` / `MGDA`, `cagrad` / `CAGrad`.

All follow the protocol of `mtlbook.weighting.base` (`Strategy`): any
training loop can drive them, `mtlbook.training.MultiTaskModel` inside
`fit`.
"""

from .base import (
    GradientMethod,
    LossWeighting,
    Strategy,
    UpdateEpoch,
    check_task_gradients,
    flatten_gradients,
    gram_matrix,
    unflatten_gradients,
)
from .cagrad import CAGrad, cagrad, cagrad_weights
from .dwa import DynamicWeightAverage, dwa_weights
from .equal import EqualWeighting
from .gradnorm import GradNorm, gradnorm_weight_gradient
from .mgda import MGDA, mgda_weights
from .pcgrad import PCGrad, pcgrad, pcgrad_weights, task_order
from .static import StaticWeighting
from .uncertainty import UncertaintyWeighting

__all__ = [
    "CAGrad", "DynamicWeightAverage", "EqualWeighting", "GradNorm",
    "GradientMethod", "LossWeighting", "MGDA", "PCGrad", "StaticWeighting",
    "Strategy", "UncertaintyWeighting", "UpdateEpoch", "cagrad",
    "cagrad_weights", "check_task_gradients", "dwa_weights",
    "flatten_gradients", "gradnorm_weight_gradient", "gram_matrix",
    "mgda_weights",
    "pcgrad", "pcgrad_weights", "task_order", "unflatten_gradients",
]
