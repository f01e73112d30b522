"""LoRA over a whole model: enable, count, merge, save and switch sets.

Keras has LoRA built in, per layer: `layer.enable_lora(rank)` on a built
`Dense`, `EinsumDense` or `Embedding` layer freezes its kernel `W` (or
embedding matrix) and adds two trainable factors, `lora_kernel_a` (`A`,
shape `(d_in, r)`, random) and `lora_kernel_b` (`B`, shape `(r, d_out)`,
zeros), so that the layer uses the kernel

    W' = W + (alpha / r) * A @ B

(Keras writes the product as `A @ B`; the LoRA paper writes `B A` for the
transposed layout). `B = 0` at first, so the layer starts unchanged.
`alpha` (`lora_alpha`) is an argument only in newer Keras (3.13 has it,
3.9 does not); it defaults to `r`, and Keras 3.9 always uses a scale of 1,
which is what the helpers here keep. Convolutions have `enable_lora` only
in newer Keras (3.13 has it, 3.9 does not).

The helpers add what Keras leaves to the user: LoRA on every eligible
layer of a model with the rest frozen (`enable_lora`), the number of LoRA
parameters (`lora_parameter_count`), a plain model with `A @ B` folded
into the kernels for serving (`merge_lora`), and the LoRA factors as a
dict of arrays (`lora_state`, `load_lora_state`), to keep one backbone in
memory and switch per-task LoRA sets at inference.
"""

import numbers

import keras
import numpy as np

_FACTORS = ("lora_kernel_a", "lora_kernel_b")


def takes_lora(layer):
    """Whether Keras's own LoRA covers `layer` (it has `enable_lora`).

    Dense, EinsumDense and Embedding layers have it in every Keras 3;
    convolutions only in newer Keras (3.13 has it, 3.9 does not). Models
    (containers) are not counted: their layers are.

    Args:
        layer: a Keras layer.

    Returns:
        bool.

    Example:

    ```python
    takes_lora(keras.layers.Dense(4))  # True
    ```
    """
    return (isinstance(layer, keras.layers.Layer)
            and not isinstance(layer, keras.Model)
            and callable(getattr(layer, "enable_lora", None)))


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


def _lora_layers(model):
    """The layers of `model` with LoRA enabled, checked for unique names."""
    layers = [layer for layer in _sublayers(model)
              if getattr(layer, "lora_enabled", False)]
    names = [layer.name for layer in layers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            "The LoRA layers of `model` must have unique names. "
            f"Received: model={model.name!r} with duplicates {duplicates}"
        )
    return layers


def enable_lora(model, rank, layers=None):
    """Freezes `model` and enables Keras's LoRA on its dense layers.

    Every weight of `model` is frozen; then each chosen layer gets Keras's
    `layer.enable_lora(rank)`: its kernel stays frozen and two new factors
    `A` (random) and `B` (zeros) are the only trainable weights. Because
    `B = 0`, the model's outputs are unchanged until training. The other
    layers get `trainable = False` (BatchNormalization layers then run in
    inference mode), so `head.trainable = True` afterwards trains a new
    head in full. The
    model's traced `fit` / `evaluate` / `predict` functions are reset; a
    model that contains `model` and has already been run needs
    `compile` again.

    Args:
        model: a built `keras.Model` (or layer).
        rank: int > 0. The rank `r` of the update `A @ B`.
        layers: None, or a list of layers of `model` or their names. None
            takes every layer of `model` with Keras's `enable_lora`
            (`takes_lora`), nested ones included.

    Returns:
        `model`, changed in place.

    Raises:
        ValueError: a named layer does not exist, is not built, already
            has LoRA, or is of a type Keras's LoRA does not cover (such as
            `LayerNormalization`, or `Conv2D` in Keras 3.9).

    Example:

    ```python
    enable_lora(backbone, rank=4)
    model = keras.Sequential([backbone, keras.layers.Dense(5)])
    ```

    Reference:
        Hu et al., 2022, "LoRA: Low-Rank Adaptation of Large Language
        Models".
    """
    _check_model(model)
    if (not isinstance(rank, numbers.Integral) or isinstance(rank, bool)
            or rank <= 0):
        raise ValueError(
            f"`rank` must be a positive int. Received: rank={rank!r}"
        )
    everything = list(_sublayers(model))
    if layers is None:
        chosen = [layer for layer in everything if takes_lora(layer)]
        if not chosen:
            raise ValueError(
                "`model` has no layer with Keras's `enable_lora` (Dense, "
                f"EinsumDense, Embedding). Received: model={model.name!r}"
            )
    else:
        if isinstance(layers, (str, keras.layers.Layer)) or not isinstance(
                layers, (list, tuple)) or not layers:
            raise TypeError(
                "`layers` must be None or a non-empty list of layers (or "
                f"layer names) of `model`. Received: layers={layers!r}"
            )
        by_name = {layer.name: layer for layer in everything}
        chosen = []
        for item in layers:
            layer = by_name.get(item) if isinstance(item, str) else item
            if layer is None or not any(layer is x for x in everything):
                raise ValueError(
                    "`layers` must name layers of `model`. "
                    f"Received: layers={layers!r} ({item!r} is not in "
                    f"model {model.name!r})"
                )
            if not takes_lora(layer):
                raise ValueError(
                    "`layers` must be layers with Keras's `enable_lora` "
                    "(Dense, EinsumDense, Embedding; convolutions in newer "
                    f"Keras). Received: layers=[... {layer.name!r} "
                    f"({type(layer).__name__}, no `enable_lora` in Keras "
                    f"{keras.__version__}) ...]"
                )
            chosen.append(layer)
    for layer in chosen:
        if not layer.built or getattr(layer, "lora_enabled", False):
            state = "not built" if not layer.built else "has LoRA already"
            raise ValueError(
                "`layers` must be built layers without LoRA. Received: "
                f"layers=[... {layer.name!r} ({state}) ...]"
            )
    model.trainable = True
    for layer in everything:
        if not getattr(layer, "layers", None) and not any(
                layer is x for x in chosen):
            layer.trainable = False  # BatchNormalization: inference mode
    for layer in chosen:
        for variable in layer.weights:
            variable.trainable = False
        layer.enable_lora(int(rank))
    if isinstance(model, keras.Model):
        # functions traced before LoRA would run without it
        model.train_function = None
        model.test_function = None
        model.predict_function = None
    return model


