"""Timed comparisons, printed as tables: `python -m mtlbook.bench <name>`.

Subcommands:

- `weighting` (`mtlbook.bench.weighting`): time per training step of
  every `mtlbook.weighting` strategy in `MultiTaskModel`, as a ratio to
  plain Keras `fit` on the same multi-output model, and for every other
  strategy also to `MultiTaskModel` with `EqualWeighting`, for several
  numbers of tasks.
- `scaling` (`mtlbook.bench.scaling`): time per training step of a small
  two-task CNN under `tf.data` pipelines, XLA, `mixed_float16` and
  `MirroredStrategy`, as a ratio to `fit` on NumPy arrays; each
  configuration in its own process.

Both time their variants side by side, in a shuffled order per repeat,
and report the median of the per-repeat ratios with their spread (half the
interquartile range / median; `mtlbook.bench.timing`). Timings on a shared
machine are noisy: compare ratios, not seconds.

Example:

```
python -m mtlbook.bench weighting            # T = 2, 4, 8
python -m mtlbook.bench weighting --quick    # seconds, for smoke tests
python -m mtlbook.bench scaling              # all configurations
python -m mtlbook.bench scaling --quick
```
"""

from mtlbook.bench.cli import main
from mtlbook.bench.scaling import SCALING_CONFIGURATIONS, bench_scaling
from mtlbook.bench.weighting import bench_weighting

__all__ = ["SCALING_CONFIGURATIONS", "bench_scaling", "bench_weighting",
           "main"]
