"""Where documents come from: built-in packaged corpora or user files (a file, a directory or a
glob), each read into `Record`s and `Quarantined` rows.

Errors that make a whole source unusable (missing path, unreadable directory, nothing but bad rows)
raise `DataError` naming the source and its path; a bad row inside a readable source is quarantined
with a reason and counted instead. User paths that are relative are resolved against the current
working directory (the DVC project materialiser turns them into absolute paths).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

from pharia.config import DataConfig, SourceConfig
from pharia.data.builtins import BUILTINS, BuiltinCorpus
from pharia.data.readers import EXTENSIONS, READERS, Item
from pharia.data.records import Record
from pharia.errors import DataError

GLOB_CHARS = frozenset("*?[")


def builtin_corpus(name: str) -> BuiltinCorpus:
    try:
        return BUILTINS[name]
    except KeyError:
        raise DataError(f"unknown built-in corpus '{name}': expected one of {', '.join(BUILTINS)}") from None


def describe_source(src: SourceConfig) -> str:
    """How error messages name a source: its name and where it reads from."""
    where = f"builtin {src.builtin}" if src.builtin else f"path {src.path}"
    return f"source '{src.name}' ({where})"


def _walk_dir(root: Path, src: SourceConfig) -> list[Path]:
    if not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"{describe_source(src)}: directory is not readable: {root}")

    def fail(exc: OSError) -> None:
        raise DataError(f"{describe_source(src)}: cannot read directory {exc.filename}: {exc.strerror}")

    wanted = EXTENSIONS[src.format]
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            if wanted is None or name.lower().endswith(wanted):
                files.append(Path(dirpath) / name)
    return sorted(files)


def user_files(src: SourceConfig) -> list[Path]:
    """Files of a `path` source in a stable (sorted) order."""
    assert src.path is not None
    if GLOB_CHARS.intersection(src.path):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(src.path), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"{describe_source(src)}: no files match the pattern")
        return files
    path = Path(src.path).expanduser()
    if not path.exists():
        raise DataError(f"{describe_source(src)}: path not found: {path.absolute()}")
    if path.is_file():
        return [path]
    files = _walk_dir(path, src)
    if not files:
        kinds = "files" if EXTENSIONS[src.format] is None else "/".join(EXTENSIONS[src.format] or ()) + " files"
        raise DataError(f"{describe_source(src)} contains no documents: no {kinds} in {path.absolute()}")
    return files


def source_files(src: SourceConfig) -> list[Path]:
    """Every file a source will read; raises DataError when the source cannot be found."""
    if src.builtin is not None:
        return builtin_corpus(src.builtin).files()
    return user_files(src)


def source_origin(src: SourceConfig) -> str:
    """What the documents are taken from, recorded in the ingest report for lineage."""
    if src.builtin is not None:
        return f"builtin {src.builtin} ({builtin_corpus(src.builtin).version()})"
    return f"path {src.path}"


def read_source(src: SourceConfig) -> Iterator[Item]:
    """Documents and quarantined rows of one source, in file order; at most `max_docs` documents.

    Raises DataError after the last file when not a single document could be read, because an
    empty source would silently shift the mixture to the other domains.
    """
    files = source_files(src)
    if src.builtin is not None:
        corpus = builtin_corpus(src.builtin)

        def read(path: Path) -> Iterator[Item]:
            return corpus.read(path, src.name)
    else:
        reader = READERS[src.format]

        def read(path: Path) -> Iterator[Item]:
            return reader(path, src.name, src.text_field)

    documents = quarantined = 0
    first_reason = ""
    for path in files:
        for item in read(path):
            if isinstance(item, Record):
                documents += 1
            else:
                quarantined += 1
                first_reason = first_reason or f"{item.reason}: {item.detail}"
            yield item
            if src.max_docs is not None and documents >= src.max_docs:
                return
    if documents == 0:
        why = f"; all {quarantined} rows quarantined, first: {first_reason}" if quarantined else ""
        raise DataError(f"{describe_source(src)} contains no documents{why}")


def check_sources(cfg: DataConfig) -> None:
    """Fail fast (before any work) when a configured source cannot be located."""
    for src in cfg.sources:
        source_files(src)


def describe_builtins() -> list[dict[str, object]]:
    """Rows of `pharia data sources`: every built-in corpus and whether it is installed here."""
    rows: list[dict[str, object]] = []
    for corpus in BUILTINS.values():
        try:
            files = corpus.files()
            installed, where = True, str(os.path.commonpath([str(f) for f in files]))
        except DataError as exc:
            installed, where = False, str(exc)
        rows.append(
            {
                "name": corpus.name,
                "domain": corpus.domain,
                "license": corpus.license,
                "installed": installed,
                "location": where,
                "description": corpus.description,
            }
        )
    return rows
