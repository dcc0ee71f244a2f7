"""MNIST loading: the IDX files with checksums, the tfds + grain source (mocked), digit images."""

import gzip
import shutil
import struct
import time

import numpy as np
import pytest

from nnjax.data import mnist
from nnjax.errors import DataNotFoundError, NnjaxError


def test_real_test_split_loads_and_verifies(real_data_dir):
    images, labels = mnist.load_mnist("test", directory=real_data_dir / "mnist", allow_download=False)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int32
    # the canonical test set's class counts and first labels
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert images.max() == 255 and images[:, 0, 0].max() == 0  # white ink on a black background


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(">" + "i" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_wrong_contents_fail_the_checksum(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3))
    with pytest.raises(DataNotFoundError, match="wrong contents"):
        mnist.load_mnist("test", directory=tmp_path, allow_download=False)


def test_corrupt_gzip_and_missing_file_are_clear(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataNotFoundError, match="not a readable gzip"):
        mnist.load_mnist("test", directory=tmp_path, allow_download=False)
    with pytest.raises(DataNotFoundError, match="missing"):
        mnist.load_mnist("train", directory=tmp_path, allow_download=False)
    with pytest.raises(NnjaxError, match="split"):
        mnist.load_mnist("validation", directory=tmp_path)


def test_offline_download_fails_fast_with_one_sentence(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError, match="could not be downloaded"):
        mnist.fetch("t10k-labels-idx1-ubyte.gz", tmp_path, mirrors=("http://127.0.0.1:9/",))
    assert time.perf_counter() - start < 10
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_parse_idx_checks_header_and_size():
    good = struct.pack(">BBBBi", 0, 0, 8, 1, 3) + bytes([1, 2, 3])
    assert mnist.parse_idx(good).tolist() == [1, 2, 3]
    with pytest.raises(DataNotFoundError, match="IDX"):
        mnist.parse_idx(b"\x89PNG....")
    with pytest.raises(DataNotFoundError, match="header says"):
        mnist.parse_idx(good[:-1])


def test_checksummed_copy_is_accepted(real_data_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        # re-gzip the canonical bytes: a different wrapper, the same contents
        with gzip.open(real_data_dir / "mnist" / name, "rb") as src, gzip.open(tmp_path / name, "wb", 1) as dst:
            shutil.copyfileobj(src, dst)
    images, labels = mnist.load_mnist("test", directory=tmp_path, allow_download=False)
    assert len(images) == len(labels) == 10000


def test_tfds_source_through_grain_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=25):
        images, labels = mnist.load_mnist_tfds("train", data_dir=tmp_path, download=False, chunk=10)
    assert images.shape == (25, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (25,) and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() <= 9


def test_tfds_unprepared_without_download_is_clear(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataNotFoundError, match="not prepared"):
        mnist.tfds_source("test", data_dir=tmp_path, download=False)


def test_subset_is_stratified_and_seeded():
    labels = np.repeat(np.arange(10), 50).astype(np.int32)
    images = np.arange(500)[:, None, None] * np.ones((1, 28, 28), np.int64)
    x1, y1 = mnist.subset(images, labels, 100, seed=3)
    x2, y2 = mnist.subset(images, labels, 100, seed=3)
    assert np.bincount(y1).tolist() == [10] * 10
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert mnist.subset(images, labels, 0)[0] is images


def test_model_input_scaling():
    arrays = mnist.mnist_arrays(np.full((2, 28, 28), 255, np.uint8), np.array([1, 2]))
    assert arrays["image"].shape == (2, 28, 28, 1) and arrays["image"].dtype == np.float32
    assert arrays["image"].max() == 1.0 and arrays["label"].dtype == np.int32


# ---- digit images for `nnjax predict`


def _digit(seed=0):
    canvas = np.zeros((28, 28), np.uint8)
    canvas[6:22, 12:16] = 255  # a "1"
    return canvas


def test_28x28_white_background_png_is_inverted(tmp_path):
    from PIL import Image

    path = tmp_path / "one.png"
    Image.fromarray(255 - _digit()).save(path)
    loaded = mnist.load_digit_image(path)
    assert loaded.dtype == np.uint8 and loaded.shape == (28, 28)
    assert np.array_equal(loaded, _digit())


def test_large_image_is_cropped_scaled_and_centred(tmp_path):
    from PIL import Image

    big = np.full((200, 150, 3), 250, np.uint8)  # RGB, white paper
    big[20:120, 10:40] = 10  # dark stroke in the top-left corner
    path = tmp_path / "photo.jpg"
    Image.fromarray(big).save(path)
    loaded = mnist.load_digit_image(path).astype(float)
    assert loaded.shape == (28, 28)
    rows, cols = np.nonzero(loaded > 50)
    assert rows.max() - rows.min() + 1 <= 21  # fits the 20x20 box (+1 for resampling)
    mass_y = (np.indices(loaded.shape)[0] * loaded).sum() / loaded.sum()
    mass_x = (np.indices(loaded.shape)[1] * loaded).sum() / loaded.sum()
    assert abs(mass_y - 13.5) <= 1 and abs(mass_x - 13.5) <= 1


def test_bad_images_give_one_clear_sentence(tmp_path):
    from PIL import Image

    with pytest.raises(NnjaxError, match="does not exist"):
        mnist.load_digit_image(tmp_path / "nope.png")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(NnjaxError, match="not an image"):
        mnist.load_digit_image(text)
    with pytest.raises(NnjaxError, match="not a file"):
        mnist.load_digit_image(tmp_path)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(small)
    with pytest.raises(NnjaxError, match="at least 28x28"):
        mnist.load_digit_image(small)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(blank)
    with pytest.raises(NnjaxError, match="blank"):
        mnist.load_digit_image(blank)
