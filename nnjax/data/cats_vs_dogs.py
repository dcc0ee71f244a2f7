"""The cats-vs-dogs photos (thesis 6.1): a local folder tree or tensorflow-datasets.

Sources:

* ``"folder"`` (default): ``$NNJAX_DATA_DIR/cats_vs_dogs/{train,validation}/{cat,dog}/``,
  the layout of Keras' ``flow_from_directory`` used by the thesis (the shared data holds
  600 + 600 training and 200 + 200 validation photos from Kaggle's "Dogs vs. Cats").
* ``"tfds"``: tensorflow-datasets' ``cats_vs_dogs`` read through ``tfds.data_source`` (array
  record files, no TensorFlow at read time) and grain. It has one split of 23,262 images;
  ``train`` is its first 80 % and ``validation`` the rest. Preparing it needs TensorFlow
  once (``tfds build cats_vs_dogs --file_format=array_record``), so nothing downloads
  unless ``download=True``.

Either way a split is an :class:`~nnjax.data.image_folder.ImageSet` of ``uint8
[N, size, size, 3]`` RGB images with labels 0 = cat, 1 = dog; unreadable images are
skipped and counted, and a folder split whose ``cat`` or ``dog`` folder has no readable image
is refused with one sentence (see :func:`~nnjax.data.image_folder.load_image_folder`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnjax.data.image_folder import ImageSet, load_image_folder
from nnjax.errors import DataNotFoundError, NnjaxError

NAME = "cats_vs_dogs"
CLASS_NAMES = ("cat", "dog")
SPLITS = ("train", "validation")
SOURCES = ("folder", "tfds")
TFDS_NAME = "cats_vs_dogs"
TFDS_SPLITS = {"train": "train[:80%]", "validation": "train[80%:]"}


def folder_root() -> Path:
    """``$NNJAX_DATA_DIR/cats_vs_dogs``."""
    from nnjax.data.paths import dataset_dir

    return dataset_dir(NAME)


def folder_missing(root: Path | None = None) -> str | None:
    """A sentence naming the first missing class folder, or None when the layout is complete."""
    try:
        root = folder_root() if root is None else Path(root)
    except NnjaxError as err:
        return str(err)
    for split in SPLITS:
        for name in CLASS_NAMES:
            if not (root / split / name).is_dir():
                return (
                    f"The cats-vs-dogs photos are missing: expected {root}/{split}/{name}/ "
                    "(set NNJAX_DATA_DIR to the shared data folder, or use --source tfds)."
                )
    return None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise NnjaxError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")


def load_folder_split(
    split: str, size: int = 224, limit_per_class: int | None = None, root: str | Path | None = None
) -> ImageSet:
    """One split of the folder tree, decoded and resized to ``size`` x ``size`` pixels.

    Raises :class:`DataNotFoundError` when the ``cat`` or ``dog`` folder has no readable image.
    """
    _check_split(split)
    base = folder_root() if root is None else Path(root)
    if root is None and (reason := folder_missing(base)):
        raise DataNotFoundError(reason)
    return load_image_folder(
        base / split, (size, size), class_names=CLASS_NAMES, limit_per_class=limit_per_class
    )


def tfds_source(split: str = "train", data_dir: str | None = None, download: bool = False):
    """``tfds.data_source('cats_vs_dogs', split=...)``: random access to decoded examples
    ``{"image": uint8 [H, W, 3], "label": 0 | 1, "image/filename": str}``."""
    _check_split(split)
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise NnjaxError(
            "The tfds source needs tensorflow-datasets; `pip install tensorflow-datasets`."
        ) from None
    try:
        return tfds.data_source(TFDS_NAME, split=TFDS_SPLITS[split], data_dir=data_dir, download=download)
    except Exception as err:  # tfds raises many types (AssertionError, FileNotFoundError, ...)
        raise DataNotFoundError(
            f"tensorflow-datasets' {TFDS_NAME} is not prepared ({type(err).__name__}); build it once "
            f"with `tfds build {TFDS_NAME} --file_format=array_record` (needs TensorFlow) or use the "
            "folder source."
        ) from None


class _SafeSource:
    """Wraps a data source so a broken record becomes ``{"error": ...}`` instead of an exception."""

    def __init__(self, source, count: int):
        self.source, self.count = source, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        try:
            return {"index": index, **dict(self.source[index])}
        except Exception as err:  # a corrupt record must not stop the whole split
            return {"index": index, "error": f"{type(err).__name__}: {err}"}


def _resize_example(size: int):
    from PIL import Image

    def fn(example: dict) -> dict:
        if "error" in example:
            return example
        try:
            image = np.asarray(example["image"])
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=-1)
            if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or image.dtype != np.uint8:
                raise ValueError(f"image of shape {image.shape} and dtype {image.dtype}")
            pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert("RGB")
            if pil.size != (size, size):
                pil = pil.resize((size, size), Image.Resampling.BILINEAR)
            return {
                "index": example["index"],
                "image": np.asarray(pil, np.uint8),
                "label": int(example["label"]),
            }
        except Exception as err:
            return {"index": example["index"], "error": f"{type(err).__name__}: {err}"}

    return fn


def load_tfds_split(
    split: str, size: int = 224, limit: int | None = None, data_dir: str | None = None, download: bool = False
) -> ImageSet:
    """One split from tensorflow-datasets through a grain ``MapDataset`` (first ``limit`` examples)."""
    import grain

    source = tfds_source(split, data_dir=data_dir, download=download)
    count = len(source) if not limit else min(limit, len(source))
    dataset = grain.MapDataset.source(_SafeSource(source, count)).map(_resize_example(size))
    images, labels, paths, skipped = [], [], [], []
    for example in dataset:
        where = f"tfds:{TFDS_SPLITS[split]}:{example['index']}"
        if "error" in example:
            skipped.append((where, example["error"]))
            continue
        images.append(example["image"])
        labels.append(example["label"])
        paths.append(where)
    if not images:
        raise DataNotFoundError(f"No readable image in tfds {TFDS_NAME} {TFDS_SPLITS[split]}.")
    return ImageSet(np.stack(images), np.asarray(labels, np.int32), CLASS_NAMES, paths, skipped)


def load_split(
    split: str,
    source: str = "folder",
    size: int = 224,
    limit_per_class: int | None = None,
    data_dir: str | None = None,
) -> ImageSet:
    """A split from either source (``limit_per_class``: tfds takes ``2 * limit`` examples)."""
    if source == "folder":
        return load_folder_split(split, size, limit_per_class)
    if source == "tfds":
        return load_tfds_split(split, size, 2 * limit_per_class if limit_per_class else None, data_dir)
    raise NnjaxError(f"Unknown source {source!r}; choose one of {', '.join(SOURCES)}.")
