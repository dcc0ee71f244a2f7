"""Labelled texts from a CSV, TSV or JSON-lines file: one example per row, any number of labels.

The format follows the suffix (``.csv``, ``.tsv`` / ``.tab``, ``.jsonl`` / ``.ndjson``; otherwise
JSON lines when the first line starts with ``{``, else CSV). CSV and TSV files have a header
row naming their columns. Empty or malformed rows are not fatal: each is reported with its
line number and counted, and the readable rows go on.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

from nnjax.errors import DataNotFoundError, NnjaxError

MAX_BYTES = 2 << 30


@dataclasses.dataclass(frozen=True)
class LabelledTexts:
    """Texts with string labels, and the rows that could not be read.

    Attributes:
      texts: the texts, file order.
      labels: each text's label as written in the file.
      bad_rows: ``(line number, reason)`` of every empty or malformed row.
      columns: the file's column names (JSON lines: the first row's keys).
    """

    texts: list[str]
    labels: list[str]
    bad_rows: list[tuple[int, str]]
    columns: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def _format(path: Path, head: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix == ".csv":
        return "csv"
    return "jsonl" if head.lstrip().startswith("{") else "csv"


def read_labelled_texts(path: str | Path, text_column: str = "text", label_column: str = "label") -> LabelledTexts:
    """Read ``path``; ``text_column`` / ``label_column`` name the columns (keys for JSON lines).

    One sentence when the file is missing, not UTF-8, lacks a named column, or has no readable row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"The text file {str(path)!r} does not exist; pass a CSV, TSV or JSONL file.")
    if path.stat().st_size > MAX_BYTES:
        raise NnjaxError(f"{str(path)!r} is larger than 2 GiB; split it or pass a sample.")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise NnjaxError(f"{str(path)!r} is not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}); "
                         "save it as UTF-8.") from None
    kind = _format(path, content[:200])
    rows = _json_rows(content) if kind == "jsonl" else _table_rows(content, "\t" if kind == "tsv" else ",")
    columns: list[str] = rows.pop(0)[1] if rows and rows[0][0] == 0 else []
    for name, role in ((text_column, "--text-column"), (label_column, "--label-column")):
        if columns and name not in columns:
            raise NnjaxError(f"{str(path)!r} has no column {name!r} (its columns: {', '.join(columns)}); "
                             f"name the right one with {role}.")
    texts, labels, bad = [], [], []
    for line, row in rows:
        if isinstance(row, str):
            bad.append((line, row))
            continue
        text, label = row.get(text_column), row.get(label_column)
        if text is None or label is None:
            bad.append((line, f"no {text_column if text is None else label_column!r} field"))
        elif not str(text).strip():
            bad.append((line, "empty text"))
        elif not str(label).strip():
            bad.append((line, "empty label"))
        else:
            texts.append(str(text))
            labels.append(str(label).strip())
    if not texts:
        detail = f"; e.g. line {bad[0][0]}: {bad[0][1]}" if bad else ""
        raise NnjaxError(f"{str(path)!r} has no readable row with a text and a label{detail}.")
    return LabelledTexts(texts, labels, bad, columns)


def _table_rows(content: str, delimiter: str) -> list[tuple[int, dict | str | list]]:
    """``[(0, header), (line, row dict or reason), ...]`` of a CSV / TSV text with a header row."""
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    rows: list[tuple[int, dict | str | list]] = []
    header: list[str] | None = None
    try:
        for fields in reader:
            line = reader.line_num
            if header is None:
                header = [f.strip() for f in fields]
                rows.append((0, header))
                continue
            if not any(f.strip() for f in fields):
                rows.append((line, "empty row"))
            elif len(fields) != len(header):
                rows.append((line, f"{len(fields)} fields where the header has {len(header)}"))
            else:
                rows.append((line, dict(zip(header, fields, strict=True))))
    except csv.Error as err:
        rows.append((reader.line_num, f"unreadable ({err}); the rows after it are not read"))
    return rows


def _json_rows(content: str) -> list[tuple[int, dict | str | list]]:
    """``[(0, keys of the first object), (line, object or reason), ...]`` of a JSON-lines text."""
    rows: list[tuple[int, dict | str | list]] = []
    keys: list[str] | None = None
    for line, text in enumerate(content.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as err:
            rows.append((line, f"not JSON ({err.msg})"))
            continue
        if not isinstance(value, dict):
            rows.append((line, f"a JSON {type(value).__name__}, not an object"))
            continue
        if keys is None:
            keys = list(value)
        rows.append((line, value))
    return [(0, keys or [])] + rows
