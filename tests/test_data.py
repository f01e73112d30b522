"""Tests of mtlbook.data: bundled digits, pipelines and the online loaders."""

import gzip

import numpy as np
import pytest

from mtlbook import data
from mtlbook.data import online


def test_load_digits_shapes_and_tasks():
    splits = data.load_digits(tasks=("digit", "parity", "large"))
    assert set(splits) == {"train", "test"}
    x, y = splits["train"]
    assert x.shape[1:] == (8, 8, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(y) == {"digit", "parity", "large"}
    np.testing.assert_array_equal(y["parity"], y["digit"] % 2)
    np.testing.assert_array_equal(y["large"], (y["digit"] >= 5).astype(int))
    assert len(splits["train"].x) + len(splits["test"].x) == 1797


def test_load_digits_upscales_and_flattens():
    splits = data.load_digits(image_size=28, validation_fraction=0.1)
    assert splits["train"].x.shape[1:] == (28, 28, 1)
    flat = data.load_digits(image_size=28, flatten=True)
    assert flat["test"].x.shape[1:] == (784,)
    assert set(splits) == {"train", "validation", "test"}


def test_load_digits_is_deterministic_and_splits_do_not_overlap():
    a = data.load_digits(validation_fraction=0.2, seed=3)
    b = data.load_digits(validation_fraction=0.2, seed=3)
    for name in a:
        np.testing.assert_array_equal(a[name].x, b[name].x)
    rows = {name: {s.tobytes() for s in split.x} for name, split in a.items()}
    # a few digits images are exact duplicates in the source data; the
    # split is by index, so allow at most a handful of shared pixel patterns
    assert len(rows["train"] & rows["test"]) <= 3
    sizes = [len(s.x) for s in a.values()]
    assert sum(sizes) == 1797
    c = data.load_digits(validation_fraction=0.2, seed=4)
    assert not np.array_equal(a["test"].x, c["test"].x)


def test_split_indices_is_a_stratified_partition():
    labels = np.repeat(np.arange(4), 25)
    parts = data.split_indices(labels, {"a": 0.6, "b": 0.2, "c": 0.2}, seed=0)
    merged = np.sort(np.concatenate(list(parts.values())))
    np.testing.assert_array_equal(merged, np.arange(100))
    assert np.bincount(labels[parts["b"]]).tolist() == [5, 5, 5, 5]


def test_resize_images_keeps_corners_and_constants():
    images = np.random.default_rng(0).random((2, 8, 8))
    big = data.resize_images(images, 28)
    assert big.shape == (2, 28, 28)
    np.testing.assert_allclose(big[:, 0, 0], images[:, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(big[:, -1, -1], images[:, -1, -1], rtol=1e-6)
    np.testing.assert_allclose(data.resize_images(np.ones((1, 8, 8)), 5), 1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tasks": ("digit", "colour")}, "tasks"),
        ({"tasks": ()}, "tasks"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"validation_fraction": 1.5}, "validation_fraction"),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "test_fraction"),
        ({"tasks": 3}, "`tasks`"),
        ({"tasks": ("digit", 3)}, "`tasks`"),
        ({"image_size": 0}, "`image_size`"),
        ({"image_size": True}, "`image_size`"),
        ({"image_size": 12.0}, "`image_size`"),
        ({"validation_fraction": float("nan")}, "`validation_fraction`"),
        ({"validation_fraction": False}, "`validation_fraction`"),
        ({"test_fraction": float("nan")}, "`test_fraction`"),
        ({"test_fraction": True}, "`test_fraction`"),
        ({"seed": -1}, "`seed`"),
        ({"seed": 1.5}, "`seed`"),
        ({"seed": True}, "`seed`"),
    ],
)
def test_load_digits_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_digits(**kwargs)


def test_load_digits_rejects_a_non_bool_flatten():
    with pytest.raises(TypeError, match="flatten"):
        data.load_digits(flatten="yes")


def test_resize_and_split_reject_bad_arguments():
    with pytest.raises(ValueError, match="images"):
        data.resize_images(np.ones((8, 8)), 4)
    with pytest.raises(ValueError, match="images"):
        data.resize_images(np.ones((1, 0, 8)), 4)
    with pytest.raises(ValueError, match="size"):
        data.resize_images(np.ones((1, 8, 8)), 0)
    with pytest.raises(ValueError, match="`size`"):
        data.resize_images(np.ones((1, 8, 8)), True)
    with pytest.raises(ValueError, match="fractions"):
        data.split_indices(np.zeros(4), {"a": 0.5, "b": 0.6})
    for fractions in ({"a": float("nan"), "b": 1.0},
                      {"a": True, "b": 0.0}, {"a": "1"}):
        with pytest.raises(ValueError, match="fractions"):
            data.split_indices(np.zeros(4), fractions)
    with pytest.raises(TypeError, match="fractions"):
        data.split_indices(np.zeros(4), [("a", 1.0)])
    with pytest.raises(ValueError, match="labels"):
        data.split_indices([], {"a": 1.0})
    with pytest.raises(ValueError, match="labels"):
        data.split_indices(np.zeros((2, 2)), {"a": 1.0})
    with pytest.raises(ValueError, match="seed"):
        data.split_indices(np.zeros(4), {"a": 1.0}, seed=-1)
    with pytest.raises(ValueError, match="labels=None"):
        data.split_indices(None, {"a": 1.0})
    with pytest.raises(ValueError, match="images=None"):
        data.resize_images(None, 4)
    with pytest.raises(TypeError, match="images='x'"):
        data.resize_images("x", 4)


