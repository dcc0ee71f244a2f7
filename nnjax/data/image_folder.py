"""Images stored one folder per class (Keras' ``flow_from_directory`` layout).

``root/<class_name>/<any file>``: class names are the sub-folder names in sorted order
(``cat`` -> 0, ``dog`` -> 1), every non-hidden file is tried as an image, and a file that
cannot be decoded (corrupt, truncated, not an image, not a regular file such as a FIFO, a
broken link) is skipped and counted, never a crash or a hang. Links are followed, but each
real folder is walked once and each real file counted once per class, so a link loop cannot
multiply photos; a file reachable from two class folders is refused. A class folder with no
readable image, or fewer than two classes with images, is refused rather than trained on.

Images are decoded to RGB and resized to a fixed size so a whole split is one ``uint8`` array
``[N, H, W, 3]``. 16- and 32-bit pixels (PIL modes ``I;16*``, ``I``, ``F``) are scaled to 8
bits (:func:`to_8bit`) instead of being clipped; images over PIL's decompression-bomb limit
(``Image.MAX_IMAGE_PIXELS`` x 2, about 179 megapixels) are refused with their size.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from nnjax.errors import DataNotFoundError, NnjaxError

log = logging.getLogger(__name__)

RESAMPLING = ("bilinear", "nearest", "bicubic", "lanczos")


#: suffixes of the image files people pass on a command line (any file in a class folder is tried)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageDecodeError(NnjaxError):
    """A file is not a readable image."""


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def open_regular_file(path: str | Path) -> BinaryIO:
    """``path`` opened for binary reading once the open descriptor (links resolved) is known to
    be a regular file: a FIFO would block a decoder forever and a device could never end.

    The open itself cannot block (``O_NONBLOCK``, which does nothing to regular files).
    Raises :class:`DataNotFoundError` when nothing is there (or a link is broken) and
    :class:`ImageDecodeError` when it is not a regular file or cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DataNotFoundError(f"Image {str(path)!r} does not exist; check the path.") from None
    except OSError as err:
        raise ImageDecodeError(
            f"{str(path)!r} cannot be opened ({err.strerror or type(err).__name__}); check its permissions."
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageDecodeError(
                f"{str(path)!r} is {_file_kind(mode)}, not a regular file; give the path of an image file."
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def image_too_large(path: str | Path, err: Exception) -> ImageDecodeError:
    """The sentence for PIL's ``DecompressionBombError``: the file, its size and PIL's limit."""
    from PIL import Image

    found = re.search(r"\((\d+) pixels\)", str(err))
    size = f"{int(found.group(1)) / 1e6:,.0f} megapixels" if found else "too many pixels"
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
    return ImageDecodeError(
        f"{str(path)!r} is {size}, over PIL's decompression-bomb limit of {limit:,.0f} megapixels; "
        "downscale it before using it."
    )


def to_8bit(image: Any, path: str | Path = "the image") -> Any:
    """A PIL image with 16- or 32-bit pixels as an 8-bit grey ``"L"`` image; any other image unchanged.

    ``I;16*`` (0..65535) is divided by 257; ``I`` (int32) likewise when its values fit
    0..65535, else stretched from its own min..max to 0..255; ``F`` (float32) is multiplied by
    255 when its values fit 0..1, else stretched from its min..max. A constant image outside
    those ranges is clipped to 0..255. (PIL's own ``convert`` clips every value to 0..255,
    which leaves a 16-bit photo with two grey levels.) Raises :class:`ImageDecodeError` for
    NaN or infinite pixels.
    """
    from PIL import Image

    mode = image.mode
    if not (mode.startswith("I;16") or mode in ("I", "F")):
        return image
    values = np.asarray(image).astype(np.float32)
    if not np.isfinite(values).all():
        raise ImageDecodeError(f"{str(path)!r} has NaN or infinite pixels; give an image of finite values.")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        values /= 257.0
    elif mode == "F" and low >= 0 and high <= 1:
        values *= 255.0
    elif high > low:
        values = (values - low) * np.float32(255.0 / (high - low))
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))


def decode_image(
    path: str | Path, size: tuple[int, int] | None = (224, 224), resample: str = "bilinear"
) -> np.ndarray:
    """One image file as RGB ``uint8 [H, W, 3]``, resized to ``size = (height, width)`` pixels.

    16- and 32-bit pixels are scaled to 8 bits (:func:`to_8bit`). Raises :class:`ImageDecodeError`
    (one sentence) for corrupt, truncated or non-image files, for what is not a regular file
    (a FIFO, a folder, a device) and for images over PIL's decompression-bomb limit;
    :class:`DataNotFoundError` when the file does not exist.
    """
    from PIL import Image, UnidentifiedImageError

    if resample not in RESAMPLING:
        raise NnjaxError(f"resample must be one of {', '.join(RESAMPLING)}, got {resample!r}.")
    try:
        with open_regular_file(path) as handle, Image.open(handle) as image:
            image.load()  # decode now: truncated files fail here, not later
            rgb = to_8bit(image, path).convert("RGB")
        if size is not None and rgb.size != (size[1], size[0]):
            method = getattr(Image.Resampling, resample.upper())
            rgb = rgb.resize((int(size[1]), int(size[0])), method)
        array = np.asarray(rgb, dtype=np.uint8)
    except Image.DecompressionBombError as err:
        raise image_too_large(path, err) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{str(path)!r} is not a readable image (not a format PIL knows).") from None
    except (OSError, SyntaxError, ValueError) as err:
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
    order and requires each folder to exist. Links are followed, each real folder is entered
    once and each real file listed once per class (a link loop ends); a file reachable from
    two class folders raises :class:`NnjaxError`, its label being ambiguous.
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
    owner: dict[str, str] = {}  # real path -> class name
    for index, name in enumerate(names):
        for path in _walk_files(root / name):
            real = os.path.realpath(path)
            if real in owner:
                if owner[real] == name:
                    continue  # the same file again through a link: count it once
                raise NnjaxError(
                    f"{str(path)!r} is the same file as one in class folder {owner[real]!r} (through a link), "
                    "so its label is ambiguous; keep each image in one class folder."
                )
            owner[real] = name
            files.append(path)
            labels.append(index)
    return files, np.asarray(labels, np.int32), names


