"""Reading the packaged evaluation files of the generative tasks, with errors that name the file,
the row and the field, so a damaged or changed package is reported as such instead of surfacing
later as a KeyError or a silently wrong metric."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pharia.errors import PhariaError
from pharia.evaluate.tasks.base import data_root

RECORDS_LIMIT = 50  # per-example rows kept for auditors per task (samples/<task>.jsonl)


def package_file(dist: str, relative: str) -> Path:
    """A file shipped inside an installed distribution, or a PhariaError saying what is missing."""
    try:
        path = data_root(dist, relative)
    except importlib.metadata.PackageNotFoundError:
        raise PhariaError(f"{relative} not found: the {dist!r} package is not installed") from None
    except FileNotFoundError as exc:
        raise PhariaError(str(exc)) from None
    if not path.is_file():
        raise PhariaError(f"{path} is not a file (expected {relative} inside the {dist} package)")
    return path


def read_jsonl(path: Path, fields: Mapping[str, type]) -> list[dict[str, Any]]:
    """Every non-blank line of a JSON-lines file as a dict, checked to hold each of `fields` with
    the given type (a `str` field must also be non-blank; a `list` field must be a non-empty list
    of strings). Rows are numbered from 1 as a text editor shows them."""
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PhariaError(f"{path}: row {number} is not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise PhariaError(f"{path}: row {number} is not a JSON object")
            for field, kind in fields.items():
                check_field(row.get(field), kind, f"{path}: row {number}, field {field!r}")
            rows.append(row)
    if not rows:
        raise PhariaError(f"{path} holds no rows")
    return rows


def check_field(value: Any, kind: type, where: str) -> None:
    """Raise a PhariaError naming `where` unless `value` is a non-blank string (kind str), a
    non-empty list of strings (kind list) or an instance of `kind`."""
    if kind is str:
        if not isinstance(value, str) or not value.strip():
            raise PhariaError(f"{where} must be a non-empty string, got {value!r:.80}")
    elif kind is list:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise PhariaError(f"{where} must be a non-empty list of strings, got {value!r:.80}")
    elif not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise PhariaError(f"{where} must be of type {kind.__name__}, got {value!r:.80}")
