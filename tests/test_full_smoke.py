"""The full-size code path of every chapter that has one, offline.

A chapter whose `full` size reads online data (MNIST, Fashion-MNIST,
ImageNet weights, ...) also has the size `smoke`: the same code path, on
small fixture files written here in the real formats, for a step or two,
without result claims. Running it catches the shape, dtype and API errors a
Colab reader would otherwise meet first. Chapters are found by their use
of the size "smoke" in a code cell.
"""

import functools
import gzip
import json
import pathlib
import shutil
import tempfile
import zipfile

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from mtlbook.data.digits import resize_images

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _has_smoke_size(path):
    cells = json.loads(path.read_text())["cells"]
    return any(c["cell_type"] == "code" and '"smoke"' in "".join(c["source"])
               for c in cells)


SMOKE_CHAPTERS = sorted(p for p in (ROOT / "book").glob("*/*.ipynb")
                        if _has_smoke_size(p))


def _digit_images(n, seed):
    """`n` 28x28 uint8 digit images and labels, from scikit-learn's."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    index = np.random.default_rng(seed).integers(0, len(digits.target), n)
    images = resize_images(digits.images[index] / 16.0, 28)
    pixels = (np.clip(images, 0, 1) * 255).astype(np.uint8)
    return pixels, digits.target[index].astype(np.uint8)


def _write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(
        n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _write_cats_and_dogs(path, per_class=(6, 2), seed=0):
    """`cats_and_dogs_filtered.zip` as the TensorFlow tutorials serve it.

    `cats_and_dogs_filtered/{train,validation}/{cats,dogs}/*.jpg`: JPEG
    crops of various sizes from scikit-learn's two sample photos (cats from
    one, dogs from the other), `per_class` images per class and split.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    with zipfile.ZipFile(path, "w") as archive:
        for split, count in zip(("train", "validation"), per_class):
            for animal, photo in zip(("cat", "dog"), photos):
                for i in range(count):
                    height, width = rng.integers(96, 240, size=2)
                    row = rng.integers(0, photo.shape[0] - height)
                    col = rng.integers(0, photo.shape[1] - width)
                    image = Image.fromarray(
                        photo[row:row + height, col:col + width])
                    name = (f"cats_and_dogs_filtered/{split}/{animal}s/"
                            f"{animal}.{i}.jpg")
                    with archive.open(name, "w") as handle:
                        image.save(handle, format="JPEG")
    return path


IMAGENET_STAND_IN = "mobilenet_v2_imagenet_no_top.weights.h5"


@functools.lru_cache(maxsize=None)
def _mobilenet_v2_weights():
    """A stand-in for MobileNetV2's ImageNet weights (alpha 1.0, no top).

    Random weights of the same architecture, saved once per test process
    with `save_weights`, as a reader saves the real ones for offline use.
    """
    import keras

    path = pathlib.Path(tempfile.mkdtemp()) / IMAGENET_STAND_IN
    keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(160, 160, 3),
        pooling="avg").save_weights(path)
    return path


def write_fixtures(folder):
    """The online data sets' files, small, in their real formats."""
    folder = pathlib.Path(folder)
    x_train, y_train = _digit_images(600, seed=0)
    x_test, y_test = _digit_images(200, seed=1)
    np.savez(folder / "mnist.npz", x_train=x_train, y_train=y_train,
             x_test=x_test, y_test=y_test)
    fashion = folder / "fashion-mnist"
    fashion.mkdir()
    for split, (x, y) in (("train", (x_train, y_train)),
                          ("t10k", (x_test, y_test))):
        _write_idx(fashion / f"{split}-images-idx3-ubyte.gz", x, 2051)
        _write_idx(fashion / f"{split}-labels-idx1-ubyte.gz", y, 2049)
    _write_cats_and_dogs(folder / "cats_and_dogs_filtered.zip")
    shutil.copy(_mobilenet_v2_weights(), folder / IMAGENET_STAND_IN)
    return folder


def test_fixtures_load_like_the_real_files(tmp_path, monkeypatch):
    from mtlbook import data

    monkeypatch.setenv("MTLBOOK_DATA_DIR", str(write_fixtures(tmp_path)))
    mnist = data.load_mnist(validation_fraction=0.1)
    assert len(mnist["train"].x) + len(mnist["validation"].x) == 600
    assert mnist["train"].x.shape[1:] == (28, 28, 1)
    assert mnist["train"].x.dtype == np.float32
    assert data.load_fashion_mnist()["test"].x.shape == (200, 28, 28, 1)
    with zipfile.ZipFile(tmp_path / "cats_and_dogs_filtered.zip") as archive:
        names = archive.namelist()
    assert "cats_and_dogs_filtered/train/cats/cat.0.jpg" in names
    assert "cats_and_dogs_filtered/validation/dogs/dog.1.jpg" in names
    assert (tmp_path / IMAGENET_STAND_IN).stat().st_size > 1_000_000


@pytest.mark.parametrize("chapter", SMOKE_CHAPTERS,
                         ids=[p.stem for p in SMOKE_CHAPTERS])
def test_full_code_path_runs_on_fixture_files(chapter, tmp_path, monkeypatch):
    monkeypatch.setenv("MTLBOOK_SIZE", "smoke")
    monkeypatch.setenv("MTLBOOK_DATA_DIR", str(write_fixtures(tmp_path)))
    notebook = nbformat.read(chapter, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(chapter.parent)}})
    client.execute()  # raises CellExecutionError with the failing cell
