"""Keras 3 layers for multi-task and transfer learning.

- `Adapter`: a bottleneck MLP with a residual, identity at first, for
  parameter-efficient fine-tuning (Houlsby et al.).
- `DenseStack`: Dense layers in a row (experts, towers).
- `CrossStitch`: learned linear mixing of task branches (Misra et al.).
- `MMoE`, `OMoE`: multi-gate / one-gate mixture of experts (Ma et al.).
- `CGC`, `PLE`: task-specific + shared experts, progressive layered
  extraction (Tang et al.).
- `GradientReversal`, `DANNSchedule`, `dann_lambda`: domain-adversarial
  training (Ganin et al.).

Each layer lives in its own file, which imports only keras (and NumPy) and
the sibling files it needs, relatively (`from .dense_stack import ...`), so
it can be copied into another project (tests/test_copyable.py checks it).
"""

from .adapter import Adapter
from .cross_stitch import CrossStitch
from .dense_stack import DenseStack
from .gradient_reversal import (
    DANNSchedule,
    GradientReversal,
    dann_lambda,
)
from .mmoe import MMoE, OMoE
from .ple import CGC, PLE

__all__ = [
    "Adapter", "CGC", "PLE", "CrossStitch", "DANNSchedule", "DenseStack",
    "GradientReversal", "MMoE", "OMoE", "dann_lambda",
]
