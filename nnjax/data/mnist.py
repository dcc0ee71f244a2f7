"""MNIST: 60,000 training and 10,000 test digits, 28x28 grayscale (LeCun, Cortes, Burges).

Two sources, both returning ``(images uint8 [N, 28, 28], labels int32 [N])``:

* :func:`load_mnist` reads the four canonical IDX files (``train-images-idx3-ubyte.gz`` ...)
  from ``$NNJAX_DATA_DIR/mnist/``, checks each one's uncompressed SHA-256 (so any gzip
  wrapper of the canonical bytes is accepted), and downloads missing files from a public
  mirror with a short time-out.
* :func:`load_mnist_tfds` reads ``tfds.data_source('mnist')`` (array_record, random access)
  through a ``grain.MapDataset``; tensorflow-datasets and grain are imported only there.

:func:`to_model_input` turns uint8 digits into the float32 ``[N, 28, 28, 1]`` in ``[0, 1]``
the CNNs take, and :func:`mnist_arrays` gives the dicts ``{"image", "label"}`` an
:class:`~nnjax.data.batching.ArrayLoader` batches.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import time
from pathlib import Path

import numpy as np

from nnjax.data.paths import (
    DOWNLOAD_TIMEOUT_ENV,
    dataset_dir,
    download,
    download_timeout,
    network_timeout,
    with_deadline,
)
from nnjax.errors import DataNotFoundError, NnjaxError

NUM_CLASSES = 10
IMAGE_SIZE = 28
SPLITS = ("train", "test")

#: file name -> SHA-256 of its *uncompressed* IDX bytes (MD5s of the same bytes are the
#: canonical ones: 6bbc9ace…, a25bea73…, 2646ac64…, 27ae3e4e…).
FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: public mirrors of the four files, tried in order (torchvision's and TensorFlow's).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
DOWNLOAD_TIMEOUT_S = 15.0


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise NnjaxError(f"MNIST split must be 'train' or 'test', got {split!r}.")


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode uncompressed IDX bytes (magic ``0x0000 0x08 ndim``, big-endian int32 sizes, uint8 data).

    Returns a uint8 array of the stored shape; a clear error when the bytes are not an
    unsigned-byte IDX file or are truncated.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        raise DataNotFoundError(f"{name} is not an unsigned-byte IDX file; delete it so it can be fetched again.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataNotFoundError(f"{name} is truncated; delete it so it can be fetched again.")
    shape = struct.unpack(">" + "i" * ndim, raw[4:header])
    count = int(np.prod(shape))
    if len(raw) != header + count:
        raise DataNotFoundError(
            f"{name} holds {len(raw) - header} bytes of data but its header says {count}; "
            "delete it so it can be fetched again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read_verified(path: Path) -> bytes:
    """Gunzip ``path`` and check the bytes' SHA-256 against :data:`FILES`."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise DataNotFoundError(
            f"{str(path)!r} is not a readable gzip file ({err}); delete it so it can be downloaded again."
        ) from None
    expected = FILES[path.name]
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise DataNotFoundError(
            f"{str(path)!r} has the wrong contents (SHA-256 {actual[:12]}…, expected {expected[:12]}…); "
            "delete it so it can be downloaded again."
        )
    return raw


def fetch(name: str, directory: Path, *, allow_download: bool = True, mirrors: tuple[str, ...] = MIRRORS) -> Path:
    """The path of MNIST file ``name`` in ``directory``, downloading it when missing.

    The download tries each mirror with a :data:`DOWNLOAD_TIMEOUT_S` socket time-out, all
    mirrors together within one total deadline (:func:`~nnjax.data.paths.download_timeout`,
    ``$NNJAX_DOWNLOAD_TIMEOUT``), and keeps the file only when its uncompressed SHA-256
    matches; offline, one sentence says where to put it.
    """
    path = directory / name
    if path.is_file():
        return path
    if not allow_download:
        raise DataNotFoundError(
            f"MNIST file {str(path)!r} is missing; set NNJAX_DATA_DIR to a folder holding mnist/{name} "
            "or allow the download."
        )
    errors = []
    total = download_timeout()
    start = time.monotonic()
    for mirror in mirrors:
        remaining = total - (time.monotonic() - start)
        if remaining <= 0:
            errors.append(f"no time left of the {total:g} s deadline ({DOWNLOAD_TIMEOUT_ENV})")
            break
        try:
            download(mirror + name, path, sha256=None, timeout=DOWNLOAD_TIMEOUT_S, deadline=remaining)
            _read_verified(path)
            return path
        except DataNotFoundError as err:
            path.unlink(missing_ok=True)
            errors.append(str(err))
    raise DataNotFoundError(
        f"MNIST file {name} is not in {str(directory)!r} and could not be downloaded from "
        f"{len(mirrors)} mirror(s) (offline?); copy the four IDX .gz files there or set NNJAX_DATA_DIR "
        "to a folder holding mnist/."
    )


