"""A messy corpus built here, from code, run through `prepare`: every bad case of issue 3 point 3,
German text, PII, toxic lines, exact and near duplicates, with exact expected accounting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from test_data_cleaning import FRENCH, GERMAN, prose
from test_data_fixtures import TOXIC_TEXT

from pharia.config import DataConfig
from pharia.data.ingest import FILTERS
from pharia.data.manifest import sha256_file
from pharia.data.pii import residue
from pharia.data.prepare import prepare

PII_VALUES = ("jane.doe@example.com", "+49 30 1234567", "DE89 3704 0044 0532 0130 00", "4111 1111 1111 1111")
PII_SENTENCE = (
    " Contact jane.doe@example.com or +49 30 1234567, IBAN DE89 3704 0044 0532 0130 00,"
    " card 4111 1111 1111 1111, hosts 10.1.2.3 and 2001:db8::8a2e:370:7334."
)
GERMAN_LINES = (
    GERMAN,
    "Im Winter fährt die ganze Familie in die Berge, weil die Kinder gern Ski fahren und abends am Kamin sitzen.",
    "Die Bibliothek der Universität bleibt während der Renovierung geschlossen; die Bücher sind ausgelagert.",
)
GERMAN_INSULT = "Du bist ein Arschloch und ein Wichser, du Hurensohn."
MAX_DOC_CHARS = 5000


def _write(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    a, b = prose(20), prose(21)
    near_b = b.replace(".", "!", 1) + " Updated."
    web_rows: list[bytes] = [
        json.dumps({"text": a}).encode(),  # kept
        json.dumps({"text": b}).encode(),  # kept
        json.dumps({"text": prose(22) + PII_SENTENCE}).encode(),  # kept, scrubbed
        json.dumps({"text": TOXIC_TEXT}).encode(),  # toxicity (English SVM)
        json.dumps({"text": a}).encode(),  # exact_duplicate
        json.dumps({"text": near_b}).encode(),  # near_duplicate
        b'{"text": "unterminated',  # malformed_json
        b'{"text": "caf\xe9 latin-1 inside utf-8"}',  # invalid_utf8
        b'{"text": 42}',  # non_string_field
        json.dumps({"text": "   \n\t   \n"}).encode(),  # empty_text
        json.dumps({"text": prose(23, words=40_000)}).encode(),  # huge: kept, truncated
        json.dumps({"text": FRENCH + " " + FRENCH}, ensure_ascii=False).encode(),  # language (fr not allowed)
        b"",  # a blank line is not a row
    ]
    (root / "web.jsonl").write_bytes(b"\n".join(web_rows) + b"\n")
    books = root / "books"
    books.mkdir()
    (books / "chapter.txt").write_text(prose(24), encoding="utf-8")  # kept
    (books / "latin1.txt").write_bytes("Ein Café am Straßenrand, über dem Fluß.".encode("latin-1"))  # invalid_utf8
    (books / "figure.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))  # binary_file
    (books / "blank.txt").write_text("\n   \n\t\n", encoding="utf-8")  # empty_text
    (root / "german.lines").write_text("\n".join([*GERMAN_LINES, GERMAN_INSULT]) + "\n", encoding="utf-8")
    return {"web": root / "web.jsonl", "books": books, "german": root / "german.lines"}


EXPECTED: dict[str, dict[str, Any]] = {
    "web": {
        "rows_in": 12,
        "kept": 4,
        "filtered": {"toxicity": 1, "exact_duplicate": 1, "near_duplicate": 1, "language": 1},
        "quarantined": {"malformed_json": 1, "invalid_utf8": 1, "non_string_field": 1, "empty_text": 1},
    },
    "books": {
        "rows_in": 4,
        "kept": 1,
        "filtered": {},
        "quarantined": {"invalid_utf8": 1, "binary_file": 1, "empty_text": 1},
    },
    "german": {"rows_in": 4, "kept": 3, "filtered": {"toxicity": 1}, "quarantined": {}},
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("messy")
    paths = _write(root / "corpus")
    cfg = DataConfig.model_validate(
        {
            "sources": [
                {"name": "web", "path": str(paths["web"]), "format": "jsonl", "domain": "web", "weight": 60},
                {"name": "books", "path": str(paths["books"]), "format": "text", "domain": "books", "weight": 20},
                {
                    "name": "german",
                    "path": str(paths["german"]),
                    "format": "lines",
                    "domain": "multilingual",
                    "weight": 20,
                },
            ],
            "target_chars": 10_000_000,  # no downsampling: every kept row is in the output
            "max_doc_chars": MAX_DOC_CHARS,
            "min_doc_chars": 20,
            "allowed_languages": ["en", "de"],
            "vocab_size": 300,
            "seq_len": 16,
            "heldout_fraction": 0.2,
            "validation": {"min_rows": 5, "min_chars": 20, "domain_share_tolerance": 1.0, "max_duplicate_rate": 0.0},
        }
    )
    out = root / "out"
    return out, prepare(cfg, out)


def test_exact_accounting_per_source_and_in_total(prepared: tuple[Path, dict[str, Any]]) -> None:
    out, _ = prepared
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for name, want in EXPECTED.items():
        got = manifest["sources"][name]
        assert (got["rows_in"], got["kept"], got["quarantined"]) == (want["rows_in"], want["kept"], want["quarantined"])
        assert got["filtered"] == {f: want["filtered"].get(f, 0) for f in FILTERS}, name
        assert got["rows_in"] == got["kept"] + sum(got["filtered"].values()) + sum(got["quarantined"].values())
        assert got["tokens"] > 0
    totals = manifest["totals"]
    assert totals["rows_in"] == 20 and totals["kept"] == 8
    assert totals["tokens"] == sum(s["tokens"] for s in manifest["sources"].values())
    assert manifest["sources"]["web"]["pii_scrubbed"] == {
        "email": 1,
        "phone": 1,
        "iban": 1,
        "credit_card": 1,
        "ip_address": 2,
    }
    assert manifest["validation"]["success"] is True


def test_quarantine_records_name_file_line_and_reason(prepared: tuple[Path, dict[str, Any]]) -> None:
    out, _ = prepared
    rows = [json.loads(line) for line in (out / "quarantine" / "records.jsonl").read_text().splitlines()]
    where = sorted((Path(r["file"]).name, r["line"], r["reason"]) for r in rows)
    assert where == [
        ("blank.txt", 0, "empty_text"),
        ("figure.txt", 0, "binary_file"),
        ("latin1.txt", 0, "invalid_utf8"),
        ("web.jsonl", 7, "malformed_json"),
        ("web.jsonl", 8, "invalid_utf8"),
        ("web.jsonl", 9, "non_string_field"),
        ("web.jsonl", 10, "empty_text"),
    ]
    assert all(len(r["raw"]) <= 2000 for r in rows)


def test_clean_output_has_no_pii_no_duplicates_and_languages(prepared: tuple[Path, dict[str, Any]]) -> None:
    out, _ = prepared
    docs = [json.loads(line) for line in (out / "clean" / "documents.jsonl").read_text().splitlines()]
    assert len(docs) == 8
    text = "\n".join(d["text"] for d in docs)
    assert not any(value in text for value in PII_VALUES) and "10.1.2.3" not in text
    assert all(residue(d["text"]) == 0 and d["pii_residue"] == 0 for d in docs)
    assert all(token in text for token in ("<EMAIL>", "<PHONE>", "<IBAN>", "<CREDIT_CARD>", "<IP_ADDRESS>"))
    assert len({d["sha256"] for d in docs}) == len(docs)
    assert TOXIC_TEXT not in text and GERMAN_INSULT not in text and FRENCH not in text
    languages = {d["source"]: set() for d in docs}
    for d in docs:
        languages[d["source"]].add(d["language"])
    assert languages == {"web": {"en"}, "books": {"en"}, "german": {"de"}}
    huge = max(docs, key=lambda d: d["n_chars"])
    assert MAX_DOC_CHARS - 20 <= huge["n_chars"] <= MAX_DOC_CHARS  # truncated at a word, not dropped
    removed = sorted(d["duplicates_removed"] for d in docs if d["source"] == "web")
    assert removed == [0, 0, 1, 1]  # a stands for its exact copy, b for its near copy
    stats = pq.read_table(out / "ingest" / "stats.parquet").to_pydict()
    assert sorted(stats["doc_id"]) == sorted(d["doc_id"] for d in docs)


def test_manifest_hashes_every_output_file(prepared: tuple[Path, dict[str, Any]]) -> None:
    out, summary = prepared
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    on_disk |= {"shards/manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, digest in manifest["files"].items():
        assert sha256_file(out / rel) == digest, rel
    assert {"clean/documents.jsonl", "quarantine/records.jsonl", "shards/manifest.json"} <= set(manifest["files"])
    assert summary["manifest"] == str(out / "manifest.json")
