"""An offline pretrained network: the book's small CNN trained on digits 0-4.

`pretrained_digits_cnn` trains the network once, deterministically, in
seconds on a CPU, and caches it as a `.keras` file; later calls (and other
chapters) load the file. The file is written to a temporary name and moved
into place with `os.replace`, so a crash never leaves a half-written model
under the cache name.

Next to each model file, a small JSON file (same name, `.json`) records the
training settings and the SHA-256 of the model file: the fingerprint. A
cached model is used only when its fingerprint matches and it loads with
the expected input and output shapes; a damaged or foreign file (another
model saved under the cache name) is rebuilt, with a warning, and a file
without a fingerprint (written by an older version) is rebuilt quietly.
When the cache cannot be written (a read-only folder), the model just
trained is returned, with a warning. A cache path that is not a folder
(`$MTLBOOK_CACHE` naming a file), or a folder where the model file should
be, is a `ValueError` raised before any training.
"""

import hashlib
import json
import math
import os
import tempfile
import warnings

import keras
import numpy as np

SOURCE_DIGITS = (0, 1, 2, 3, 4)
TARGET_DIGITS = (5, 6, 7, 8, 9)
CACHE_ENV = "MTLBOOK_CACHE"


def _check_int(name, value, minimum):
    """Raises unless `value` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(
        value, (int, np.integer)
    ) or value < minimum:
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _check_fraction(name, value, low=0.0, high=1.0):
    """Raises unless `value` is a finite real (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.floating, np.integer)
    ) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(
            f"`{name}` must be a float in [{low:g}, {high:g}]. "
            f"Received: {name}={value!r}"
        )


def cache_directory(cache_dir=None):
    """Where pretrained models are cached.

    Args:
        cache_dir: optional path (str or `os.PathLike`). Wins when given.

    Returns:
        str. `cache_dir`, else `$MTLBOOK_CACHE`, else
        `$XDG_CACHE_HOME/mtlbook` (by default `~/.cache/mtlbook`).

    Raises:
        TypeError: if `cache_dir` is not a path.
        ValueError: if the chosen path exists and is not a folder (the
            message names `cache_dir` or `$MTLBOOK_CACHE`, whichever chose
            it).

    Example:

    ```python
    cache_directory("/tmp/models")  # "/tmp/models"
    ```
    """
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(
                "`cache_dir` must be a folder path (str or os.PathLike). "
                f"Received: cache_dir={cache_dir!r}"
            )
        directory, source = os.fspath(cache_dir), "`cache_dir`"
    elif os.environ.get(CACHE_ENV):
        directory, source = os.environ[CACHE_ENV], f"`${CACHE_ENV}`"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache"
        )
        directory, source = os.path.join(base, "mtlbook"), "the cache path"
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(
            f"{source} must be a folder (or not exist yet). Received: "
            f"{directory!r}, which is a file"
        )
    return directory


def scatter_on_canvas(images, canvas_size, noise=0.3, seed=0):
    """Pastes each image at a random place on a noisy, larger canvas.

    Pixel `(r, c)` of the output is `max(u, image)` inside the pasted
    square and `u` elsewhere, with `u ~ Uniform(0, noise)` drawn per pixel.

    Args:
        images: array `(n, h, h, 1)` with values in [0, 1].
        canvas_size: int >= h. Output height and width.
        noise: float in [0, 1]. Largest background value.
        seed: int >= 0. Seed of positions and noise.

    Returns:
        float32 array `(n, canvas_size, canvas_size, 1)`.

    Example:

    ```python
    canvas = scatter_on_canvas(np.ones((2, 4, 4, 1)), 10)  # (2, 10, 10, 1)
    ```
    """
    received = images
    try:
        images = np.asarray(images, dtype="float32")
    except (TypeError, ValueError):
        images = None
    if images is None or images.ndim != 4 or (
        images.shape[1] != images.shape[2]
    ):
        shown = (f"images.shape={images.shape}"
                 if isinstance(received, np.ndarray)
                 else f"images={received!r}"[:100])
        raise ValueError(
            f"`images` must have shape (n, h, h, channels). Received: {shown}"
        )
    size = images.shape[1]
    if isinstance(canvas_size, bool) or not isinstance(
        canvas_size, (int, np.integer)
    ) or canvas_size < size:
        raise ValueError(
            f"`canvas_size` must be an int >= the image size {size}. "
            f"Received: canvas_size={canvas_size!r}"
        )
    _check_fraction("noise", noise)
    _check_int("seed", seed, 0)
    if not np.all(np.isfinite(images)):
        raise ValueError("`images` must be finite. Received NaN or inf")
    rng = np.random.default_rng(seed)
    shape = (len(images), canvas_size, canvas_size, images.shape[3])
    canvas = rng.uniform(0.0, noise, shape).astype("float32")
    rows = rng.integers(0, canvas_size - size + 1, len(images))
    cols = rng.integers(0, canvas_size - size + 1, len(images))
    for i, (r, c) in enumerate(zip(rows, cols)):
        window = canvas[i, r:r + size, c:c + size]
        np.maximum(window, images[i], out=window)
    return canvas


