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

`bitfit` goes below the layer: it freezes every variable except the
biases, with the per-variable switch `variable.trainable`.
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


def is_bias(layer, variable):
    """Whether `variable` of `layer` is a bias, for `bitfit`.

    Biases are the variables named `bias` (Dense, EinsumDense,
    convolutions, attention projections) and the offsets `beta` of
    LayerNormalization / GroupNormalization; BatchNormalization's `beta`
    is not one (the layer stays frozen, see the module docstring).

    Args:
        layer: the Keras layer that owns `variable`.
        variable: one of `layer`'s own variables.

    Returns:
        bool.
    """
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "`layer` must be a Keras layer. "
            f"Received: layer={type(layer).__name__}"
        )
    if not isinstance(getattr(variable, "name", None), str):
        raise TypeError(
            "`variable` must be a Keras variable. "
            f"Received: variable={type(variable).__name__}"
        )
    name = variable.name.split("/")[-1]
    if is_batchnorm(layer):
        return False
    return name == "bias" or (name == "beta" and isinstance(
        layer, (keras.layers.LayerNormalization,
                keras.layers.GroupNormalization)))


def bitfit(model, heads=()):
    """Freezes every weight of `model` except its biases (BitFit).

    Keras's `layer.trainable` is per layer, so BitFit uses the per-variable
    switch that Keras 3 also has: `variable.trainable = False` leaves one
    variable out of `model.trainable_weights` while the layer stays
    trainable (Keras's own LoRA freezes a kernel this way). The model and
    its layers are made trainable, then every variable that is not a bias
    (`is_bias`) is frozen; the layers in `heads` (a new classifier) are
    left trainable in full. BatchNormalization layers are frozen whole, so
    they run in inference mode. Setting `layer.trainable` later resets
    the flags of all of that layer's variables, but only when the value
    changes: a layer left trainable here needs `False`, then `True`.

    Args:
        model: a `keras.Model` or layer.
        heads: list of layers of `model` (or their names) trained in full.

    Returns:
        `model`, changed in place; `model.trainable_weights` are the biases
        and the heads' weights.

    Example:

    ```python
    bitfit(model, heads=["classifier"])
    model.compile(...); model.fit(...)  # only biases and the head move
    ```

    Reference:
        Ben Zaken et al., 2022, "BitFit: Simple Parameter-efficient
        Fine-tuning for Transformer-based Masked Language-models".
    """
    _check_model(model)
    if isinstance(heads, (str, keras.layers.Layer)) or not isinstance(
            heads, (list, tuple)):
        raise TypeError(
            "`heads` must be a list of layers (or layer names) of `model`. "
            f"Received: heads={heads!r}"
        )
    everything = list(_sublayers(model))
    by_name = {layer.name: layer for layer in everything}
    full = []
    for item in heads:
        layer = by_name.get(item) if isinstance(item, str) else item
        if layer is None or not any(layer is x for x in everything):
            raise ValueError(
                "`heads` must name layers of `model`. "
                f"Received: heads={heads!r} ({item!r} is not in model "
                f"{model.name!r})"
            )
        full.append(layer)
    model.trainable = True
    trained = {id(variable) for layer in full for variable in layer.weights}
    for layer in everything:
        if getattr(layer, "layers", None):
            continue  # a container: its layers come next
        if is_batchnorm(layer):
            layer.trainable = False
            continue
        for variable in layer.weights:
            if id(variable) not in trained and not is_bias(layer, variable):
                variable.trainable = False
    return model
