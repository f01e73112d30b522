"""Discriminative learning rates (learning-rate groups) and the slanted
triangular schedule, usable with ordinary `compile` / `fit`.

Learning-rate groups: the optimizer multiplies the learning rate of each
variable by its group's factor before the update step, so lower layers of a
pretrained network move more slowly than the new head. The choice of one
optimizer with per-variable multipliers (rather than one optimizer per
group) keeps a single step counter, one schedule, one set of slots and an
ordinary `model.compile(optimizer=...)`; the multipliers are part of the
optimizer's config, so a compiled model survives `.keras` save/load.

`LearningRateMultipliers` is a mixin: `DiscriminativeAdam`,
`DiscriminativeAdamW` and `DiscriminativeSGD` combine it with Keras's
optimizers; any other optimizer works the same way::

    @keras.saving.register_keras_serializable(package="my_project")
    class DiscriminativeRMSprop(LearningRateMultipliers,
                                keras.optimizers.RMSprop):
        pass

AdamW's decoupled weight decay uses the base learning rate for every group.
"""

import math
import numbers

import keras
from keras import ops


def _check_multipliers(multipliers):
    if multipliers is None:
        return {}
    if not isinstance(multipliers, dict) or not all(
        isinstance(key, str) for key in multipliers
    ):
        raise TypeError(
            "`multipliers` must be a dict {variable path or prefix: factor}. "
            f"Received: multipliers={multipliers!r}"
        )
    checked = {}
    for key, value in multipliers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            not math.isfinite(value) or value < 0
        ):
            raise ValueError(
                "`multipliers` values must be finite floats >= 0. "
                f"Received: multipliers[{key!r}]={value!r}"
            )
        checked[key] = float(value)
    return checked


