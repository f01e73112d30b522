"""Keras Applications backbones with ImageNet, local or no weights."""

import os
import zipfile

import keras
import numpy as np

# name -> (constructor, input preprocessing: (scale, offset) applied to
# pixels in [0, 255], or None when the model rescales its inputs itself)
BACKBONES = {
    "mobilenet_v2": (keras.applications.MobileNetV2, (1 / 127.5, -1.0)),
    "mobilenet_v3_small": (keras.applications.MobileNetV3Small, None),
    "mobilenet_v3_large": (keras.applications.MobileNetV3Large, None),
    "efficientnet_b0": (keras.applications.EfficientNetB0, None),
}


def _check_name(name):
    if name not in BACKBONES:
        raise ValueError(
            f"`name` must be one of {sorted(BACKBONES)}. "
            f"Received: name={name!r}"
        )


def backbone(
    name,
    weights=None,
    input_shape=(224, 224, 3),
    include_top=False,
    pooling=None,
    **options,
):
    """Builds a Keras Applications network with chosen weights.

    Args:
        name: str. One of `BACKBONES`: `"mobilenet_v2"`,
            `"mobilenet_v3_small"`, `"mobilenet_v3_large"`,
            `"efficientnet_b0"`.
        weights: `"imagenet"` (downloads once, needs internet), `None`
            (random initialisation), or the path of a local file: a
            `.weights.h5` file (`model.save_weights`) or a `.keras` model
            (`model.save`) of the same architecture.
        input_shape: tuple `(height, width, channels)` of ints, height and
            width >= 32.
        include_top: bool. Keep the ImageNet classifier.
        pooling: `None`, `"avg"` or `"max"` (with `include_top=False`).
        **options: architecture arguments of the application, e.g.
            `alpha=0.35` for MobileNetV2. They must match the weights file.

    Returns:
        A `keras.Model`.

    Example:

    ```python
    base = backbone("mobilenet_v2", weights="imagenet",
                    input_shape=(160, 160, 3), pooling="avg")  # online
    base.save_weights("mobilenet_v2.weights.h5")
    again = backbone("mobilenet_v2", weights="mobilenet_v2.weights.h5",
                     input_shape=(160, 160, 3), pooling="avg")  # offline
    ```
    """
    _check_name(name)
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3 \
            or not all(isinstance(size, (int, np.integer))
                       and not isinstance(size, bool)
                       for size in input_shape) \
            or min(input_shape[:2]) < 32 or input_shape[2] < 1:
        raise ValueError(
            "`input_shape` must be a tuple (height, width, channels) of ints, "
            "height and width >= 32. "
            f"Received: input_shape={input_shape!r}"
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(
            "`pooling` must be None, 'avg' or 'max'. "
            f"Received: pooling={pooling!r}"
        )
    constructor = BACKBONES[name][0]
    path = None
    if weights is not None and weights != "imagenet":
        if not isinstance(weights, (str, os.PathLike)):
            raise TypeError(
                "`weights` must be 'imagenet', None or a file path. "
                f"Received: weights={weights!r}"
            )
        path = os.fspath(weights)
        if not path.endswith((".weights.h5", ".keras")):
            raise ValueError(
                "`weights` must be 'imagenet', None or a path ending in "
                f"'.weights.h5' or '.keras'. Received: weights={path!r}"
            )
        if not os.path.isfile(path):
            raise ValueError(
                "`weights` must be an existing file. "
                f"Received: weights={path!r} ("
                f"{'a folder' if os.path.isdir(path) else 'no such file'})"
            )
    if not isinstance(include_top, (bool, np.bool_)):
        raise TypeError(
            f"`include_top` must be a bool. Received: include_top="
            f"{include_top!r}"
        )
    source = None
    if path is not None and path.endswith(".keras"):
        if not zipfile.is_zipfile(path):
            raise ValueError(
                "`weights` must be a valid .keras archive (a zip file "
                "written by `model.save`). Received: weights="
                f"{path!r}, which exists but is not a zip archive "
                "(damaged, truncated or another format)"
            )
        try:
            source = keras.saving.load_model(path, compile=False)
        except Exception as error:
            raise ValueError(
                "`weights` must be a .keras model that Keras can load. "
                f"Received: weights={path!r}, which exists but could not "
                f"be loaded: {type(error).__name__}: {error}"
            ) from error
    elif path is not None:
        with open(path, "rb") as handle:
            signature = handle.read(8)
        if signature != b"\x89HDF\r\n\x1a\n":
            raise ValueError(
                "`weights` must be a valid .weights.h5 file (HDF5, written "
                "by `model.save_weights`). Received: weights="
                f"{path!r}, which exists but is not an HDF5 file "
                "(damaged, truncated or another format)"
            )
    model = constructor(
        weights=None if path else weights,
        input_shape=tuple(input_shape),
        include_top=include_top,
        pooling=pooling,
        **options,
    )
    if path is None:
        return model
    try:
        if source is not None:
            model.set_weights(source.get_weights())
        else:
            model.load_weights(path)
    except Exception as error:
        raise ValueError(
            f"`weights` must be a weights file of this {name} architecture "
            f"(input_shape={tuple(input_shape)}, include_top={include_top}, "
            f"options={options}). Received: weights={path!r}, which failed "
            f"to load: {type(error).__name__}: {error}"
        ) from error
    return model


def preprocessing_layer(name):
    """The layer that maps pixels in [0, 255] to what `name` expects.

    Args:
        name: str. A key of `BACKBONES`.

    Returns:
        A `keras.layers.Rescaling` (MobileNetV2: to [-1, 1]) or, for
        networks that rescale their inputs themselves, an `Identity` layer.

    Example:

    ```python
    inputs = keras.Input((160, 160, 3))
    features = base(preprocessing_layer("mobilenet_v2")(inputs))
    ```
    """
    _check_name(name)
    scaling = BACKBONES[name][1]
    if scaling is None:
        return keras.layers.Identity(name=f"{name}_preprocessing")
    scale, offset = scaling
    return keras.layers.Rescaling(
        scale, offset=offset, name=f"{name}_preprocessing"
    )
