"""One switch for a chapter's size: `MTLBOOK_SIZE=small|full|smoke`.

Every chapter reads its size once, in its setup cell, and derives its data
size, training length and seeds from it:

- `small` (the default): what `make test`, nbval and `make book` run; about
  a minute on 2 CPU cores, with the claims measured at that size.
- `full`: the published configuration (the paper's data size, seeds and
  training length, and the online data sets where a chapter needs them),
  with the claims measured at that size. `make full CHAPTER=<name>` runs
  it and stores its key numbers under `book/results/`.
- `smoke`: the `full` code path on small fixture files, for a step or two
  and without result claims: how the tests check, offline, that a Colab
  reader's full run meets no shape, dtype or API error.

Example:

```python
SIZE = chapter_size()  # MTLBOOK_SIZE, "small" when unset
EPOCHS = {"small": 6, "full": 30, "smoke": 1}[SIZE]
```
"""

import os

SIZES = ("small", "full", "smoke")
ENVIRONMENT_VARIABLE = "MTLBOOK_SIZE"


def chapter_size(size=None, default="small"):
    """The size a chapter runs at.

    Args:
        size: str or None. `"small"`, `"full"` or `"smoke"`; `None` reads
            the environment variable `MTLBOOK_SIZE` (and falls back to
            `default` when it is unset or empty). Pass a value to override
            the environment in a notebook cell.
        default: str. The size when neither `size` nor the environment
            variable says one.

    Returns:
        One of `SIZES`.
    """
    for name, value in (("default", default), ("size", size)):
        if value is not None and value not in SIZES:
            raise ValueError(
                f"`{name}` must be one of {SIZES}. Received: {name}={value!r}"
            )
    if size is not None:
        return size
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if not value:
        return default
    if value not in SIZES:
        raise ValueError(
            f"The environment variable {ENVIRONMENT_VARIABLE} must be one of "
            f"{SIZES}. Received: {ENVIRONMENT_VARIABLE}={value!r}"
        )
    return value
