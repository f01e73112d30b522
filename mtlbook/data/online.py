"""Online loaders: MNIST and Fashion-MNIST, with the book's task labels.

These download on first use (through `keras.utils.get_file`, which caches
under `~/.keras/datasets` and checks the file's SHA-256), so the book's
default runs never call them: a notebook flag (`FULL_DATA = True`) switches a
Colab reader to them. Both also read local files in the same format
(`path=` / `directory=`), which is how the tests exercise them offline.
Without `path=`/`directory=`, both first look in the folder named by the
environment variable `MTLBOOK_DATA_DIR` (`mnist.npz`, `fashion-mnist/`)
when it is set: an offline machine (or the book's smoke test of a chapter's
full-size path) puts the files there instead of downloading them.
"""

import gzip
import os
import zipfile

import numpy as np

from mtlbook.data.digits import DIGIT_TASKS, Split, split_indices

DATA_DIR_VARIABLE = "MTLBOOK_DATA_DIR"
_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
MNIST_SHA256 = (
    "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
)
FASHION_FILES = {
    "train_labels": "train-labels-idx1-ubyte.gz",
    "train_images": "train-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
}

# Fashion-MNIST classes: 0 T-shirt, 1 trouser, 2 pullover, 3 dress, 4 coat,
# 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot.
FASHION_TASKS = {
    "item": lambda c: c.astype("int32"),
    "footwear": lambda c: np.isin(c, (5, 7, 9)).astype("int32"),
}


def _check_tasks(tasks, known):
    received = tasks
    if isinstance(tasks, str):
        tasks = (tasks,)
    try:
        tasks = tuple(tasks)
    except TypeError:
        tasks = ()
    if not tasks or any(not isinstance(t, str) or t not in known
                        for t in tasks):
        raise ValueError(
            f"`tasks` must be a non-empty sequence of {sorted(known)}. "
            f"Received: tasks={received!r}"
        )
    return tasks


def _check_split_arguments(validation_fraction, seed):
    if isinstance(validation_fraction, (bool, np.bool_)) or not isinstance(
        validation_fraction, (int, float, np.integer, np.floating)
    ) or not 0.0 <= validation_fraction < 1.0:
        raise ValueError(
            "`validation_fraction` must be a float in [0, 1). "
            f"Received: validation_fraction={validation_fraction!r}"
        )
    if isinstance(seed, bool) or not isinstance(
        seed, (int, np.integer)
    ) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0. Received: seed={seed!r}")


def _check_path(name, value):
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"`{name}` must be None or a path (str or os.PathLike). "
            f"Received: {name}={value!r}"
        )


def _make_splits(x_train, c_train, x_test, c_test, tasks, task_fns,
                 validation_fraction, seed):
    _check_split_arguments(validation_fraction, seed)

    def split(x, classes):
        x = (x.astype("float32") / 255.0)[..., None]
        return Split(x, {t: task_fns[t](classes) for t in tasks})

    splits = {}
    if validation_fraction > 0:
        parts = split_indices(
            c_train,
            {
                "train": 1.0 - validation_fraction,
                "validation": validation_fraction,
            },
            seed=seed,
        )
        splits["train"] = split(
            x_train[parts["train"]], c_train[parts["train"]]
        )
        splits["validation"] = split(
            x_train[parts["validation"]], c_train[parts["validation"]]
        )
    else:
        splits["train"] = split(x_train, c_train)
    splits["test"] = split(x_test, c_test)
    return splits


