"""mtlbook: multi-task learning, transfer learning and fine-tuning in Keras 3.

The package behind the book. Each submodule is short and self-contained so
that a reader can copy one file into a project:

- `mtlbook.data`: offline data sets (scikit-learn's digits and data made
  deterministically) and the online loaders (MNIST, Fashion-MNIST).
- `mtlbook.tf1`: the TF1 reference graph of Part I and the TF1 -> Keras
  weight copy.
- `mtlbook.layers`, `mtlbook.models`: multi-task layers and model builders.
- `mtlbook.weighting`, `mtlbook.training`: loss weighting, gradient
  methods and `MultiTaskModel`.
- `mtlbook.transfer`: backbones, freezing, learning-rate groups.
- `mtlbook.adaptation`: domain-adversarial training (DANN).
- `mtlbook.grouping`: which tasks should share a network (inter-task
  affinity, TAG) and choosing groups from it.
- `mtlbook.continual`: learning a new task without forgetting the old
  (the Fisher information, Elastic Weight Consolidation).
- `mtlbook.distillation`: soft targets and teacher annealing, several
  teachers into one multi-task student.
- `mtlbook.plot`: figures (imports matplotlib; nothing else does).
- `mtlbook.metrics`: Δm against single-task baselines, paired differences
  over seeds with confidence intervals.
- `mtlbook.sizes`, `mtlbook.results`: the chapters' size switch
  (`MTLBOOK_SIZE=small|full`) and their stored full-size results.
- `mtlbook.bench`: `python -m mtlbook.bench`, timed comparisons.

Submodules are imported on first use, so `import mtlbook` is cheap and never
imports matplotlib.
"""

import importlib

__version__ = "0.4.0"

_SUBMODULES = (
    "data", "tf1", "plot", "layers", "models", "weighting", "training",
    "transfer", "bench", "adaptation", "metrics", "sizes", "results",
    "continual", "distillation", "grouping",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'mtlbook' has no attribute {name!r}")