def test_to_dataset_batches_dict_labels():
    splits = data.load_digits()
    dataset = data.to_dataset(*splits["train"], batch_size=50, shuffle=True)
    x, y = next(iter(dataset))
    assert x.shape == (50, 8, 8, 1)
    assert set(y) == {"digit", "parity"} and y["digit"].shape == (50,)
    inputs_only = next(iter(data.to_dataset(splits["test"].x, batch_size=7)))
    assert inputs_only.shape == (7, 8, 8, 1)


def test_to_dataset_shuffle_is_seeded():
    x = np.arange(20, dtype="float32")[:, None]
    first = [
        b.numpy()
        for b in data.to_dataset(x, batch_size=20, shuffle=True, seed=1)
    ]
    again = [
        b.numpy()
        for b in data.to_dataset(x, batch_size=20, shuffle=True, seed=1)
    ]
    np.testing.assert_array_equal(first[0], again[0])


def test_to_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        data.to_dataset(np.zeros((4, 2)), batch_size=0)
    with pytest.raises(ValueError, match="len"):
        data.to_dataset(np.zeros((4, 2)), {"a": np.zeros(3)})


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="no_such_loader"):
        data.no_such_loader  # noqa: B018


def write_mnist_npz(path, n_train=50, n_test=10):
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        y_train=np.arange(n_train, dtype=np.uint8) % 10,
        x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        y_test=np.arange(n_test, dtype=np.uint8) % 10,
    )
    return path


def test_load_mnist_reads_a_keras_format_file(tmp_path):
    path = write_mnist_npz(tmp_path / "mnist.npz")
    splits = data.load_mnist(path=str(path), validation_fraction=0.2)
    assert splits["train"].x.shape == (40, 28, 28, 1)
    assert splits["validation"].x.shape == (10, 28, 28, 1)
    assert splits["test"].x.shape == (10, 28, 28, 1)
    assert splits["test"].x.max() <= 1.0
    np.testing.assert_array_equal(
        splits["test"].y["parity"], splits["test"].y["digit"] % 2
    )


def test_load_mnist_downloads_through_keras_with_checksum(
    tmp_path, monkeypatch
):
    path = write_mnist_npz(tmp_path / "mnist.npz")
    calls = []

    def fake_get_file(fname, origin, file_hash=None, **kwargs):
        calls.append((fname, origin, file_hash))
        return str(path)

    monkeypatch.setattr("keras.utils.get_file", fake_get_file)
    splits = data.load_mnist(tasks=("digit",))
    assert calls == [
        ("mnist.npz", online._ORIGIN + "mnist.npz", online.MNIST_SHA256)
    ]
    assert set(splits["train"].y) == {"digit"}


def test_load_mnist_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="path"):
        data.load_mnist(path=str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "bad.npz", x_train=np.zeros(3))
    with pytest.raises(ValueError, match="x_test"):
        data.load_mnist(path=str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match="tasks"):
        data.load_mnist(tasks=("item",), path=str(tmp_path / "bad.npz"))
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"half-written")
    with pytest.raises(ValueError, match="exists but is not one"):
        data.load_mnist(path=str(damaged))
    write_mnist_npz(tmp_path / "mnist.npz")
    good = str(tmp_path / "mnist.npz")
    for fraction in (float("nan"), True, 1.0, "0.1"):
        with pytest.raises(ValueError, match="validation_fraction"):
            data.load_mnist(path=good, validation_fraction=fraction)
    with pytest.raises(ValueError, match="seed"):
        data.load_mnist(path=good, seed=-1)
    with pytest.raises(TypeError, match="path"):
        data.load_mnist(path=3)
    with pytest.raises(TypeError, match="directory"):
        data.load_fashion_mnist(directory=3)
    with pytest.raises(ValueError, match="validation_fraction"):
        data.load_fashion_mnist(directory=str(tmp_path),
                                validation_fraction=float("nan"))


def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(
        n.to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_load_fashion_mnist_reads_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 5)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28)), 2051)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz",
                  np.arange(n) % 10, 2049)
    splits = data.load_fashion_mnist(directory=str(tmp_path))
    assert splits["train"].x.shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(splits["test"].y["item"], np.arange(5))
    np.testing.assert_array_equal(
        splits["train"].y["footwear"], np.isin(np.arange(20) % 10, (5, 7, 9))
    )
    with pytest.raises(ValueError, match="directory"):
        data.load_fashion_mnist(directory=str(tmp_path / "nowhere"))


def test_online_loaders_read_mtlbook_data_dir(tmp_path, monkeypatch):
    write_mnist_npz(tmp_path / "mnist.npz", n_train=30, n_test=7)
    (tmp_path / "fashion-mnist").mkdir()
    for split, n in (("train", 20), ("t10k", 5)):
        write_idx(tmp_path / "fashion-mnist" / f"{split}-images-idx3-ubyte.gz",
                  np.zeros((n, 28, 28)), 2051)
        write_idx(tmp_path / "fashion-mnist" / f"{split}-labels-idx1-ubyte.gz",
                  np.arange(n) % 10, 2049)

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although MTLBOOK_DATA_DIR is set")

    monkeypatch.setattr("keras.utils.get_file", no_download)
    monkeypatch.setenv("MTLBOOK_DATA_DIR", str(tmp_path))
    assert data.load_mnist()["test"].x.shape == (7, 28, 28, 1)
    assert data.load_fashion_mnist()["test"].x.shape == (5, 28, 28, 1)
    monkeypatch.setenv("MTLBOOK_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="path"):
        data.load_mnist()