def _check_positive_float(name, value, minimum=0.0, inclusive=False):
    """Raises unless `value` is a finite real (not a bool) above `minimum`."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    above = is_number and (value >= minimum if inclusive else value > minimum)
    if not is_number or not math.isfinite(value) or not above:
        sign = ">=" if inclusive else ">"
        raise ValueError(
            f"`{name}` must be a finite float {sign} {minimum:g}. "
            f"Received: {name}={value!r}"
        )


def _matches(path, key):
    """Whether the multiplier key `key` is `path` or a prefix of it."""
    prefix = key.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def _unmatched_key_error(key, paths):
    """The `ValueError` for a multiplier key that matches no variable."""
    layers = sorted({path.split("/")[0] for path in paths})
    shown = ", ".join(repr(name) for name in layers[:12])
    if len(layers) > 12:
        shown += f", ... ({len(layers)} in all)"
    examples = ", ".join(repr(path) for path in paths[:4])
    return ValueError(
        f"`multipliers` key {key!r} matches no variable this optimizer "
        "was built with (a key must be a variable path or a prefix of "
        "one ending at '/'). Only trainable variables reach the "
        "optimizer: leave out keys of frozen layers and of non-trainable "
        "state (BatchNormalization moving statistics). Available layers: "
        f"[{shown}]; variable paths look like [{examples}]. "
        f"Received: multipliers[{key!r}]"
    )


def multiplier_for(path, multipliers):
    """The factor of the longest key that is `path` or a prefix of it.

    A key matches a variable path when it equals the path or is a leading
    part of it ending at a `/` (`"block1_conv"` matches
    `"block1_conv/kernel"`). Unmatched variables get 1.0.

    Args:
        path: str. A variable's `path`.
        multipliers: dict `{path or prefix: factor}`.

    Returns:
        float. The factor.

    Example:

    ```python
    multiplier_for("block1_conv/kernel", {"block1_conv": 0.1})  # 0.1
    ```
    """
    if not isinstance(path, str):
        raise TypeError(
            "`path` must be a variable path (str). "
            f"Received: path={path!r} of type {type(path).__name__}"
        )
    if not isinstance(multipliers, dict):
        raise TypeError(
            "`multipliers` must be a dict {variable path or prefix: "
            f"factor}}. Received: multipliers={multipliers!r}"
        )
    multipliers = _check_multipliers(multipliers)
    best, factor = -1, 1.0
    for key, value in multipliers.items():
        prefix = key.rstrip("/")
        if _matches(path, key) and len(prefix) > best:
            best, factor = len(prefix), value
    return factor


def discriminative_multipliers(groups, decay=2.6):
    """Multipliers that divide the rate by `decay` for each lower group.

    With `G` groups ordered from the bottom (input side) to the top, the
    variables of group `g` (0-based) get the factor `decay ** -(G - 1 - g)`:
    the top group trains at the base rate, the one below at
    `rate / decay`, and so on, as in ULMFiT (decay 2.6).

    Only the layers' trainable variables are listed (those an optimizer
    receives): build the layers first (call the model once, or build it
    from `keras.Input`), and call this with the layers frozen or unfrozen
    as they will be during training, e.g. after `unfreeze`, so that the
    moving statistics and frozen weights of BatchNormalization are left
    out. Keys of variables the optimizer does not get raise a `ValueError`
    when it is built.

    Args:
        groups: list of groups, bottom to top; each group is a layer or a
            list of layers.
        decay: finite float > 0. Ratio between the rates of neighbouring
            groups.

    Returns:
        dict `{variable path: factor}` for `LearningRateMultipliers`.

    Raises:
        ValueError: if a group holds no trainable variable (layers not
            built yet, or frozen).

    Example:

    ```python
    groups = [model.get_layer(n) for n in ("block1_conv", "block2_conv",
                                            "block3_conv", "classifier")]
    optimizer = DiscriminativeAdam(
        1e-3, multipliers=discriminative_multipliers(groups))
    ```

    Reference:
        Howard and Ruder, 2018, "Universal Language Model Fine-tuning for
        Text Classification".
    """
    _check_positive_float("decay", decay)
    if not isinstance(groups, (list, tuple)) or not groups:
        raise ValueError(
            "`groups` must be a non-empty list of layers or lists of layers. "
            f"Received: groups={groups!r}"
        )
    multipliers = {}
    for index, group in enumerate(groups):
        layers = group if isinstance(group, (list, tuple)) else [group]
        factor = float(decay) ** -(len(groups) - 1 - index)
        found = 0
        for layer in layers:
            if not isinstance(layer, keras.layers.Layer):
                raise TypeError(
                    "`groups` must contain Keras layers. "
                    f"Received: {type(layer).__name__} in group {index}"
                )
            for variable in layer.trainable_weights:
                multipliers[variable.path] = factor
                found += 1
        if not found:
            names = [getattr(layer, "name", layer) for layer in layers]
            state = [
                "unbuilt" if not layer.built else "frozen"
                if not layer.trainable else "without trainable weights"
                for layer in layers
            ]
            raise ValueError(
                "`groups` must hold built, trainable layers with weights "
                "(build the model first, e.g. from `keras.Input` or by "
                "calling it once; unfreeze the layers). Received: group "
                f"{index} {names} ({', '.join(state) or 'empty'}) with no "
                "trainable variable"
            )
    return multipliers


def _identities(variable):
    """`id`s under which `update_step` may receive `variable`.

    Under TensorFlow the optimizer updates the `tf.Variable` behind a Keras
    variable (`variable.value`), and under a `tf.distribute` strategy each
    replica's component of it (`variable.value.values`).
    """
    identities = [id(variable)]
    if keras.backend.backend() == "tensorflow":
        value = variable.value
        identities.append(id(value))
        identities.extend(id(v) for v in getattr(value, "values", ()))
    return identities


class LearningRateMultipliers:
    """Mixin giving a Keras optimizer one learning-rate factor per variable.

    The update of a variable is the base optimizer's update computed with
    `learning_rate * multiplier_for(variable.path, multipliers)`. For SGD
    and Adam this scales the step of that variable by the factor exactly.

    Every key must match at least one variable the optimizer is built
    with (its trainable variables, at the start of `fit`): a misspelled
    key, or one of a frozen layer, raises a `ValueError` naming the key
    and the layers that are there, instead of being silently ignored.

    Args:
        multipliers: dict `{variable path or path prefix: factor >= 0}`;
            see `multiplier_for`. Unlisted variables use factor 1.
        *args, **kwargs: the base optimizer's arguments.
    """

    def __init__(self, *args, multipliers=None, **kwargs):
        checked = _check_multipliers(multipliers)
        super().__init__(*args, **kwargs)
        self.multipliers = checked

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # Our own map from each variable to its factor, built once. The
        # backend may hand `update_step` the Keras variable, its backend
        # variable (`variable.value`, a `tf.Variable` under TensorFlow) or,
        # under a `tf.distribute` strategy, one replica's component of it,
        # so every one of them is a key.
        paths = [variable.path for variable in variables]
        for key in self.multipliers:
            if not any(_matches(path, key) for path in paths):
                raise _unmatched_key_error(key, paths)
        self._factor_by_id = {}
        for variable in variables:
            factor = multiplier_for(variable.path, self.multipliers)
            for key in _identities(variable):
                self._factor_by_id[key] = factor

    def variable_multiplier(self, variable):
        """The factor applied to `variable`.

        Args:
            variable: a variable the optimizer was built with (a Keras
                variable, or the backend variable behind it).

        Returns:
            float. The variable's factor.

        Raises:
            ValueError: if the optimizer is not built, or was not built
                with `variable`.
        """
        factor = getattr(self, "_factor_by_id", {}).get(id(variable))
        if factor is None:
            raise ValueError(
                "`variable` is not one of the variables this optimizer was "
                "built with (call `build` or `fit` first). Received: "
                f"variable={getattr(variable, 'path', variable)!r}"
            )
        return factor

    def update_step(self, gradient, variable, learning_rate):
        factor = self.variable_multiplier(variable)
        if factor != 1.0:
            learning_rate = ops.multiply(learning_rate, factor)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["multipliers"] = dict(self.multipliers)
        return config


@keras.saving.register_keras_serializable(package="mtlbook")
class DiscriminativeAdam(LearningRateMultipliers, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with learning-rate groups.

    Args:
        learning_rate: float or schedule. The base rate (factor 1).
        multipliers: dict `{variable path or prefix: factor}`.
        **kwargs: other `keras.optimizers.Adam` arguments.

    Example:

    ```python
    model.compile(DiscriminativeAdam(1e-3, multipliers={"block1_conv": 0.1}),
                  loss=...)
    ```
    """