def load_mnist(tasks=("digit", "parity"), validation_fraction=0.0, path=None,
               seed=0):
    """Loads MNIST (28x28) with the same task labels as `load_digits`.

    Args:
        tasks: sequence of names from `DIGIT_TASKS`.
        validation_fraction: float in [0, 1). Share of the training set held
            out (stratified) for validation.
        path: optional local `mnist.npz` (keys `x_train`, `y_train`,
            `x_test`, `y_test`, as Keras caches it). `None` reads
            `$MTLBOOK_DATA_DIR/mnist.npz` when that variable is set, else
            downloads the file once into Keras's cache and verifies its
            checksum.
        seed: int >= 0. Seed of the validation split.

    Returns:
        dict of `Split(x, y)` like `load_digits`, images `(n, 28, 28, 1)`
        scaled to [0, 1].
    """
    import keras

    tasks = _check_tasks(tasks, DIGIT_TASKS)
    _check_split_arguments(validation_fraction, seed)
    _check_path("path", path)
    if path is None and os.environ.get(DATA_DIR_VARIABLE):
        path = os.path.join(os.environ[DATA_DIR_VARIABLE], "mnist.npz")
    if path is None:
        path = keras.utils.get_file(
            "mnist.npz", origin=_ORIGIN + "mnist.npz", file_hash=MNIST_SHA256
        )
    if not os.path.isfile(path):
        raise ValueError(
            "`path` must be an existing .npz file. "
            f"Received: path={path!r}"
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            "`path` must be a valid .npz archive (a zip file). Received: "
            f"path={path!r}, which exists but is not one (damaged, "
            "truncated or another format)"
        )
    with np.load(path, allow_pickle=False) as archive:
        names = ("x_train", "y_train", "x_test", "y_test")
        missing = set(names) - set(archive.files)
        if missing:
            raise ValueError(
                f"`path` must hold arrays x_train, y_train, x_test, y_test. "
                f"Received: path={path!r} without {sorted(missing)}"
            )
        arrays = [archive[k] for k in names]
    return _make_splits(*arrays, tasks, DIGIT_TASKS, validation_fraction, seed)


def _read_idx(path, offset):
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=offset)


def load_fashion_mnist(tasks=("item", "footwear"), validation_fraction=0.0,
                       directory=None, seed=0):
    """Loads Fashion-MNIST with an item task (10 classes) and a footwear task.

    Args:
        tasks: sequence of names from `FASHION_TASKS` (`"item"`,
            `"footwear"`: sandal, sneaker or ankle boot).
        validation_fraction: float in [0, 1). Held-out share of training.
        directory: optional folder with the four gzipped IDX files
            (`train-images-idx3-ubyte.gz`, ...). `None` reads
            `$MTLBOOK_DATA_DIR/fashion-mnist` when that variable is set,
            else downloads them once into Keras's cache.
        seed: int >= 0. Seed of the validation split.

    Returns:
        dict of `Split(x, y)`, images `(n, 28, 28, 1)` scaled to [0, 1].
    """
    import keras

    tasks = _check_tasks(tasks, FASHION_TASKS)
    _check_split_arguments(validation_fraction, seed)
    _check_path("directory", directory)
    if directory is None and os.environ.get(DATA_DIR_VARIABLE):
        directory = os.path.join(os.environ[DATA_DIR_VARIABLE],
                                 "fashion-mnist")
    paths = {}
    for key, name in FASHION_FILES.items():
        if directory is None:
            paths[key] = keras.utils.get_file(
                name,
                origin=_ORIGIN + name,
                cache_subdir="datasets/fashion-mnist",
            )
        else:
            paths[key] = os.path.join(directory, name)
            if not os.path.isfile(paths[key]):
                raise ValueError(
                    f"`directory` must hold {sorted(FASHION_FILES.values())}. "
                    f"Received: directory={directory!r} without {name}"
                )
    c_train = _read_idx(paths["train_labels"], 8)
    c_test = _read_idx(paths["test_labels"], 8)
    x_train = _read_idx(paths["train_images"], 16).reshape(len(c_train), 28, 28)
    x_test = _read_idx(paths["test_images"], 16).reshape(len(c_test), 28, 28)
    return _make_splits(x_train, c_train, x_test, c_test, tasks, FASHION_TASKS,
                        validation_fraction, seed)