def _walk_files(folder: Path) -> list[Path]:
    """Non-hidden files under ``folder`` in ``os.walk`` order (top-down, names sorted), following
    links to folders but entering each real folder once, so a link loop ends."""
    files: list[Path] = []
    visited: set[tuple[int, int]] = set()
    pending = [folder]
    while pending:
        directory = pending.pop()
        try:
            info = directory.stat()
            key = (info.st_dev, info.st_ino)
            if key in visited:
                continue
            visited.add(key)
            with os.scandir(directory) as scan:
                entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as err:
            log.warning("cannot list %s (%s); its files are left out", directory, err.strerror or err)
            continue
        subfolders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            (subfolders if is_dir else files).append(Path(entry.path))
        pending.extend(reversed(subfolders))
    return files


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

    Raises :class:`DataNotFoundError` (one sentence) when a class folder has no readable image
    (naming it and how many of its files were skipped) or fewer than two classes are given.
    """
    if resample not in RESAMPLING:
        raise NnjaxError(f"resample must be one of {', '.join(RESAMPLING)}, got {resample!r}.")
    files, labels, names = list_image_folder(root, class_names)
    if limit_per_class:
        keep = np.concatenate([np.flatnonzero(labels == c)[:limit_per_class] for c in range(len(names))])
        files, labels = [files[i] for i in keep], labels[keep]
    if not files:
        raise DataNotFoundError(f"{str(root)!r} holds no files in its class folders ({', '.join(names)}).")
    _check_classes(labels, names, [], root)  # a class folder without files: refused before decoding

    def decode(path: Path):
        try:
            return decode_image(path, size, resample), None
        except NnjaxError as err:  # unreadable, not a regular file, a broken link: skipped and reported
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
    _check_classes(kept, names, skipped, root)
    return ImageSet(np.stack(images), np.asarray(kept, np.int32), names, paths, skipped)


def _check_classes(
    labels: Sequence[int] | np.ndarray, names: Sequence[str], skipped: list[tuple[str, str]], root: str | Path
) -> None:
    """Refuse what would train on fewer classes than it names: every class folder needs a
    readable image, and there must be at least two classes. The sentence names the first class
    folder without one and how many of its files were skipped."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(names))
    for index, name in enumerate(names):
        if counts[index] == 0:
            folder = Path(root) / name
            inside = [reason for path, reason in skipped if Path(path).is_relative_to(folder)]
            why = (
                f"all {len(inside)} of its files were skipped, e.g. {inside[0].rstrip('.')}"
                if inside
                else "it holds no files"
            )
            raise DataNotFoundError(
                f"Class folder {str(folder)!r} has no readable image ({why}); add images to it or leave the class out."
            )
    if len(names) < 2:
        raise DataNotFoundError(
            f"{str(root)!r} has images for only {len(names)} class ({', '.join(names)}); "
            "a classifier needs at least two class folders with images."
        )


VALIDATION_FOLDERS = ("validation", "val")


def load_image_splits(
    root: str | Path,
    size: tuple[int, int] = (224, 224),
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    limit_per_class: int | None = None,
) -> dict[str, ImageSet]:
    """``{"train": ImageSet, "val": ImageSet}`` from a folder-per-class tree.

    ``root`` either holds ``train/`` and ``validation/`` (or ``val/``) folders, each one folder per
    class (the validation split must not add a class), or is itself one folder per class, split
    into training and validation by a seeded, stratified ``val_fraction``. Any number of classes
    >= 2; unreadable files are skipped (``ImageSet.skipped`` of each split lists them).
    """
    from nnjax.data.splits import check_splits, stratified_split

    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"The image folder {str(root)!r} does not exist; pass a folder with one sub-folder "
                                "per class (or train/ and validation/ folders of them).")
    val_dir = next((root / name for name in VALIDATION_FOLDERS if (root / name).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        train = load_image_folder(root / "train", size, limit_per_class=limit_per_class)
        extra = sorted({p.name for p in val_dir.iterdir() if p.is_dir()} - set(train.class_names))
        if extra:
            raise NnjaxError(f"{str(val_dir)!r} has a class folder {extra[0]!r} that {str(root / 'train')!r} lacks; "
                             "give both splits the same classes.")
        val = load_image_folder(val_dir, size, class_names=train.class_names, limit_per_class=limit_per_class)
        return {"train": train, "val": val}
    if not 0 < val_fraction < 1:
        raise NnjaxError(f"The validation fraction must be between 0 and 1, got {val_fraction}.")
    whole = load_image_folder(root, size, limit_per_class=limit_per_class)
    train_index, val_index = stratified_split(whole.labels, (1 - val_fraction, val_fraction), seed=seed)
    check_splits(whole.labels, {"train": train_index, "val": val_index}, whole.class_names, "image")
    return {"train": whole.subset(train_index), "val": whole.subset(val_index)}