@keras.saving.register_keras_serializable(package="mtlbook")
class DiscriminativeAdamW(LearningRateMultipliers, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with learning-rate groups (see
    `DiscriminativeAdam`); weight decay uses the base rate."""


@keras.saving.register_keras_serializable(package="mtlbook")
class DiscriminativeSGD(LearningRateMultipliers, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with learning-rate groups (see
    `DiscriminativeAdam`)."""


@keras.saving.register_keras_serializable(package="mtlbook")
class SlantedTriangular(keras.optimizers.schedules.LearningRateSchedule):
    """Slanted triangular learning rate: a short linear warm-up, then a long
    linear decay.

    With `T = total_steps`, `cut = floor(T * cut_fraction)` and step `t`:

    - `p = t / cut` for `t < cut`,
    - `p = 1 - (t - cut) / (T - cut)` for `cut <= t < T`, and `p = 0` after;
    - `rate = max_learning_rate * (1 + p * (ratio - 1)) / ratio`.

    The rate rises from `max_learning_rate / ratio` to `max_learning_rate`
    at step `cut` and falls back to `max_learning_rate / ratio` at `T`.
    (ULMFiT writes the decay as `1 - (t - cut) / (cut * (1 / cut_frac - 1))`,
    the same as `T - cut` when `T * cut_frac` is whole.)

    Args:
        max_learning_rate: finite float > 0. Peak rate.
        total_steps: int >= 2. Number of training steps `T`.
        cut_fraction: float in (0, 1). Share of the steps spent warming up.
        ratio: finite float >= 1. How much smaller the lowest rate is.

    Example:

    ```python
    schedule = SlantedTriangular(1e-3, total_steps=epochs * steps_per_epoch)
    model.compile(keras.optimizers.Adam(schedule), loss=...)
    ```

    Reference:
        Howard and Ruder, 2018, "Universal Language Model Fine-tuning for
        Text Classification".
    """

    def __init__(
        self, max_learning_rate, total_steps, cut_fraction=0.1, ratio=32.0
    ):
        _check_positive_float("max_learning_rate", max_learning_rate)
        if isinstance(total_steps, bool) or not isinstance(
            total_steps, numbers.Integral
        ) or total_steps < 2:
            raise ValueError(
                "`total_steps` must be an int >= 2. "
                f"Received: total_steps={total_steps!r}"
            )
        if isinstance(cut_fraction, bool) or not isinstance(
            cut_fraction, (int, float)
        ) or not 0.0 < cut_fraction < 1.0:
            raise ValueError(
                "`cut_fraction` must be a float in (0, 1). "
                f"Received: cut_fraction={cut_fraction!r}"
            )
        _check_positive_float("ratio", ratio, minimum=1.0, inclusive=True)
        self.max_learning_rate = float(max_learning_rate)
        self.total_steps = int(total_steps)
        self.cut_fraction = float(cut_fraction)
        self.ratio = float(ratio)
        self.cut = min(
            max(1, math.floor(self.total_steps * self.cut_fraction)),
            self.total_steps - 1,
        )

    def __call__(self, step):
        step = ops.cast(step, "float32")
        cut = float(self.cut)
        rising = step / cut
        falling = 1.0 - (step - cut) / float(self.total_steps - self.cut)
        p = ops.clip(ops.where(step < cut, rising, falling), 0.0, 1.0)
        return self.max_learning_rate * (1.0 + p * (self.ratio - 1.0)) / (
            self.ratio
        )

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "cut_fraction": self.cut_fraction,
            "ratio": self.ratio,
        }
