"""Equal weighting: the plain sum of the task losses.

`EqualWeighting` is defined in `base.py`, next to the protocol, because it
is also the default of every training loop; this module names it.
"""

from .base import EqualWeighting

__all__ = ["EqualWeighting"]
