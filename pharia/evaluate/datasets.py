"""Reading packaged evaluation files reproducibly: sha256 of what was read, and deterministic
subsets so that "n rows, seed s" names the same rows on every machine and at every checkpoint."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def sha256_files(paths: Sequence[Path]) -> str:
    """One digest over several files (sorted by name), so a task reading a folder has one hash."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: str(p)):
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def subset(rows: Sequence[T], n: int | None, seed: int, key: Callable[[T], str] = repr) -> list[T]:
    """`n` rows chosen by a seeded hash of each row's `key` (all rows, in file order, when `n` is
    None or >= len). Hash order rather than a shuffled index keeps the choice stable when rows are
    appended to a file, and a larger `n` always contains the smaller subset."""
    if n is None or n >= len(rows):
        return list(rows)
    ranked = sorted(
        range(len(rows)),
        key=lambda i: hashlib.sha256(f"{seed}\x00{key(rows[i])}".encode()).digest(),
    )
    chosen = sorted(ranked[:n])
    return [rows[i] for i in chosen]
