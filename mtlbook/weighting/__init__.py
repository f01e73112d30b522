"""Loss-weighting strategies and gradient methods for multi-task training.

Loss weighting (called on the `(T,)` task losses, return one scalar):
`EqualWeighting`, `StaticWeighting`, `UncertaintyWeighting`,
`DynamicWeightAverage`, `GradNorm`, `RandomLossWeighting`, `FAMO`.

Gradient methods (called on the `(T, D)` per-task gradients of the shared
parameters, return a `(D,)` update), as plain functions and as layers:
`pcgrad` / `PCGrad`, `mgda_weights` / `MGDA`, `cagrad` / `CAGrad`,
`imtl_g` / `IMTLG`, `nash_mtl` / `NashMTL`, `aligned_mtl` / `AlignedMTL`.

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
from .aligned import AlignedMTL, aligned_mtl, aligned_mtl_weights
from .cagrad import CAGrad, cagrad, cagrad_weights
from .dwa import DynamicWeightAverage, dwa_weights
from .equal import EqualWeighting
from .famo import FAMO, famo_logit_gradient, famo_weights
from .gradnorm import GradNorm, gradnorm_weight_gradient
from .imtl import IMTLG, imtl_g, imtl_weights
from .mgda import MGDA, mgda_weights
from .nash import NashMTL, nash_mtl, nash_mtl_weights
from .pcgrad import PCGrad, pcgrad, pcgrad_weights, task_order
from .rlw import (
    RandomLossWeighting,
    random_loss_weights,
    standard_normal_draw,
)
from .static import StaticWeighting
from .uncertainty import UncertaintyWeighting

__all__ = [
    "AlignedMTL", "IMTLG", "NashMTL", "aligned_mtl", "aligned_mtl_weights",
    "imtl_g", "imtl_weights", "nash_mtl", "nash_mtl_weights",
    "FAMO", "RandomLossWeighting", "famo_logit_gradient", "famo_weights",
    "random_loss_weights", "standard_normal_draw",
    "CAGrad", "DynamicWeightAverage", "EqualWeighting", "GradNorm",
    "GradientMethod", "LossWeighting", "MGDA", "PCGrad", "StaticWeighting",
    "Strategy", "UncertaintyWeighting", "UpdateEpoch", "cagrad",
    "cagrad_weights", "check_task_gradients", "dwa_weights",
    "flatten_gradients", "gradnorm_weight_gradient", "gram_matrix",
    "mgda_weights",
    "pcgrad", "pcgrad_weights", "task_order", "unflatten_gradients",
]