def lora_parameter_count(model):
    """Number of scalar parameters in the LoRA factors of `model`.

    Args:
        model: a `keras.Model` or layer.

    Returns:
        int. `sum(r * (d_in + d_out))` over the LoRA layers; 0 without.

    Example:

    ```python
    lora_parameter_count(enable_lora(backbone, rank=4))
    ```
    """
    _check_model(model)
    return sum(int(np.prod(getattr(layer, name).shape))
               for layer in _lora_layers(model) for name in _FACTORS)


def lora_state(model):
    """The LoRA factors of `model`, as NumPy arrays.

    Args:
        model: a `keras.Model` or layer with LoRA enabled.

    Returns:
        dict `{"<layer name>/lora_kernel_a": array, ...}`, two entries
        per LoRA layer.

    Example:

    ```python
    states = {task: lora_state(backbone) for task in ...}  # after training
    load_lora_state(backbone, states["parity"])
    ```
    """
    _check_model(model)
    layers = _lora_layers(model)
    if not layers:
        raise ValueError(
            "`model` must have LoRA enabled (see `enable_lora`). "
            f"Received: model={model.name!r} without LoRA layers"
        )
    return {f"{layer.name}/{name}": keras.ops.convert_to_numpy(
                getattr(layer, name))
            for layer in layers for name in _FACTORS}


def load_lora_state(model, state):
    """Assigns LoRA factors saved by `lora_state` to `model`.

    The frozen weights are untouched, so one backbone serves several
    tasks: load a task's factors, predict, load the next task's.

    Args:
        model: a `keras.Model` or layer with the same LoRA layers (names,
            ranks and shapes) as the one `state` came from.
        state: dict from `lora_state`.

    Returns:
        `model`, changed in place.

    Example:

    ```python
    load_lora_state(backbone, states["digit"])
    ```
    """
    _check_model(model)
    if not isinstance(state, dict):
        raise TypeError(
            "`state` must be a dict from `lora_state`. "
            f"Received: state={type(state).__name__}"
        )
    expected = lora_state(model)
    if set(state) != set(expected):
        raise ValueError(
            "`state` must have the keys of `lora_state(model)`. Received: "
            f"state with keys {sorted(state)}, expected {sorted(expected)}"
        )
    for key, value in state.items():
        if np.shape(value) != expected[key].shape:
            raise ValueError(
                f"`state` entry {key!r} must have shape "
                f"{expected[key].shape}. "
                f"Received: state[{key!r}] of shape {np.shape(value)}"
            )
    for layer in _lora_layers(model):
        for name in _FACTORS:
            getattr(layer, name).assign(state[f"{layer.name}/{name}"])
    return model


def _strip_lora(config):
    """A copy of a serialized config without the LoRA settings."""
    if isinstance(config, dict):
        return {key: _strip_lora(value) for key, value in config.items()
                if key not in ("lora_rank", "lora_alpha")}
    if isinstance(config, list):
        return [_strip_lora(value) for value in config]
    return config


def merge_lora(model):
    """A plain copy of `model` with each LoRA update folded into its kernel.

    Each LoRA layer of the copy gets the kernel `W + (alpha / r) * A @ B`
    (computed by Keras's own `layer.kernel`, or `layer.embeddings`) and no
    factors, so the copy computes the same outputs, with one matrix
    product per layer instead of three. `model` is not changed.

    Args:
        model: a `keras.Model` (Sequential, functional, or a registered
            subclass with `get_config`).

    Returns:
        A new `keras.Model` without LoRA, with the merged weights.

    Example:

    ```python
    served = merge_lora(model)
    np.testing.assert_allclose(served.predict(x), model.predict(x),
                               atol=1e-5)
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. "
            f"Received: model={type(model).__name__}"
        )
    config = _strip_lora(keras.saving.serialize_keras_object(model))
    merged = keras.saving.deserialize_keras_object(config)
    if not merged.built:
        merged.build(model.input_shape)
    sources, targets = list(_sublayers(model)), list(_sublayers(merged))
    if len(sources) != len(targets):
        raise ValueError(
            "`model` could not be rebuilt from its config with the same "
            f"layers. Received: model={model.name!r}"
        )
    for source, target in zip(sources, targets):
        if source is model or getattr(source, "layers", None):
            continue  # containers: their weights are their layers'
        lora = getattr(source, "lora_enabled", False)
        factors = [getattr(source, name) for name in _FACTORS] if lora else []
        values = [variable for variable in source.weights
                  if not any(variable is factor for factor in factors)]
        if len(values) != len(target.weights):
            raise ValueError(
                "`model` could not be rebuilt from its config with the same "
                f"weights. Received: model={model.name!r}, layer "
                f"{source.name!r}"
            )
        matrix = "embeddings" if isinstance(
            source, keras.layers.Embedding) else "kernel"
        for value, variable in zip(values, target.weights):
            if lora and variable.name == matrix:
                value = getattr(source, matrix)  # W + (alpha / r) A @ B
            variable.assign(keras.ops.convert_to_numpy(value))  # a copy
    return merged