def _check_transfer_arguments(digit_size, canvas_size, noise, source_copies,
                              seed):
    _check_int("digit_size", digit_size, 1)
    if canvas_size is not None and (
        isinstance(canvas_size, bool)
        or not isinstance(canvas_size, (int, np.integer))
        or canvas_size < digit_size
    ):
        raise ValueError(
            "`canvas_size` must be None or an int >= digit_size "
            f"({digit_size}). Received: canvas_size={canvas_size!r}"
        )
    _check_fraction("noise", noise)
    _check_int("source_copies", source_copies, 1)
    _check_int("seed", seed, 0)


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
        digit_size: int >= 1. Side of the (upscaled) digit images.
        canvas_size: optional int >= digit_size. Scatter onto a canvas.
        noise: float in [0, 1]. Background noise level on the canvas.
        source_copies: int >= 1. Scattered copies of each source training
            image (different positions and noise): more source data.
        seed: int >= 0. Seed of the split and the scattering.

    Returns:
        dict with keys `"source_train"`, `"source_test"`, `"target_train"`,
        `"target_test"`; each value is a tuple `(x, labels)`.

    Example:

    ```python
    data = transfer_digits(digit_size=12, canvas_size=24)
    x, labels = data["source_train"]  # (n, 24, 24, 1), labels 0-4
    ```
    """
    from mtlbook.data import load_digits

    _check_transfer_arguments(digit_size, canvas_size, noise, source_copies,
                              seed)
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
        input_shape: tuple `(height, width, channels)` of positive ints
            (height and width may be None).
        num_classes: int >= 1. Number of logits.
        width: int >= 1. Filters of the first block.
        name: str. Model name.

    Returns:
        A functional `keras.Model`.

    Example:

    ```python
    model = small_cnn((24, 24, 1), 5)
    ```
    """
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3 \
            or not all(
                (size is None and index < 2) or (
                    isinstance(size, (int, np.integer))
                    and not isinstance(size, bool) and size > 0)
                for index, size in enumerate(input_shape)):
        raise ValueError(
            "`input_shape` must be a tuple (height, width, channels) of "
            f"positive ints. Received: input_shape={input_shape!r}"
        )
    _check_int("num_classes", num_classes, 1)
    _check_int("width", width, 1)
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str. Received: name={name!r}")
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
        learning_rate: finite float > 0. Adam's rate when `optimizer` is
            None.
        optimizer: optional `keras.optimizers.Optimizer`.

    Returns:
        `model`.

    Example:

    ```python
    model = compile_classifier(small_cnn((24, 24, 1), 5))
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if isinstance(learning_rate, bool) or not isinstance(
        learning_rate, (int, float)
    ) or not math.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(
            "`learning_rate` must be a finite float > 0. "
            f"Received: learning_rate={learning_rate!r}"
        )
    if optimizer is not None and not isinstance(
        optimizer, keras.optimizers.Optimizer
    ):
        raise TypeError(
            "`optimizer` must be None or a keras.optimizers.Optimizer. "
            f"Received: optimizer={optimizer!r}"
        )
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_cached(path, fingerprint_path, settings, input_shape):
    """The cached model at `path`, or None (with a warning) if not ours."""
    if not os.path.exists(fingerprint_path):
        return None  # written before fingerprints existed: rebuilt quietly
    try:
        with open(fingerprint_path) as handle:
            fingerprint = json.load(handle)
    except (OSError, ValueError) as error:
        problem = f"its fingerprint {fingerprint_path!r} is unreadable " \
            f"({error})"
    else:
        if not isinstance(fingerprint, dict) or fingerprint.get(
            "settings"
        ) != settings:
            problem = f"its fingerprint {fingerprint_path!r} records other " \
                "settings"
        elif fingerprint.get("sha256") != _file_digest(path):
            problem = "the file is not the one its fingerprint records " \
                "(another model saved under this name, or a damaged file)"
        else:
            try:
                model = keras.saving.load_model(path)
            except Exception as error:  # noqa: BLE001 (rebuilt, reported)
                problem = "it is not a loadable .keras archive " \
                    f"({type(error).__name__}: {error})"
            else:
                expected = ((None,) + tuple(input_shape),
                            (None, len(SOURCE_DIGITS)))
                found = (tuple(model.input_shape), tuple(model.output_shape))
                if found == expected:
                    return model
                problem = f"it maps inputs {found[0]} to {found[1]}, not " \
                    f"{expected[0]} to {expected[1]}"
    warnings.warn(
        f"The cached pretrained model {path!r} is not used, because "
        f"{problem}; training it again.",
        stacklevel=3,
    )
    return None


def _write_atomically(directory, path, prefix, write):
    """Calls `write(temporary)`, then moves the temporary file to `path`."""
    handle, temporary = tempfile.mkstemp(
        suffix=os.path.splitext(path)[1], prefix=prefix, dir=directory
    )
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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
    through a temporary file and `os.replace`, with its fingerprint (the
    settings and the file's SHA-256) in `digits_cnn-<hash>.json`. Later
    calls load that file when the fingerprint matches and the model has
    the expected input and output shapes; any other file under that name
    (damaged or foreign) is rebuilt, with a warning, and one without a
    fingerprint (written by an older version) quietly. When the cache
    cannot be written (read-only folder, disk full), the model just
    trained is returned, with a warning. Training re-seeds the global
    random generators: seed again after calling this function.

    Args:
        digit_size, canvas_size, noise, source_copies: see
            `transfer_digits`.
        width: int >= 1. `small_cnn` width.
        epochs: int >= 1. Training epochs on the source task.
        batch_size: int >= 1. Batch size.
        seed: int >= 0. Seed of the data and of the initialisation.
        cache_dir: optional path; default `cache_directory()`
            (`$MTLBOOK_CACHE` or `~/.cache/mtlbook`).
        overwrite: bool. Retrain even when a cached file exists.

    Returns:
        The trained `keras.Model` (5 logits), compiled.

    Raises:
        ValueError: for bad arguments, a cache path that is not a folder,
            or a folder where the model file should be (all before any
            training).

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
    _check_transfer_arguments(digit_size, canvas_size, noise, source_copies,
                              seed)
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(
            f"`overwrite` must be a bool. Received: overwrite={overwrite!r}"
        )
    settings = dict(
        digit_size=int(digit_size),
        canvas_size=None if canvas_size is None else int(canvas_size),
        noise=float(noise), source_copies=int(source_copies), width=width,
        epochs=epochs, batch_size=batch_size, seed=int(seed),
        keras=keras.__version__,
    )
    key = hashlib.sha256(
        json.dumps(settings, sort_keys=True).encode()
    ).hexdigest()[:12]
    directory = cache_directory(cache_dir)
    path = os.path.join(directory, f"digits_cnn-{key}.keras")
    fingerprint_path = os.path.join(directory, f"digits_cnn-{key}.json")
    for name in (path, fingerprint_path):
        if os.path.isdir(name):
            raise ValueError(
                "The pretrained model's cache file must not be a folder. "
                f"Received: {name!r}, a folder; remove it, or pass another "
                f"`cache_dir` (or set ${CACHE_ENV})"
            )
    side = canvas_size if canvas_size is not None else digit_size
    input_shape = (side, side, 1)
    if os.path.exists(path) and not overwrite:
        model = _load_cached(path, fingerprint_path, settings, input_shape)
        if model is not None:
            return model
    data = transfer_digits(digit_size, canvas_size, noise, source_copies, seed)
    x, labels = data["source_train"]
    keras.utils.set_random_seed(seed)
    model = compile_classifier(
        small_cnn(x.shape[1:], len(SOURCE_DIGITS), width, name="digits_cnn")
    )
    model.fit(x, labels, epochs=epochs, batch_size=batch_size, verbose=0,
              validation_data=data["source_test"])
    try:
        os.makedirs(directory, exist_ok=True)
        _write_atomically(directory, path, ".digits_cnn-", model.save)
        fingerprint = {"settings": settings, "sha256": _file_digest(path)}

        def write_fingerprint(temporary):
            with open(temporary, "w") as handle:
                json.dump(fingerprint, handle, sort_keys=True)

        _write_atomically(directory, fingerprint_path, ".digits_cnn-",
                          write_fingerprint)
    except OSError as error:
        warnings.warn(
            f"Could not write the pretrained model to the cache {path!r} "
            f"({type(error).__name__}: {error}); returning the model just "
            "trained, uncached. Pass a writable `cache_dir` (or set "
            f"${CACHE_ENV}) to keep it.",
            stacklevel=2,
        )
        return model
    return keras.saving.load_model(path)
