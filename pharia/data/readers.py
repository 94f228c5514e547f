"""Readers for user corpora on disk: jsonl, parquet, text (one document per file), lines.

A reader never stops at a bad row: it yields a `Quarantined` item with a reason category and goes
on, so one malformed line costs one row, not the corpus. Blank lines in jsonl/lines files are not
rows (nothing to account for). Files are read as bytes and decoded per row, so a stray invalid
UTF-8 byte quarantines only the row that holds it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from pharia.data.records import Quarantined, Record, raw_text

Item = Record | Quarantined
Reader = Callable[[Path, str, str], Iterator[Item]]

BOM = "\ufeff"
BINARY_SNIFF = 8000  # bytes looked at for a NUL, as git does
# A row (or text file) above this is quarantined as `oversized_row` without being held in memory: at
# most max_doc_chars of a document are kept anyway, and a single 32 MiB "document" is a dump, a
# concatenation or binary data, not text to learn from. Module-level so a test can lower it.
MAX_ROW_BYTES = 32 << 20
READ_CHUNK = 1 << 20


class _Oversized:
    """Marker for a row longer than MAX_ROW_BYTES: its first bytes and its total size."""

    def __init__(self, head: bytes, size: int) -> None:
        self.head, self.size = head, size


def _oversized(source: str, file: str, line: int, head: bytes, size: int) -> Quarantined:
    detail = f"row of {size} bytes exceeds the {MAX_ROW_BYTES} byte limit"
    return Quarantined(source, file, line, "oversized_row", detail, raw_text(head[:200]))


def _decode(data: bytes, source: str, file: str, line: int) -> str | Quarantined:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Quarantined(source, file, line, "invalid_utf8", f"invalid UTF-8 at byte {exc.start}", raw_text(data))
    return text.removeprefix(BOM) if line <= 1 else text


def _unreadable(source: str, path: Path, exc: OSError) -> Quarantined:
    return Quarantined(source, str(path), 0, "unreadable_file", f"{type(exc).__name__}: {exc.strerror or exc}", "")


def _nonblank_lines(fh: BinaryIO) -> Iterator[tuple[int, bytes | _Oversized]]:
    """(line number, bytes) of every non-blank line; a line longer than MAX_ROW_BYTES is skipped in
    chunks (never held whole) and reported as `_Oversized`."""
    number = 0
    while True:
        raw = fh.readline(MAX_ROW_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
            head, size = raw[:200], len(raw)
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(READ_CHUNK)
                size += len(raw)
            yield number, _Oversized(head, size - raw.endswith(b"\n"))
            continue
        stripped = raw.rstrip(b"\r\n")
        if stripped.strip():
            yield number, stripped


def read_jsonl(path: Path, source: str, text_field: str) -> Iterator[Item]:
    """One JSON object per line; the document is the string in `text_field`."""
    file = str(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        yield _unreadable(source, path, exc)
        return
    with fh:
        yield from _parse_jsonl(_nonblank_lines(fh), source, file, text_field)


def _parse_jsonl(
    lines: Iterator[tuple[int, bytes | _Oversized]], source: str, file: str, text_field: str
) -> Iterator[Item]:
    for number, raw in lines:
        if isinstance(raw, _Oversized):
            yield _oversized(source, file, number, raw.head, raw.size)
            continue
        decoded = _decode(raw, source, file, number)
        if isinstance(decoded, Quarantined):
            yield decoded
            continue
        try:
            obj = json.loads(decoded)
        except json.JSONDecodeError as exc:
            yield Quarantined(source, file, number, "malformed_json", f"{exc.msg}: column {exc.colno}", decoded)
            continue
        if not isinstance(obj, dict):
            kind = type(obj).__name__
            yield Quarantined(source, file, number, "not_an_object", f"expected a JSON object, got {kind}", decoded)
        elif text_field not in obj:
            yield Quarantined(source, file, number, "missing_field", f"no field '{text_field}'", decoded)
        elif not isinstance(obj[text_field], str):
            kind = "null" if obj[text_field] is None else type(obj[text_field]).__name__
            detail = f"field '{text_field}' is {kind}, expected a string"
            yield Quarantined(source, file, number, "non_string_field", detail, decoded)
        else:
            yield Record(source, file, number, obj[text_field])


def read_lines(path: Path, source: str, text_field: str) -> Iterator[Item]:
    """Every non-blank line is one document (`text_field` is not used)."""
    file = str(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        yield _unreadable(source, path, exc)
        return
    with fh:
        for number, raw in _nonblank_lines(fh):
            if isinstance(raw, _Oversized):
                yield _oversized(source, file, number, raw.head, raw.size)
                continue
            decoded = _decode(raw, source, file, number)
            yield decoded if isinstance(decoded, Quarantined) else Record(source, file, number, decoded)


def read_text(path: Path, source: str, text_field: str) -> Iterator[Item]:
    """The whole file is one document (`text_field` is not used)."""
    try:
        size = path.stat().st_size
        if size > MAX_ROW_BYTES:
            with path.open("rb") as fh:
                yield _oversized(source, str(path), 0, fh.read(200), size)
            return
        data = path.read_bytes()
    except OSError as exc:
        yield _unreadable(source, path, exc)
        return
    nul = data.find(b"\x00", 0, BINARY_SNIFF)
    if nul >= 0:  # git's rule: a NUL byte near the start means binary (images, archives, compiled files)
        yield Quarantined(source, str(path), 0, "binary_file", f"NUL byte at offset {nul}", raw_text(data[:200]))
        return
    decoded = _decode(data, source, str(path), 0)
    yield decoded if isinstance(decoded, Quarantined) else Record(source, str(path), 0, decoded)


def read_parquet(path: Path, source: str, text_field: str) -> Iterator[Item]:
    """Column `text_field` of a parquet file, one document per row, read in record batches."""
    import pyarrow.parquet as pq

    file = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except OSError as exc:
        yield _unreadable(source, path, exc)
        return
    except Exception as exc:  # pyarrow raises ArrowInvalid for files that are not parquet
        yield Quarantined(source, file, 0, "unreadable_parquet", str(exc).splitlines()[0], raw_text(_head(path)))
        return
    if text_field not in parquet.schema_arrow.names:
        columns = ", ".join(parquet.schema_arrow.names)
        detail = f"no column '{text_field}' (columns: {columns})"
        yield Quarantined(source, file, 0, "missing_field", detail, "")
        return
    row = 0
    for batch in parquet.iter_batches(columns=[text_field], batch_size=4096):
        for value in batch.column(0).to_pylist():
            row += 1
            if isinstance(value, str):
                yield Record(source, file, row, value)
            else:
                kind = "null" if value is None else type(value).__name__
                detail = f"column '{text_field}' is {kind}, expected a string"
                yield Quarantined(source, file, row, "non_string_field", detail, raw_text(repr(value)))


def _head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(200)


READERS: dict[str, Reader] = {"jsonl": read_jsonl, "lines": read_lines, "text": read_text, "parquet": read_parquet}

# Which files a directory contributes for each format; text and lines take every non-hidden file.
EXTENSIONS: dict[str, tuple[str, ...] | None] = {
    "jsonl": (".jsonl", ".json", ".ndjson"),
    "parquet": (".parquet", ".pq"),
    "text": None,
    "lines": None,
}
