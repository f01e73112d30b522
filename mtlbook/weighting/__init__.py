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

from mtlbook.weighting.base import (
    GradientMethod,
    LossWeighting,
    Strategy,
    UpdateEpoch,
    check_task_gradients,
    flatten_gradients,
    unflatten_gradients,
)
from mtlbook.weighting.cagrad import CAGrad, cagrad, cagrad_weights
from mtlbook.weighting.dwa import DynamicWeightAverage, dwa_weights
from mtlbook.weighting.equal import EqualWeighting
from mtlbook.weighting.gradnorm import GradNorm, gradnorm_weight_gradient
from mtlbook.weighting.mgda import MGDA, mgda_weights
from mtlbook.weighting.pcgrad import PCGrad, pcgrad
from mtlbook.weighting.static import StaticWeighting
from mtlbook.weighting.uncertainty import UncertaintyWeighting

__all__ = [
    "CAGrad", "DynamicWeightAverage", "EqualWeighting", "GradNorm",
    "GradientMethod", "LossWeighting", "MGDA", "PCGrad", "StaticWeighting",
    "Strategy", "UncertaintyWeighting", "UpdateEpoch", "cagrad",
    "cagrad_weights", "check_task_gradients", "dwa_weights",
    "flatten_gradients", "gradnorm_weight_gradient", "mgda_weights",
    "pcgrad", "unflatten_gradients",
]
