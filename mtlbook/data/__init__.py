"""Data sets for the book, as NumPy arrays or `tf.data` pipelines.

Offline (used by every chapter, the tests and the book build):

- `load_digits`: scikit-learn's bundled handwritten digits with several
  task labels (digit class, parity, ...), optionally upscaled to 28x28.
- `make_multidigits`: two digits overlaid on one canvas (MultiMNIST analog).
- `make_shapes`: rendered sprites with independent latent factors.
- `make_mmoe_synthetic`: the MMoE paper's generator with set task correlation.
- `make_digits_m`: digits blended with colour photo patches (MNIST-M analog).
- `make_shifted_moons`: two moons, source and rotated target domain.

Online (real loading code; a Colab reader switches to them with a flag):

- `load_mnist`, `load_fashion_mnist`.

Pipelines: `to_dataset` turns arrays and a dict of task labels into a
batched, prefetched `tf.data.Dataset`.

Each name lives in its own small module and is imported on first use.
"""

import importlib

# public name -> module (inside this package) that defines it
_EXPORTS = {
    "Split": "digits",
    "DIGIT_TASKS": "digits",
    "load_digits": "digits",
    "resize_images": "digits",
    "split_indices": "digits",
    "to_dataset": "pipelines",
    "load_mnist": "online",
    "load_fashion_mnist": "online",
    "make_multidigits": "multidigits",
    "make_shapes": "shapes",
    "make_mmoe_synthetic": "mmoe_synthetic",
    "make_digits_m": "digits_m",
    "make_shifted_moons": "moons",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mtlbook.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