def load_mnist(
    split: str = "train", *, directory: str | Path | None = None, allow_download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from the canonical IDX files.

    Args:
      split: ``"train"`` (60,000 digits) or ``"test"`` (10,000).
      directory: folder with the ``.gz`` files (default ``$NNJAX_DATA_DIR/mnist``).
      allow_download: fetch missing files from :data:`MIRRORS`.

    Returns:
      ``(images, labels)``: uint8 ``[N, 28, 28]`` (0 = black background, 255 = ink) and
      int32 ``[N]`` in ``0..9``.
    """
    _check_split(split)
    folder = Path(directory) if directory is not None else dataset_dir("mnist")
    image_name, label_name = _SPLIT_FILES[split]
    images = parse_idx(_read_verified(fetch(image_name, folder, allow_download=allow_download)), image_name)
    labels = parse_idx(_read_verified(fetch(label_name, folder, allow_download=allow_download)), label_name)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or labels.shape != images.shape[:1]:
        raise DataNotFoundError(
            f"MNIST {split} files have shapes {images.shape} and {labels.shape}, not [N, 28, 28] and [N]; "
            "replace them with the canonical files."
        )
    return images, labels.astype(np.int32)


def _network_reachable(host: str = "storage.googleapis.com", port: int = 443, timeout: float | None = None) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout`` seconds in total, name look-up
    included (default :func:`~nnjax.data.paths.network_timeout` of 5 s, ``$NNJAX_NETWORK_TIMEOUT``)."""
    import socket

    seconds = network_timeout(5.0) if timeout is None else timeout

    def connect() -> bool:
        with socket.create_connection((host, port), timeout=seconds):
            return True

    try:
        return with_deadline(connect, seconds, f"the connection to {host}:{port}")
    except (OSError, DataNotFoundError):
        return False


def tfds_source(split: str = "train", *, data_dir: str | Path | None = None, download: bool = True):
    """``tfds.data_source('mnist', split=...)``: a random-access sequence of ``{"image", "label"}``.

    Args:
      split: ``"train"`` or ``"test"``.
      data_dir: the TFDS data folder (default ``$NNJAX_DATA_DIR/tfds``).
      download: prepare the data set when it is not there yet. The network is probed first
        (5 s) so an offline machine gets an error at once instead of a long hang, and the
        preparation must finish within ``$NNJAX_DOWNLOAD_TIMEOUT`` (600 s by default).
    """
    _check_split(split)
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise NnjaxError(
            "The tfds source needs tensorflow-datasets; install it or use the IDX source (--source idx)."
        ) from None
    folder = str(data_dir) if data_dir is not None else str(dataset_dir("tfds"))
    try:
        return tfds.data_source("mnist", split=split, data_dir=folder, download=False)
    except Exception as err:  # not prepared (or prepared as TFRecord)
        first_error = err
    if not download:
        raise DataNotFoundError(
            f"MNIST is not prepared as array_record under {folder!r} ({type(first_error).__name__}); "
            "prepare it with download=True on a machine with internet, or use the IDX source."
        )
    if not _network_reachable():
        raise DataNotFoundError(
            f"MNIST is not prepared under {folder!r} and the network is unreachable; "
            "prepare it on a machine with internet, or use the IDX source (--source idx)."
        )
    try:
        return with_deadline(lambda: tfds.data_source("mnist", split=split, data_dir=folder, download=True),
                             download_timeout(), f"tensorflow-datasets' download of MNIST into {folder!r}",
                             env=DOWNLOAD_TIMEOUT_ENV)
    except DataNotFoundError:
        raise
    except Exception as err:
        raise DataNotFoundError(
            f"tensorflow-datasets could not prepare MNIST under {folder!r} ({type(err).__name__}: {err}); "
            "use the IDX source (--source idx)."
        ) from None


def load_mnist_tfds(
    split: str = "train", *, data_dir: str | Path | None = None, download: bool = True, chunk: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from tensorflow-datasets, read through ``grain.MapDataset`` in chunks of ``chunk``.

    Returns the same arrays as :func:`load_mnist`: uint8 ``[N, 28, 28]`` and int32 ``[N]``.
    """
    import grain

    source = tfds_source(split, data_dir=data_dir, download=download)
    if len(source) == 0:
        raise DataNotFoundError(f"The tfds MNIST {split} split is empty; prepare the data set again.")

    def to_pair(example: dict) -> dict[str, np.ndarray]:
        image = np.asarray(example["image"], dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)
        return {"image": image, "label": np.asarray(example["label"], dtype=np.int32)}

    dataset = grain.MapDataset.source(source).map(to_pair).batch(chunk, drop_remainder=False)
    images, labels = [], []
    for index in range(len(dataset)):
        batch = dataset[index]
        images.append(batch["image"])
        labels.append(batch["label"])
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def load_split(split: str, source: str = "idx", **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` from ``source`` (``"idx"``: the IDX files, ``"tfds"``: tensorflow-datasets)."""
    if source == "idx":
        return load_mnist(split, **kwargs)
    if source == "tfds":
        return load_mnist_tfds(split, **kwargs)
    raise NnjaxError(f"MNIST source must be 'idx' or 'tfds', got {source!r}.")


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 digits ``[N, 28, 28]`` (or ``[N, 28, 28, 1]``) -> float32 ``[N, 28, 28, 1]`` in ``[0, 1]``."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    return images.astype(np.float32) / 255.0


def subset(images: np.ndarray, labels: np.ndarray, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A class-stratified random subset of ``size`` examples (all of them when ``size`` is 0 or too big)."""
    if size <= 0 or size >= len(labels):
        return images, labels
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    # take examples round-robin over classes so every digit appears about equally often
    per_class = [order[labels[order] == c] for c in range(NUM_CLASSES)]
    picked: list[int] = []
    depth = 0
    while len(picked) < size:
        for rows in per_class:
            if depth < len(rows) and len(picked) < size:
                picked.append(int(rows[depth]))
        depth += 1
    index = np.sort(np.asarray(picked))
    return images[index], labels[index]


def mnist_arrays(images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """``{"image": float32 [N, 28, 28, 1] in [0, 1], "label": int32 [N]}`` for an ArrayLoader."""
    return {"image": to_model_input(images), "label": np.asarray(labels, np.int32)}


def _open_grayscale(path: Path) -> np.ndarray:
    """The image at ``path`` as float32 gray ``[H, W]`` in 0..255 (transparency over white).

    16- and 32-bit pixels are scaled to 8 bits (:func:`~nnjax.data.image_folder.to_8bit`), not
    clipped; a FIFO or other non-regular file and an image over PIL's decompression-bomb limit
    give one sentence, never a hang or a traceback.
    """
    from PIL import Image, UnidentifiedImageError

    from nnjax.data.image_folder import image_too_large, open_regular_file, to_8bit

    if not path.exists():
        raise NnjaxError(f"Image {str(path)!r} does not exist; check the path.")
    if not path.is_file():
        raise NnjaxError(f"{str(path)!r} is not a file; pass the path of a PNG or JPEG image.")
    try:
        with open_regular_file(path) as handle, Image.open(handle) as opened:
            opened.load()
            image = to_8bit(opened, path)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(canvas, rgba)
            gray = np.asarray(image.convert("L"), dtype=np.float32)
    except Image.DecompressionBombError as err:
        raise image_too_large(path, err) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise NnjaxError(
            f"{str(path)!r} is not an image Pillow can read ({type(err).__name__}); pass a PNG or JPEG file."
        ) from None
    return gray


def _centre_like_mnist(ink: np.ndarray) -> np.ndarray:
    """Crop the ink's bounding box, fit it in 20x20 keeping its aspect, centre its mass in 28x28."""
    from PIL import Image

    rows = np.flatnonzero(ink.max(axis=1) > 0.2 * ink.max())
    cols = np.flatnonzero(ink.max(axis=0) > 0.2 * ink.max())
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    factor = 20.0 / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    small = np.clip(small, 0, 255)
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    top, left = (IMAGE_SIZE - size[1]) // 2, (IMAGE_SIZE - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = small
    total = canvas.sum()
    if total > 0:  # shift the centre of mass to the centre, as MNIST's digits are
        yy, xx = np.indices(canvas.shape)
        dy = int(round(IMAGE_SIZE / 2 - 0.5 - (yy * canvas).sum() / total))
        dx = int(round(IMAGE_SIZE / 2 - 0.5 - (xx * canvas).sum() / total))
        dy = int(np.clip(dy, -top, IMAGE_SIZE - top - size[1]))
        dx = int(np.clip(dx, -left, IMAGE_SIZE - left - size[0]))
        canvas = np.roll(canvas, (dy, dx), axis=(0, 1))
    return canvas


def load_digit_image(path: str | Path) -> np.ndarray:
    """A digit photo or drawing as an MNIST-like uint8 ``[28, 28]`` (white ink on black).

    The image is read as grayscale (transparency composited over white) and inverted when
    its border is brighter than mid-gray (dark ink on white paper). A 28x28 image is then
    used as it is; a larger one is cropped to its ink, scaled to fit 20x20 and centred by
    its centre of mass in 28x28, the way MNIST's digits were made. Images smaller than
    28x28, missing files and non-images give a clear :class:`NnjaxError`.
    """
    path = Path(path)
    gray = _open_grayscale(path)
    if gray.shape[0] < IMAGE_SIZE or gray.shape[1] < IMAGE_SIZE:
        raise NnjaxError(
            f"{str(path)!r} is {gray.shape[1]}x{gray.shape[0]} pixels; give an image of at least 28x28."
        )
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = 255.0 - gray if np.median(border) > 127 else gray
    ink = ink - np.median(np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]]))
    ink = np.clip(ink, 0, 255)
    if ink.shape != (IMAGE_SIZE, IMAGE_SIZE):
        if ink.max() <= 0:
            raise NnjaxError(f"{str(path)!r} is blank (no ink found); give an image of a digit.")
        ink = _centre_like_mnist(ink)
    return np.clip(np.round(ink), 0, 255).astype(np.uint8)
