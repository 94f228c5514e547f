"""Content hashes and atomic writes shared by every data stage.

A stage writes its whole output directory under a temporary name next to the final one and renames
it into place only when every file is complete, so a crash or an error never leaves a directory that
a rerun (or DVC) could mistake for a finished result. Hashes are sha256 of file bytes: the manifest's
hash is what the model registry and the compliance dossier record as data lineage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks so shard files never load whole."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_sha256(path: Path) -> str:
    """sha256 of a manifest file's bytes: accepts the manifest itself or the directory holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    return sha256_file(path)


def dumps_json(obj: Any) -> str:
    """The one JSON rendering of reports: indented, key order kept, non-ASCII kept readable."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file under a temporary name in the same directory, then rename it over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_siblings(final: Path) -> list[Path]:
    """Delete the temporary siblings (`.<name>.<kind>-<pid>-*`) that a killed writer of `final` left
    behind, so a rerun after kill -9 starts clean; those of a live process are left alone."""
    final = Path(final).absolute()
    removed = []
    for kind in ("tmp", "old", "spool"):
        for path in final.parent.glob(f".{final.name}.{kind}-*"):
            pid = path.name.removeprefix(f".{final.name}.{kind}-").split("-", 1)[0]
            if pid.isdigit() and _pid_alive(int(pid)):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def temp_sibling(final: Path, kind: str) -> Path:
    """A new empty directory next to `final`, named after it, its purpose and this process."""
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.{kind}-{os.getpid()}-", dir=final.parent))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces `final`, on error it is removed.

    The temporary directory is a sibling of `final` (same filesystem, so the rename is atomic). An
    existing `final` is moved aside first and deleted only after the new one is in place. A process
    killed midway leaves only a hidden temporary sibling, never a `final` that looks finished, and
    the next writer removes that leftover first.
    """
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(final)
    tmp = temp_sibling(final, "tmp")
    tmp.chmod(0o777 & ~_umask())  # mkdtemp creates 0700; the result is an ordinary directory
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Path | None = None
    if final.exists():
        old = temp_sibling(final, "old")
        os.replace(final, old / final.name)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
