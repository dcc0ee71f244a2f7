"""The UCI SMS Spam Collection v.1 (Almeida & Gómez Hidalgo, 2011): 5,574 labelled text messages.

File format: one message per line, ``ham`` or ``spam``, a TAB, the UTF-8 text. Labels: ham -> 0,
spam -> 1 (as in the thesis). Found at ``$NNJAX_DATA_DIR/sms_spam/SMSSpamCollection``, otherwise
downloaded from the UCI archive and checked against the known SHA-256.

Lines that do not parse (no TAB, an unknown label, invalid UTF-8) are never dropped silently:
they are listed with their 1-based line numbers in :attr:`SmsSpam.bad_lines`, and
:func:`load_sms_spam` raises (``on_error="raise"``) or warns (``"warn"``) naming them.
"""

from __future__ import annotations

import dataclasses
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from nnjax.data.paths import dataset_dir, download, sha256_of
from nnjax.data.splits import check_splits as check_class_splits
from nnjax.data.splits import stratified_split
from nnjax.errors import DataNotFoundError, NnjaxError

FILE_NAME = "SMSSpamCollection"
SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
UCI_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
LABELS = ("ham", "spam")


@dataclasses.dataclass
class SmsSpam:
    """Parsed messages.

    Attributes:
      texts: the messages, in file order.
      labels: int32 ``[N]``, ham 0 / spam 1.
      line_numbers: int32 ``[N]``, the 1-based file line of each message.
      bad_lines: ``(line_number, reason)`` for each line that did not parse.
      path: the file read.
    """

    texts: list[str]
    labels: np.ndarray
    line_numbers: np.ndarray
    bad_lines: list[tuple[int, str]]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray) -> SmsSpam:
        return SmsSpam([self.texts[i] for i in index], self.labels[index], self.line_numbers[index], self.bad_lines,
                      self.path)

    def deduplicated(self) -> tuple[SmsSpam, int]:
        """The messages with every exact repeat of a text removed (the first occurrence kept, file order),
        and how many were removed: no text can then sit in two splits."""
        seen: set[str] = set()
        keep = []
        for i, text in enumerate(self.texts):
            if text not in seen:
                seen.add(text)
                keep.append(i)
        return self.subset(np.asarray(keep, np.int64)), len(self) - len(keep)


def parse_sms_spam(data: bytes) -> SmsSpam:
    """Parse the collection's bytes. Blank trailing lines are ignored; other bad lines are recorded."""
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    texts, labels, numbers, bad = [], [], [], []
    for number, raw in enumerate(lines, start=1):
        raw = raw.rstrip(b"\r")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad.append((number, f"invalid UTF-8 at byte {err.start}"))
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            bad.append((number, "no TAB between label and text"))
            continue
        label = label.strip().lower()
        if label not in LABELS:
            bad.append((number, f"unknown label {label[:20]!r} (expected ham or spam)"))
            continue
        texts.append(text)
        labels.append(LABELS.index(label))
        numbers.append(number)
    return SmsSpam(texts, np.asarray(labels, np.int32), np.asarray(numbers, np.int32), bad)


def locate_sms_spam(download_if_missing: bool = True) -> Path:
    """The collection's path in the data directory, downloading it from UCI when missing and allowed."""
    target = dataset_dir("sms_spam") / FILE_NAME
    if target.is_file():
        return target
    if not download_if_missing:
        raise DataNotFoundError(
            f"{str(target)!r} is missing; set NNJAX_DATA_DIR to a folder holding sms_spam/{FILE_NAME} "
            f"or download it from {UCI_URL}."
        )
    archive = download(UCI_URL, target.parent / "smsspamcollection.zip", timeout=20.0)
    try:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(FILE_NAME)
    except (zipfile.BadZipFile, KeyError):
        archive.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"The UCI archive from {UCI_URL} has no {FILE_NAME}; download it by hand into {str(target.parent)!r}."
        ) from None
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    if sha256_of(partial) != SHA256:
        partial.unlink()
        raise DataNotFoundError(
            f"The downloaded {FILE_NAME} does not have the expected SHA-256 {SHA256[:12]}…; "
            f"download it by hand from {UCI_URL} into {str(target.parent)!r}."
        )
    partial.replace(target)
    archive.unlink(missing_ok=True)
    return target


def load_sms_spam(path: str | Path | None = None, *, on_error: str = "warn") -> SmsSpam:
    """Read and parse the collection (``path`` or :func:`locate_sms_spam`).

    ``on_error``: ``"warn"`` (a warning naming the bad line numbers; they are excluded and
    listed in ``bad_lines``) or ``"raise"`` (NnjaxError naming them).
    """
    path = Path(path) if path is not None else locate_sms_spam()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataNotFoundError(f"{str(path)!r} does not exist; give the path of {FILE_NAME}.") from None
    except IsADirectoryError:
        raise NnjaxError(f"{str(path)!r} is a folder; give the path of the {FILE_NAME} file inside it.") from None
    result = parse_sms_spam(data)
    result.path = path
    if result.bad_lines:
        shown = ", ".join(f"{n} ({why})" for n, why in result.bad_lines[:5])
        more = f" and {len(result.bad_lines) - 5} more" if len(result.bad_lines) > 5 else ""
        message = (f"{len(result.bad_lines)} lines of {str(path)!r} do not parse as 'ham|spam<TAB>text': "
                   f"line {shown}{more}; fix or remove them.")
        if on_error == "raise":
            raise NnjaxError(message)
        warnings.warn(message, stacklevel=2)
    if not result.texts:
        raise NnjaxError(f"{str(path)!r} holds no messages; give the SMS Spam Collection file.")
    return result


def check_splits(labels: np.ndarray, splits: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> None:
    """:func:`nnjax.data.splits.check_splits` for ham (0) / spam (1) messages."""
    check_class_splits(labels, splits, LABELS, "message")


def split_report(data: SmsSpam, splits: dict[str, np.ndarray]) -> dict[str, int]:
    """Counts per split and how many held-out messages also occur verbatim in the training split.

    The collection has exact duplicates (mostly spam templates), so an honest report says how
    many test messages the classifier has literally seen.
    """
    train_texts = {data.texts[i] for i in splits["train"]}
    report: dict[str, int] = {}
    for name, index in splits.items():
        report[f"{name}_size"] = int(len(index))
        report[f"{name}_spam"] = int(data.labels[index].sum())
        if name != "train":
            report[f"{name}_seen_in_train"] = int(sum(data.texts[i] in train_texts for i in index))
    return report


__all__ = [
    "SmsSpam", "parse_sms_spam", "locate_sms_spam", "load_sms_spam", "stratified_split", "check_splits",
    "split_report",
    "SHA256", "UCI_URL", "LABELS",
]
