"""`GradualUnfreezing`: unfreeze one layer group per epoch, from the top."""

import keras

from .freezing import is_batchnorm


def _group_layers(group):
    return list(group) if isinstance(group, (list, tuple)) else [group]


def _sublayers(layer):
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from _sublayers(child)


class GradualUnfreezing(keras.callbacks.Callback):
    """Unfreezes layer groups one at a time, from the top, during `fit`.

    Before epoch `e` the top `min(G, 1 + e // epochs_per_group)` of the `G`
    groups are trainable and the others frozen; BatchNormalization layers
    stay frozen unless `train_batchnorm=True`. When the set of trainable
    weights changes, the callback rebuilds the model's train function.

    The optimizer is built once, at the start of `fit`, on the weights of
    every group, so its state (step counter, moments, schedule) carries on
    when a group is unfrozen. Compile with a fresh optimizer: one that was
    already built (other than by this callback, on these weights, in an
    earlier `fit`) may track fewer weights and cannot be extended, and
    `fit` then raises a `ValueError`.

    Args:
        groups: list of layer groups, bottom (input side) to top; each
            group is a layer or a list of layers. Layers outside all groups
            keep their `trainable` setting.
        epochs_per_group: int >= 1. Epochs between two unfreezing steps.
        train_batchnorm: bool. Also unfreeze BatchNormalization layers.

    Example:

    ```python
    groups = [model.get_layer(n) for n in ("block1_conv", "block2_conv",
                                            "block3_conv", "classifier")]
    model.compile(keras.optimizers.Adam(1e-3), loss=...)
    model.fit(x, y, epochs=4, callbacks=[GradualUnfreezing(groups)])
    ```

    Reference:
        Howard and Ruder, 2018, "Universal Language Model Fine-tuning for
        Text Classification".
    """

    def __init__(self, groups, epochs_per_group=1, train_batchnorm=False):
        super().__init__()
        if not isinstance(groups, (list, tuple)) or not groups:
            raise ValueError(
                "`groups` must be a non-empty list of layers or lists of "
                f"layers. Received: groups={groups!r}"
            )
        for index, group in enumerate(groups):
            if not _group_layers(group):
                raise ValueError(
                    "`groups` must not contain empty groups. "
                    f"Received: an empty group at index {index}"
                )
            for layer in _group_layers(group):
                if not isinstance(layer, keras.layers.Layer):
                    raise TypeError(
                        "`groups` must contain Keras layers. "
                        f"Received: {type(layer).__name__} in group {index}"
                    )
        if isinstance(epochs_per_group, bool) or not isinstance(
            epochs_per_group, int
        ) or epochs_per_group < 1:
            raise ValueError(
                "`epochs_per_group` must be an int >= 1. "
                f"Received: epochs_per_group={epochs_per_group!r}"
            )
        if not isinstance(train_batchnorm, bool):
            raise TypeError(
                "`train_batchnorm` must be a bool. "
                f"Received: train_batchnorm={train_batchnorm!r}"
            )
        self.groups = [_group_layers(group) for group in groups]
        self.epochs_per_group = epochs_per_group
        self.train_batchnorm = train_batchnorm
        self.unfrozen = 0  # number of groups currently trainable
        self.history = []  # (epoch, number of unfrozen groups)
        # the optimizer this callback built, and the ids of its weights
        self._built = (None, frozenset())

    def _set_groups(self, count):
        first_trainable = len(self.groups) - count
        for index, group in enumerate(self.groups):
            for layer in group:
                for sublayer in _sublayers(layer):
                    sublayer.trainable = index >= first_trainable and (
                        self.train_batchnorm or not is_batchnorm(sublayer)
                    )
        self.unfrozen = count

    def on_train_begin(self, logs=None):
        if not self.model.trainable:
            raise ValueError(
                "`GradualUnfreezing` needs a model whose `trainable` is True "
                "(freeze its layers, not the model itself). "
                f"Received: model.trainable={self.model.trainable}"
            )
        optimizer = self.model.optimizer
        self._set_groups(len(self.groups))
        every_weight = list(self.model.trainable_variables)
        weight_ids = frozenset(id(v) for v in every_weight)
        if not optimizer.built:
            optimizer.build(every_weight)
            self._built = (optimizer, weight_ids)
        elif self._built[0] is not optimizer or not (
            weight_ids <= self._built[1]
        ):
            # Keras has no public list of the variables an optimizer was
            # built with: only one that this callback built is known to
            # track every group's weights.
            raise ValueError(
                "`GradualUnfreezing` needs an optimizer that is not yet "
                "built, so that it can track every group's weights. "
                "Received: an optimizer already built elsewhere (it may "
                "track fewer variables than the "
                f"{len(every_weight)} of the groups); compile the model "
                "again with a fresh optimizer."
            )
        self._set_groups(0)

    def on_epoch_begin(self, epoch, logs=None):
        count = min(len(self.groups), 1 + epoch // self.epochs_per_group)
        if count != self.unfrozen:
            self._set_groups(count)
            self.model.make_train_function(force=True)
        self.history.append((epoch, count))
