"""Freezing and unfreezing layers, with BatchNormalization kept frozen.

Two different switches decide how a layer behaves during fine-tuning:

- `layer.trainable` (an attribute) decides whether the optimizer updates
  the layer's weights: frozen weights are left out of
  `model.trainable_weights`, so they get no gradient step.
- `training` (a call argument, set by `fit` to True and by `predict` /
  `evaluate` to False) decides how the layer computes its output: Dropout
  drops units only when `training=True`, and BatchNormalization normalises
  with the statistics of the current batch (and updates its moving mean and
  variance) only when `training=True`.

In Keras 3 a BatchNormalization layer with `trainable=False` always runs in
inference mode: it normalises with its moving statistics and never updates
them, whatever `training` is. That is the rule for fine-tuning: unfreeze
the convolutions, keep BatchNormalization frozen, so that the statistics
learned on the large source data set are not overwritten by the noisy
statistics of small target batches. `unfreeze` applies the rule by default.
Calling a backbone as `backbone(x, training=False)` inside a new model
enforces inference mode for all of its layers too (Dropout included).
"""

import keras


def _check_model(model):
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "`model` must be a keras.Model or keras.layers.Layer. "
            f"Received: model={type(model).__name__}"
        )


def _sublayers(layer):
    """`layer` and every layer nested in it, depth first."""
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from _sublayers(child)


def is_batchnorm(layer):
    """Whether `layer` is a batch-normalization layer.

    Args:
        layer: a Keras layer.

    Returns:
        bool. True for `keras.layers.BatchNormalization` (and subclasses).
    """
    return isinstance(layer, keras.layers.BatchNormalization)


def freeze(model):
    """Freezes every weight of `model` (sets `trainable = False` throughout).

    Frozen BatchNormalization layers run in inference mode (see the module
    docstring).

    Args:
        model: a `keras.Model` or layer.

    Returns:
        `model`, frozen in place.

    Example:

    ```python
    base = freeze(backbone("mobilenet_v2", weights=None,
                           input_shape=(96, 96, 3)))
    assert not base.trainable_weights
    ```
    """
    _check_model(model)
    for layer in _sublayers(model):
        layer.trainable = False
    return model


def _start_index(layers, from_layer):
    count = len(layers)
    names = [layer.name for layer in layers]
    if isinstance(from_layer, bool) or not isinstance(
        from_layer, (int, float, str)
    ):
        raise TypeError(
            "`from_layer` must be a layer name (str), an index (int) or a "
            f"fraction (float). Received: from_layer={from_layer!r}"
        )
    if isinstance(from_layer, str):
        if from_layer not in names:
            raise ValueError(
                "`from_layer` must name a layer of `model`. "
                f"Received: from_layer={from_layer!r}"
            )
        return names.index(from_layer)
    if isinstance(from_layer, int):
        if not -count <= from_layer < count:
            raise ValueError(
                f"`from_layer` must be an index in [{-count}, {count}). "
                f"Received: from_layer={from_layer}"
            )
        return from_layer % count
    if not 0.0 < from_layer <= 1.0:
        raise ValueError(
            "`from_layer` as a fraction must be in (0, 1]. "
            f"Received: from_layer={from_layer}"
        )
    return count - max(1, round(from_layer * count))


def unfreeze(model, from_layer=0, train_batchnorm=False):
    """Unfreezes the top of `model`, from `from_layer` up to the output.

    Layers of `model.layers` before `from_layer` are frozen, the others are
    made trainable, except BatchNormalization layers (nested ones too),
    which stay frozen (in inference mode) unless `train_batchnorm=True`.

    Args:
        model: a `keras.Model` with a `layers` list.
        from_layer: str, int or float. A layer name, an index into
            `model.layers` (negative counts from the top), or the fraction
            of `model.layers` to unfreeze, counted from the top (0.25
            unfreezes the top quarter, 1.0 everything).
        train_batchnorm: bool. Also unfreeze BatchNormalization layers.
            This breaks the fine-tuning rule and is there to measure what
            goes wrong.

    Returns:
        `model`, changed in place.

    Example:

    ```python
    unfreeze(base, from_layer="block_13_expand")  # MobileNetV2 top blocks
    unfreeze(base, from_layer=0.3)                # top 30% of the layers
    ```
    """
    _check_model(model)
    if not isinstance(train_batchnorm, bool):
        raise TypeError(
            "`train_batchnorm` must be a bool. "
            f"Received: train_batchnorm={train_batchnorm!r}"
        )
    layers = list(getattr(model, "layers", ()))
    if not layers:
        raise ValueError(
            "`model` must have sub-layers (a keras.Model). "
            f"Received: model={model.name!r} without `layers`"
        )
    start = _start_index(layers, from_layer)
    model.trainable = True
    for index, layer in enumerate(layers):
        for sublayer in _sublayers(layer):
            sublayer.trainable = index >= start and (
                train_batchnorm or not is_batchnorm(sublayer)
            )
    return model


def trainable_summary(model):
    """Counts trainable and frozen parameters, and frozen BatchNorm layers.

    Args:
        model: a Keras model or layer.

    Returns:
        dict with `"trainable"` and `"frozen"` (numbers of scalar
        parameters), `"batchnorm_frozen"` and `"batchnorm_trainable"`
        (numbers of BatchNormalization layers).

    Example:

    ```python
    trainable_summary(unfreeze(model, from_layer=-3))
    ```
    """
    _check_model(model)

    def size(weights):
        total = 0
        for weight in weights:
            count = 1
            for dim in weight.shape:
                count *= int(dim)
            total += count
        return total

    norms = [layer for layer in _sublayers(model) if is_batchnorm(layer)]
    return {
        "trainable": size(model.trainable_weights),
        "frozen": size(model.non_trainable_weights),
        "batchnorm_frozen": sum(not layer.trainable for layer in norms),
        "batchnorm_trainable": sum(bool(layer.trainable) for layer in norms),
    }
