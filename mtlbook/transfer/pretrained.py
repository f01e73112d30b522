"""An offline pretrained network: the book's small CNN trained on digits 0-4.

`pretrained_digits_cnn` trains the network once, deterministically, in
seconds on a CPU, and caches it as a `.keras` file; later calls (and other
chapters) load the file. The file is written to a temporary name and moved
into place with `os.replace`, so a crash never leaves a half-written model
under the cache name, and a cached file that does not load is rebuilt.
"""

import hashlib
import json
import os
import tempfile

import keras
import numpy as np

SOURCE_DIGITS = (0, 1, 2, 3, 4)
TARGET_DIGITS = (5, 6, 7, 8, 9)
CACHE_ENV = "MTLBOOK_CACHE"


def cache_directory(cache_dir=None):
    """Where pretrained models are cached.

    Args:
        cache_dir: optional path. Wins when given.

    Returns:
        str. `cache_dir`, else `$MTLBOOK_CACHE`, else
        `$XDG_CACHE_HOME/mtlbook` (by default `~/.cache/mtlbook`).
    """
    if cache_dir is not None:
        return os.fspath(cache_dir)
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "mtlbook")


def scatter_on_canvas(images, canvas_size, noise=0.3, seed=0):
    """Pastes each image at a random place on a noisy, larger canvas.

    Pixel `(r, c)` of the output is `max(u, image)` inside the pasted
    square and `u` elsewhere, with `u ~ Uniform(0, noise)` drawn per pixel.

    Args:
        images: array `(n, h, h, 1)` with values in [0, 1].
        canvas_size: int >= h. Output height and width.
        noise: float in [0, 1]. Largest background value.
        seed: int. Seed of positions and noise.

    Returns:
        float32 array `(n, canvas_size, canvas_size, 1)`.
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(
            "`images` must have shape (n, h, h, channels). "
            f"Received: images.shape={images.shape}"
        )
    size = images.shape[1]
    if not isinstance(canvas_size, (int, np.integer)) or canvas_size < size:
        raise ValueError(
            f"`canvas_size` must be an int >= the image size {size}. "
            f"Received: canvas_size={canvas_size!r}"
        )
    if not isinstance(noise, (int, float)) or not 0.0 <= noise <= 1.0:
        raise ValueError(
            f"`noise` must be in [0, 1]. Received: noise={noise!r}"
        )
    rng = np.random.default_rng(seed)
    shape = (len(images), canvas_size, canvas_size, images.shape[3])
    canvas = rng.uniform(0.0, noise, shape).astype("float32")
    rows = rng.integers(0, canvas_size - size + 1, len(images))
    cols = rng.integers(0, canvas_size - size + 1, len(images))
    for i, (r, c) in enumerate(zip(rows, cols)):
        window = canvas[i, r:r + size, c:c + size]
        np.maximum(window, images[i], out=window)
    return canvas


def transfer_digits(
    digit_size=12, canvas_size=None, noise=0.3, source_copies=1, seed=0
):
    """Source (digits 0-4) and target (digits 5-9) tasks from the digits.

    Uses scikit-learn's bundled digits (`mtlbook.data.load_digits`, a
    stratified 70/30 train/test split). Target labels are shifted to 0-4.
    With `canvas_size`, every image is pasted at a random place on a noisy
    canvas (`scatter_on_canvas`): a harder task where position and clutter
    must be learned, and few labels hurt.

    Args:
        digit_size: int. Side of the (upscaled) digit images.
        canvas_size: optional int >= digit_size. Scatter onto a canvas.
        noise: float. Background noise level on the canvas.
        source_copies: int >= 1. Scattered copies of each source training
            image (different positions and noise): more source data.
        seed: int. Seed of the split and the scattering.

    Returns:
        dict with keys `"source_train"`, `"source_test"`, `"target_train"`,
        `"target_test"`; each value is a tuple `(x, labels)`.
    """
    from mtlbook.data import load_digits

    if not isinstance(source_copies, int) or source_copies < 1:
        raise ValueError(
            "`source_copies` must be an int >= 1. "
            f"Received: source_copies={source_copies!r}"
        )
    data = load_digits(
        tasks=("digit",), image_size=digit_size, test_fraction=0.3, seed=seed
    )
    parts = {}
    for split in ("train", "test"):
        x, digits = data[split].x, data[split].y["digit"]
        tasks = (("source", SOURCE_DIGITS), ("target", TARGET_DIGITS))
        for task, wanted in tasks:
            keep = np.isin(digits, wanted)
            images, labels = x[keep], (digits[keep] - wanted[0]).astype("int32")
            is_source_train = (task, split) == ("source", "train")
            copies = source_copies if is_source_train else 1
            if canvas_size is not None:
                offset = 1000 * seed + 100 * (split == "test") + 10 * (
                    task == "target"
                )
                images = np.concatenate([
                    scatter_on_canvas(images, canvas_size, noise, offset + k)
                    for k in range(copies)
                ])
                labels = np.tile(labels, copies)
            parts[f"{task}_{split}"] = (images, labels)
    return parts


def small_cnn(input_shape, num_classes, width=16, name="small_cnn"):
    """The book's small CNN: three conv blocks with BatchNormalization.

    Blocks `block{i}_conv` (3x3, `width * 2**(i-1)` filters, no bias) ->
    `block{i}_bn` (momentum 0.9) -> `block{i}_relu`, with max pooling after
    blocks 1 and 2, global average pooling (`"features"`), and a linear
    `"classifier"` returning logits.

    Args:
        input_shape: tuple `(height, width, channels)`.
        num_classes: int. Number of logits.
        width: int. Filters of the first block.
        name: str. Model name.

    Returns:
        A functional `keras.Model`.
    """
    layers = keras.layers
    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    for block in (1, 2, 3):
        x = layers.Conv2D(
            width * 2 ** (block - 1), 3, padding="same", use_bias=False,
            name=f"block{block}_conv",
        )(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn")(x)
        x = layers.Activation("relu", name=f"block{block}_relu")(x)
        if block < 3:
            x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def compile_classifier(model, learning_rate=3e-3, optimizer=None):
    """Compiles `model` (logits) with sparse cross-entropy and accuracy.

    Args:
        model: a `keras.Model` returning logits.
        learning_rate: float. Adam's rate when `optimizer` is None.
        optimizer: optional `keras.optimizers.Optimizer`.

    Returns:
        `model`.
    """
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def pretrained_digits_cnn(
    digit_size=12,
    canvas_size=24,
    noise=0.3,
    source_copies=3,
    width=16,
    epochs=6,
    batch_size=64,
    seed=0,
    cache_dir=None,
    overwrite=False,
):
    """The small CNN trained on the source task (digits 0-4), cached.

    The first call trains `small_cnn` on `transfer_digits(...)["source_train"]`
    with Adam (3e-3) for `epochs`, seeded with `keras.utils.set_random_seed
    (seed)`, and saves it to `<cache>/digits_cnn-<hash of the arguments>.keras`
    through a temporary file and `os.replace`. Later calls load that file;
    a file that fails to load is rebuilt. Training re-seeds the global
    random generators: seed again after calling this function.

    Args:
        digit_size, canvas_size, noise, source_copies: see
            `transfer_digits`.
        width: int. `small_cnn` width.
        epochs: int. Training epochs on the source task.
        batch_size: int. Batch size.
        seed: int. Seed of the data and of the initialisation.
        cache_dir: optional path; default `cache_directory()`
            (`$MTLBOOK_CACHE` or `~/.cache/mtlbook`).
        overwrite: bool. Retrain even when a cached file exists.

    Returns:
        The trained `keras.Model` (5 logits), compiled.

    Example:

    ```python
    source = pretrained_digits_cnn()
    features = keras.Model(source.input, source.get_layer("features").output)
    ```
    """
    for arg, value in (("epochs", epochs), ("width", width),
                       ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{arg}` must be a positive int. Received: {arg}={value!r}"
            )
    settings = dict(
        digit_size=digit_size, canvas_size=canvas_size, noise=noise,
        source_copies=source_copies, width=width, epochs=epochs,
        batch_size=batch_size, seed=seed, keras=keras.__version__,
    )
    key = hashlib.sha256(
        json.dumps(settings, sort_keys=True).encode()
    ).hexdigest()[:12]
    directory = cache_directory(cache_dir)
    path = os.path.join(directory, f"digits_cnn-{key}.keras")
    if os.path.isfile(path) and not overwrite:
        try:
            return keras.saving.load_model(path)
        except Exception:  # a damaged or foreign file: rebuild it
            pass
    data = transfer_digits(digit_size, canvas_size, noise, source_copies, seed)
    x, labels = data["source_train"]
    keras.utils.set_random_seed(seed)
    model = compile_classifier(
        small_cnn(x.shape[1:], len(SOURCE_DIGITS), width, name="digits_cnn")
    )
    model.fit(x, labels, epochs=epochs, batch_size=batch_size, verbose=0,
              validation_data=data["source_test"])
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        suffix=".keras", prefix=".digits_cnn-", dir=directory
    )
    os.close(handle)
    try:
        model.save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return keras.saving.load_model(path)
