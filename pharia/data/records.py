"""The two things a source yields: a document it could read, or a row it had to quarantine; and
the record the ingest writes for a readable row that a filter removed.

All carry where they came from (source, file, line) so every input row can be traced from the
ingest report back to a line of a file. `line` is the 1-based line (jsonl, lines), the 1-based row
(parquet), the first line of a chunk (shakespeare) or 0 when the record is a whole file.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class Record:
    source: str
    file: str
    line: int
    text: str


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An input row that could not be read; `reason` is a short category counted in the report."""

    source: str
    file: str
    line: int
    reason: str
    detail: str
    raw: str

    def as_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "file": self.file,
            "line": self.line,
            "reason": self.reason,
            "detail": self.detail,
            "raw": self.raw[:RAW_LIMIT],
        }


def raw_text(data: bytes | str) -> str:
    """What a quarantined row looked like, readable even when it is not valid UTF-8."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="backslashreplace")
    return data[:RAW_LIMIT]


PREVIEW_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Filtered:
    """A readable row a filter removed: which filter, why (`detail`: the score, the rule, the document
    it duplicates), and a PII-scrubbed preview of its text, so an auditor can check the decision."""

    source: str
    file: str
    line: int
    filter: str
    detail: str
    doc_id: str = ""
    preview: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "file": self.file,
            "line": self.line,
            "filter": self.filter,
            "detail": self.detail,
            "doc_id": self.doc_id,
            "preview": self.preview[:PREVIEW_LIMIT],
        }
