"""Small on-disk corpora for the data-stage tests (no tests here; imported by test_data_*.py).

Documents are generated from fixed word lists with a seeded RNG, so every run sees the same bytes,
and each corpus carries known bad rows whose quarantine reasons the tests assert.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from pharia.config import DataConfig

WORDS = {
    "web": "the council said on monday that the new bridge over the river would open next spring after "
    "two years of work local residents welcomed the plan while shop owners asked for more parking".split(),
    "academic": "we measured the effect of the treatment in a randomised cohort of patients and found a "
    "significant reduction in symptoms compared with placebo after twelve weeks of follow up".split(),
    "books": "the old captain walked slowly along the harbour wall watching the grey ships return with "
    "their nets full while the gulls circled above the quiet town at dusk".split(),
    # no "die": alt-profanity-check is English-centric and scores the German article 0.94
    "multilingual": "der kleine hund läuft schnell über eine grüne wiese und alle kinder lachen fröhlich "
    "während unsere sonne hinter den hohen bergen langsam untergeht".split(),
}

TOXIC_TEXT = "You are a stupid fucking idiot and a worthless moron, shut up you piece of shit."

# Rows of web.jsonl that must be quarantined, with the reason the reader gives them.
BAD_JSONL_ROWS: list[tuple[bytes, str]] = [
    (b'{"text": "unterminated', "malformed_json"),
    (b'{"text": 42}', "non_string_field"),
    (b'{"body": "no text field here at all"}', "missing_field"),
    (b'["a", "list"]', "not_an_object"),
    (b'{"text": "caf\xe9 is not utf-8 here"}', "invalid_utf8"),
]


def sentence(rng: random.Random, domain: str) -> str:
    words = rng.choices(WORDS[domain], k=rng.randint(8, 16))
    return " ".join(words).capitalize() + "."


def document(rng: random.Random, domain: str, sentences: int) -> str:
    return " ".join(sentence(rng, domain) for _ in range(sentences))


def write_corpus(root: Path, docs_per_source: int = 30, seed: int = 0) -> dict[str, Path]:
    """web.jsonl (+ bad rows, a duplicate, a too-short row), academic.parquet, books/*.txt (one
    invalid UTF-8 file), code.lines (one snippet per line), german/ (text files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    web = [document(rng, "web", rng.randint(2, 6)) for _ in range(docs_per_source)]
    lines = [json.dumps({"id": i, "text": t}).encode() for i, t in enumerate(web)]
    lines.insert(3, json.dumps({"id": "dup", "text": web[0]}).encode())  # exact duplicate
    lines.insert(5, json.dumps({"id": "short", "text": "tiny"}).encode())  # too short
    lines.insert(6, json.dumps({"id": "toxic", "text": TOXIC_TEXT}).encode())  # above the toxicity threshold
    for i, (raw, _) in enumerate(BAD_JSONL_ROWS):
        lines.insert(7 + 2 * i, raw)
    lines.insert(2, b"")  # blank lines are not rows
    paths["web"] = root / "web.jsonl"
    paths["web"].write_bytes(b"\n".join(lines) + b"\n")

    academic = [document(rng, "academic", rng.randint(2, 6)) for _ in range(docs_per_source)]
    paths["academic"] = root / "academic.parquet"
    pq.write_table(pa.table({"abstract": academic, "year": list(range(len(academic)))}), paths["academic"])

    paths["books"] = root / "books"
    paths["books"].mkdir(exist_ok=True)
    for i in range(docs_per_source):
        (paths["books"] / f"chapter_{i:03d}.txt").write_text(
            document(rng, "books", rng.randint(3, 8)), encoding="utf-8"
        )
    (paths["books"] / "broken.txt").write_bytes(b"Chapter \xff\xfe broken bytes in this file")
    (paths["books"] / ".hidden.txt").write_text("hidden files are not read", encoding="utf-8")

    paths["code"] = root / "code.lines"
    snippets = [
        f"def f_{i}(x):  return x * {i} + {rng.randint(0, 99)}  # scale and shift" for i in range(docs_per_source)
    ]
    paths["code"].write_text("\n".join(snippets) + "\n", encoding="utf-8")

    paths["german"] = root / "german"
    paths["german"].mkdir(exist_ok=True)
    for i in range(docs_per_source):
        (paths["german"] / f"text_{i:03d}.txt").write_text(
            document(rng, "multilingual", rng.randint(2, 5)), encoding="utf-8"
        )
    return paths


def data_config(paths: dict[str, Path], **overrides: Any) -> DataConfig:
    """A DataConfig over `write_corpus` output with small thresholds suited to it."""
    raw: dict[str, Any] = {
        "sources": [
            {"name": "web", "path": str(paths["web"]), "format": "jsonl", "domain": "web", "weight": 45},
            {
                "name": "academic",
                "path": str(paths["academic"]),
                "format": "parquet",
                "text_field": "abstract",
                "domain": "academic",
                "weight": 25,
            },
            {"name": "books", "path": str(paths["books"]), "format": "text", "domain": "books", "weight": 15},
            {"name": "code", "path": str(paths["code"]), "format": "lines", "domain": "code", "weight": 10},
            {"name": "german", "path": str(paths["german"]), "format": "text", "domain": "multilingual", "weight": 5},
        ],
        "target_chars": 12_000,
        "max_doc_chars": 600,
        "min_doc_chars": 20,
        "heldout_fraction": 0.1,
        "toxicity_threshold": 0.5,
        "vocab_size": 300,
        "seq_len": 16,
        "seed": 0,
        "validation": {"min_rows": 5, "min_chars": 20, "domain_share_tolerance": 0.25},
    }
    raw.update(overrides)
    return DataConfig.model_validate(raw)
