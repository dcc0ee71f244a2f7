"""Images stored one folder per class (Keras' ``flow_from_directory`` layout).

``root/<class_name>/<any file>``: class names are the sub-folder names in sorted order
(``cat`` -> 0, ``dog`` -> 1), every regular, non-hidden file is tried as an image, and a
file that cannot be decoded (corrupt, truncated, not an image) is skipped and counted,
never a crash. Images are decoded to RGB and resized to a fixed size so a whole split is
one ``uint8`` array ``[N, H, W, 3]``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from nnjax.errors import DataNotFoundError, NnjaxError

log = logging.getLogger(__name__)

RESAMPLING = ("bilinear", "nearest", "bicubic", "lanczos")


class ImageDecodeError(NnjaxError):
    """A file is not a readable image."""


def decode_image(
    path: str | Path, size: tuple[int, int] | None = (224, 224), resample: str = "bilinear"
) -> np.ndarray:
    """One image file as RGB ``uint8 [H, W, 3]``, resized to ``size = (height, width)``.

    Raises :class:`ImageDecodeError` (one sentence) for corrupt, truncated or non-image files.
    """
    from PIL import Image, UnidentifiedImageError

    if resample not in RESAMPLING:
        raise NnjaxError(f"resample must be one of {', '.join(RESAMPLING)}, got {resample!r}.")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: truncated files fail here, not later
            rgb = image.convert("RGB")
        if size is not None and rgb.size != (size[1], size[0]):
            method = getattr(Image.Resampling, resample.upper())
            rgb = rgb.resize((int(size[1]), int(size[0])), method)
        array = np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise DataNotFoundError(f"Image {str(path)!r} does not exist; check the path.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(
            f"{str(path)!r} is not a readable image ({type(err).__name__}: {err})."
        ) from None
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ImageDecodeError(f"{str(path)!r} decoded to shape {array.shape}, not an RGB image.")
    return array


@dataclasses.dataclass
class ImageSet:
    """A decoded split.

    Attributes:
      images: ``uint8 [N, H, W, 3]`` RGB.
      labels: ``int32 [N]`` class indices into ``class_names``.
      class_names: class names in index order.
      paths: source of each image (file path, or ``tfds:<split>:<index>``).
      skipped: ``(path, reason)`` of every file that was not a readable image.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    paths: list[str]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageSet:
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(
            self.images[index],
            self.labels[index],
            self.class_names,
            [self.paths[i] for i in index],
            list(self.skipped),
        )

    def counts(self) -> dict[str, int]:
        """Images per class name."""
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.class_names)}


def list_image_folder(
    root: str | Path, class_names: Sequence[str] | None = None
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """``(files, labels, class_names)`` of a folder-per-class tree (files sorted by name).

    ``class_names`` defaults to the sorted sub-folder names; giving them fixes the label
    order and requires each folder to exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(
            f"Image folder {str(root)!r} does not exist; expected one sub-folder per class."
        )
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = tuple(class_names) if class_names is not None else tuple(found)
    if not names:
        raise DataNotFoundError(
            f"{str(root)!r} has no class sub-folders; expected e.g. {root}/cat and {root}/dog."
        )
    missing = [n for n in names if n not in found]
    if missing:
        raise DataNotFoundError(
            f"{str(root)!r} lacks the class folder {missing[0]!r}; expected one per class "
            f"({', '.join(names)})."
        )
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(names):
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if not filename.startswith("."):
                    files.append(Path(dirpath) / filename)
                    labels.append(index)
    return files, np.asarray(labels, np.int32), names


def load_image_folder(
    root: str | Path,
    size: tuple[int, int] = (224, 224),
    *,
    class_names: Sequence[str] | None = None,
    limit_per_class: int | None = None,
    resample: str = "bilinear",
    workers: int | None = None,
) -> ImageSet:
    """Decode a folder-per-class tree into one :class:`ImageSet` (unreadable files skipped).

    Args:
      root: folder holding one sub-folder per class.
      size: ``(height, width)`` every image is resized to.
      class_names: label order (default: sorted sub-folder names).
      limit_per_class: keep only the first N files (by name) of each class.
      resample: PIL filter for resizing ('bilinear' default; Keras' ``load_img`` uses 'nearest').
      workers: decoding threads (PIL releases the GIL while decoding).
    """
    files, labels, names = list_image_folder(root, class_names)
    if limit_per_class:
        keep = np.concatenate([np.flatnonzero(labels == c)[:limit_per_class] for c in range(len(names))])
        files, labels = [files[i] for i in keep], labels[keep]
    if not files:
        raise DataNotFoundError(f"{str(root)!r} holds no files in its class folders ({', '.join(names)}).")

    def decode(path: Path):
        try:
            return decode_image(path, size, resample), None
        except ImageDecodeError as err:
            return None, str(err)

    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        results = list(pool.map(decode, files))
    images, kept, paths, skipped = [], [], [], []
    for path, label, (array, error) in zip(files, labels, results, strict=True):
        if array is None:
            skipped.append((str(path), error))
        else:
            images.append(array)
            kept.append(label)
            paths.append(str(path))
    if skipped:
        log.warning("skipped %d unreadable file(s) under %s, e.g. %s", len(skipped), root, skipped[0][1])
    if not images:
        raise DataNotFoundError(f"None of the {len(files)} files under {str(root)!r} is a readable image.")
    return ImageSet(np.stack(images), np.asarray(kept, np.int32), names, paths, skipped)
