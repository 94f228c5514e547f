"""Ingest stage: sources -> normalised, filtered, mixture-sampled documents with a split each,
streamed so that memory does not grow with the text of the corpus.

Every input row ends in exactly one bucket, counted per source: kept, filtered (too_short,
exact_duplicate, language, quality, toxicity, near_duplicate, mixture_downsample, applied in that
order) or quarantined (unreadable row, with its reason). The report checks rows_in == kept +
filtered + quarantined for every source before anything is published, and the whole output
directory appears atomically.

How it streams (three passes, text held for one batch of `STREAM_BATCH` documents at a time):
1. read -> normalise -> too_short -> exact dedup (a set of 64-bit digests), then per batch the
   content filters (pharia.data.content: PII scrub, language, quality, toxicity, LSH band keys),
   in-process or in `PHARIA_DATA_WORKERS` worker processes with results applied in reading order
   (outputs are byte-identical either way) -> the survivors go to a spool file on disk with their
   band keys (pharia.data.neardup.BandWriter);
2. near-duplicate clusters from the band keys (a sort per band, numpy) and the mixture sample,
   both over small per-document arrays (doc digest, size, source);
3. the spool is read back once: sampled documents go to documents.jsonl + stats.parquet (written in
   row groups), the rest to filtered.jsonl.
Near-duplicates are removed after the content filters, so a cluster is always represented by a
document that is itself eligible. RAM per document read: ~70 bytes (the exact-dedup digest in a
Python set); per document surviving the content filters ~30 bytes of arrays (digest, size, source,
duplicate credit, split) plus a few 8-byte numpy arrays during clustering; per kept document ~70
bytes (the stored text's digest, for `is_duplicate`). `make bench` measured ~320 bytes per row in
all at 2 GB (1.33M rows: 309 MB peak at 250 MB of corpus, 680 MB at 2 GB).

Outputs in `out_dir`: documents.jsonl, stats.parquet, quarantine.jsonl, filtered.jsonl (one record
per filtered row: filter, detail, PII-scrubbed preview), ingest_report.json.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from array import array
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from pharia.classifiers.language import IDENTIFIER_NAME
from pharia.classifiers.toxicity import CLASSIFIER_NAME
from pharia.classifiers.wordlist import WORDLIST_NAME
from pharia.config import DOMAINS, ConfigError, DataConfig, SourceConfig, sha256_json
from pharia.data.content import ContentSettings, Outcome, filter_batch
from pharia.data.manifest import atomic_dir, atomic_write_json, remove_stale_siblings, sha256_text, temp_sibling
from pharia.data.mixture import SAMPLING_RULE, SPLIT_NAMES, assign_split_codes, sample, source_budgets, split_score
from pharia.data.neardup import LIBRARY_NAME as NEAR_DUPLICATE_LIBRARY
from pharia.data.neardup import NUM_PERM, SHINGLE, BandWriter, cluster, lsh_params
from pharia.data.normalize import normalize_text, text_stats
from pharia.data.pii import PII_LIBRARY, PII_TYPES, PLACEHOLDERS, residue, scrub
from pharia.data.progress import progress
from pharia.data.records import PREVIEW_LIMIT, Filtered, Quarantined
from pharia.data.sources import check_sources, read_source, source_origin

FILTERS = (
    "too_short",
    "exact_duplicate",
    "language",
    "quality",
    "toxicity",
    "near_duplicate",
    "mixture_downsample",
)
# The DataConfig fields this stage reads: its DVC params and the hash in its report. A new DataConfig
# field must be added here or to IGNORED_FIELDS (a test enforces it), so DVC reruns ingest when it changes.
INGEST_FIELDS = (
    "sources",
    "target_chars",
    "max_doc_chars",
    "min_doc_chars",
    "heldout_fraction",
    "validation_fraction",
    "toxicity_threshold",
    "quality_threshold",
    "quality_min_words",
    "allowed_languages",
    "near_duplicate_threshold",
    "seed",
)
# canaries: planted by the pack stage after ingest, so that dedup and the PII scrubber never see them.
IGNORED_FIELDS = (
    "vocab_size",
    "seq_len",
    "validation",
    "tokenizer",
    "gpt2_vocab_file",
    "domain_tags",
    "high_quality",
    "canaries",
)
WORKERS_ENV = "PHARIA_DATA_WORKERS"
STREAM_BATCH = 512  # documents scored together (language ID and toxicity are batched); bounds the text in RAM
STATS_ROW_GROUP = 8192
ENGLISH_SCORER = f"{CLASSIFIER_NAME}, length-weighted mean over paragraphs"
EMPTY_DETAIL = "empty or whitespace-only after normalisation"
PII_MARGIN = 200  # characters scrubbed beyond max_doc_chars: longer than any PII value
STATS_COLUMNS = (
    "doc_id",
    "source",
    "domain",
    "split",
    "n_chars",
    "n_words",
    "alpha_ratio",
    "symbol_ratio",
    "language",
    "quality",
    "quality_failed",
    "toxicity",
    "pii_count",
    *(f"pii_{kind}" for kind in PII_TYPES),
    "pii_residue",
    "is_duplicate",
    "duplicate_cluster",
    "duplicates_removed",
    "sha256",
)


def _digest64(text: str) -> int:
    """First 64 bits of the sha256 of the text: the exact-dedup key and the doc id's suffix."""
    return int(sha256_text(text)[:16], 16)


def doc_id_of(source: str, digest: int) -> str:
    return f"{source}-{digest:016x}"


@dataclass
class Candidate:
    """A document that passed reading and the text filters, on its way through the content filters."""

    source: str
    domain: str
    file: str
    line: int
    digest: int
    text: str
    toxicity: float = 0.0
    language: str = ""
    quality: float = 0.0
    quality_failed: tuple[str, ...] = ()
    pii: Counter[str] = field(default_factory=Counter)  # values scrubbed, per type

    @property
    def doc_id(self) -> str:
        return doc_id_of(self.source, self.digest)

    def spool_line(self) -> str:
        row = {
            "source": self.source,
            "domain": self.domain,
            "file": self.file,
            "line": self.line,
            "digest": self.digest,
            "language": self.language,
            "quality": self.quality,
            "quality_failed": list(self.quality_failed),
            "toxicity": self.toxicity,
            "pii": dict(self.pii),
            "text": self.text,
        }
        return json.dumps(row, ensure_ascii=False) + "\n"

    @classmethod
    def from_spool(cls, line: str) -> Candidate:
        row = json.loads(line)
        return cls(
            source=row["source"],
            domain=row["domain"],
            file=row["file"],
            line=row["line"],
            digest=row["digest"],
            text=row["text"],
            toxicity=row["toxicity"],
            language=row["language"],
            quality=row["quality"],
            quality_failed=tuple(row["quality_failed"]),
            pii=Counter(row["pii"]),
        )


@dataclass
class SourceCounts:
    rows_in: int = 0
    kept: int = 0
    chars: int = 0
    truncated: int = 0
    pii: Counter[str] = field(default_factory=Counter)  # values scrubbed from the kept documents
    filtered: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)

    def balanced(self) -> bool:
        return self.rows_in == self.kept + sum(self.filtered.values()) + sum(self.quarantined.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "kept": self.kept,
            "filtered": {name: self.filtered.get(name, 0) for name in FILTERS},
            "quarantined": dict(sorted(self.quarantined.items())),
            "chars": self.chars,
            "truncated": self.truncated,
            "pii_scrubbed": {kind: self.pii.get(kind, 0) for kind in PII_TYPES},
        }


def _jsonl(fh: IO[str], record: Filtered | Quarantined) -> None:
    fh.write(json.dumps(record.as_json(), ensure_ascii=False) + "\n")


class _FirstPass:
    """Pass 1: read every source, apply the text and content filters, spool the survivors.

    Keeps per surviving document only its digest, size and source index (arrays), and per read
    document its exact-dedup digest (a set), so memory is independent of document length."""

    def __init__(
        self,
        cfg: DataConfig,
        counts: dict[str, SourceCounts],
        spool_dir: Path,
        out: dict[str, IO[str]],
        workers: int = 1,
    ):
        self.cfg, self.counts, self.out = cfg, counts, out
        self.allowed = set(cfg.allowed_languages)
        self.seen: set[int] = set()  # digests of every readable, long-enough document
        self.exact_credit: Counter[int] = Counter()  # digest -> exact duplicates removed
        self.spool = (spool_dir / "candidates.jsonl").open("w", encoding="utf-8")
        self.bands = BandWriter(spool_dir / "bands.u64", cfg.near_duplicate_threshold)
        self.source_index = {src.name: i for i, src in enumerate(cfg.sources)}
        self.survivor_source = array("H")  # per spooled document: index of its source in cfg.sources
        self.survivor_digest = array("Q")
        self.survivor_chars = array("q")
        self.settings = ContentSettings(
            max_doc_chars=cfg.max_doc_chars,
            allowed_languages=frozenset(cfg.allowed_languages),
            quality_min_words=cfg.quality_min_words,
            quality_threshold=cfg.quality_threshold,
            toxicity_threshold=cfg.toxicity_threshold,
            near_duplicate_threshold=cfg.near_duplicate_threshold,
        )
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        if workers > 1:  # spawn: the parent may hold threads (Rust pools, torch) that fork would copy mid-flight
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        self.pending: deque[tuple[list[Candidate], Future[list[Outcome]]]] = deque()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def run(self) -> None:
        for src in self.cfg.sources:
            batch: list[Candidate] = []
            with progress(f"read {src.name}") as advance:
                for item in read_source(src):
                    advance(1)
                    candidate = self._read(src, item)
                    if candidate is not None:
                        batch.append(candidate)
                    if len(batch) >= STREAM_BATCH:
                        self._submit(batch)
                        batch = []
            if batch:
                self._submit(batch)
        while self.pending:
            self._drain_one()
        self.spool.close()

    def _filter(self, c: Any, name: str, detail: str, preview: str = "") -> None:
        self.counts[c.source].filtered[name] += 1
        doc_id = c.doc_id if isinstance(c, Candidate) else ""
        _jsonl(self.out["filtered"], Filtered(c.source, c.file, c.line, name, detail, doc_id, preview))

    def _read(self, src: SourceConfig, item: Any) -> Candidate | None:
        """Account one row; return it as a candidate when it passes the text filters."""
        tally = self.counts[src.name]
        tally.rows_in += 1
        if isinstance(item, Quarantined):
            tally.quarantined[item.reason] += 1
            _jsonl(self.out["quarantine"], item)
            return None
        text = normalize_text(item.text)
        if not text.strip():
            empty = Quarantined(src.name, item.file, item.line, "empty_text", EMPTY_DETAIL, item.text)
            tally.quarantined[empty.reason] += 1
            _jsonl(self.out["quarantine"], empty)
            return None
        if len(text) < self.cfg.min_doc_chars:
            detail = f"{len(text)} characters < min_doc_chars {self.cfg.min_doc_chars}"
            self._filter(item, "too_short", detail, scrub(text)[0])
            return None
        digest = _digest64(text)
        if digest in self.seen:
            self.exact_credit[digest] += 1
            detail = f"same text as an earlier document (id suffix {digest:016x}); the first occurrence is kept"
            self._filter(item, "exact_duplicate", detail)
            return None
        self.seen.add(digest)
        tally.truncated += len(text) > self.cfg.max_doc_chars
        return Candidate(src.name, src.domain, item.file, item.line, digest, text)  # scrubbed by the content pass

    def _submit(self, batch: list[Candidate]) -> None:
        """Queue a batch for the content filters; apply the oldest results once enough are in flight
        (bounded: at most `2 * workers` batches of text are held at any time)."""
        items = [(c.domain, c.text) for c in batch]
        if self.pool is None:
            self._apply(batch, filter_batch(self.settings, items))
            return
        self.pending.append((batch, self.pool.submit(filter_batch, self.settings, items)))
        while len(self.pending) > 2 * self.workers:
            self._drain_one()

    def _drain_one(self) -> None:
        batch, future = self.pending.popleft()
        self._apply(batch, future.result())

    def _apply(self, batch: list[Candidate], outcomes: list[Outcome]) -> None:
        """Record each outcome in reading order: filtered rows to filtered.jsonl, survivors to the spool."""
        for c, outcome in zip(batch, outcomes, strict=True):
            c.text, c.language, c.pii = outcome.text, outcome.language, Counter(dict(outcome.pii))
            c.quality, c.quality_failed, c.toxicity = outcome.quality, outcome.quality_failed, outcome.toxicity
            if outcome.rejected_by is not None:
                self._filter(c, outcome.rejected_by, outcome.detail, c.text)
                continue
            self.spool.write(c.spool_line())
            self.bands.add_keys(outcome.bands)
            self.survivor_source.append(self.source_index[c.source])
            self.survivor_digest.append(c.digest)
            self.survivor_chars.append(len(c.text))


@dataclass
class _Selection:
    """Pass 2's decisions over the spooled documents, by spool index."""

    labels: np.ndarray  # near-duplicate cluster representative (== own index when not a duplicate)
    taken: np.ndarray  # bool: sampled into the mixture
    credit: np.ndarray  # rows removed as exact or near duplicates of this document
    split_codes: np.ndarray  # index into SPLIT_NAMES, meaningful for the taken documents
    budgets: dict[str, float]
    source_names: list[str]
    sources: np.ndarray  # index into source_names
    digests: np.ndarray

    def doc_id(self, index: int) -> str:
        return doc_id_of(self.source_names[int(self.sources[index])], int(self.digests[index]))


def _select(cfg: DataConfig, first: _FirstPass) -> _Selection:
    """Near-duplicate clusters, duplicate credits, the mixture sample and the splits."""
    n = len(first.survivor_digest)
    labels = cluster(first.bands.close())
    sources = np.frombuffer(first.survivor_source, dtype=np.uint16) if n else np.zeros(0, np.uint16)
    digests = np.frombuffer(first.survivor_digest, dtype=np.uint64) if n else np.zeros(0, np.uint64)
    chars = np.frombuffer(first.survivor_chars, dtype=np.int64) if n else np.zeros(0, np.int64)
    credit = np.fromiter((first.exact_credit.get(int(d), 0) for d in digests), dtype=np.int64, count=n)
    duplicate = labels != np.arange(n)
    # A near duplicate hands its own credit (exact copies of it) and itself to its representative.
    np.add.at(credit, labels[duplicate], credit[duplicate] + 1)
    credit[duplicate] = 0

    budgets = source_budgets({s.name: s.weight for s in cfg.sources}, cfg.target_chars)
    taken = np.zeros(n, dtype=bool)
    for index, src in enumerate(cfg.sources):
        pool = np.flatnonzero((sources == index) & ~duplicate)
        picked, _ = sample(pool, budgets[src.name], lambda i: int(chars[i]), cfg.seed, src.name)
        taken[np.asarray(picked, dtype=np.int64)] = True
    names = [src.name for src in cfg.sources]
    domain_codes = np.array([DOMAINS.index(src.domain) for src in cfg.sources], dtype=np.int64)[sources]
    chosen = np.flatnonzero(taken)
    scores = np.fromiter(
        (split_score(doc_id_of(names[sources[i]], int(digests[i])), cfg.seed) for i in chosen),
        dtype=np.float64,
        count=len(chosen),
    )
    split_codes = np.zeros(n, dtype=np.uint8)
    split_codes[chosen] = assign_split_codes(
        domain_codes[chosen], scores, cfg.heldout_fraction, cfg.validation_fraction
    )
    return _Selection(labels, taken, credit, split_codes, budgets, names, sources, digests)


class _StatsWriter:
    """stats.parquet written in row groups, so the table never has to fit in memory at once."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema(
            [
                ("doc_id", pa.string()),
                ("source", pa.string()),
                ("domain", pa.string()),
                ("split", pa.string()),
                ("n_chars", pa.int64()),
                ("n_words", pa.int64()),
                ("alpha_ratio", pa.float64()),
                ("symbol_ratio", pa.float64()),
                ("language", pa.string()),
                ("quality", pa.float64()),
                ("quality_failed", pa.string()),
                ("toxicity", pa.float64()),
                ("pii_count", pa.int64()),
                *((f"pii_{kind}", pa.int64()) for kind in PII_TYPES),
                ("pii_residue", pa.int64()),
                ("is_duplicate", pa.bool_()),
                ("duplicate_cluster", pa.string()),
                ("duplicates_removed", pa.int64()),
                ("sha256", pa.string()),
            ]
        )
        self.writer = pq.ParquetWriter(path, self.schema)
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= STATS_ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(self.pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _spooled(path: Path) -> Iterator[Candidate]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            yield Candidate.from_spool(line)


def _write_outputs(
    cfg: DataConfig, spool: Path, sel: _Selection, counts: dict[str, SourceCounts], tmp: Path, filtered: IO[str]
) -> tuple[Counter[str], Counter[str]]:
    """Pass 3: sampled documents to documents.jsonl + stats.parquet, the rest to filtered.jsonl.
    Returns characters per domain and documents per split."""
    chars_by_domain: Counter[str] = Counter()
    split_docs: Counter[str] = Counter()
    kept_digests: set[int] = set()  # 64-bit prefixes of the stored texts' sha256 (ints: compact)
    stats = _StatsWriter(tmp / "stats.parquet")
    threshold = cfg.near_duplicate_threshold
    with (tmp / "documents.jsonl").open("w", encoding="utf-8") as docs, progress("write", total=len(sel.taken)) as bar:
        for index, doc in enumerate(_spooled(spool)):
            bar(1)
            tally = counts[doc.source]
            representative = int(sel.labels[index])
            if representative != index:
                tally.filtered["near_duplicate"] += 1
                detail = f"near duplicate (estimated Jaccard >= {threshold}) of {sel.doc_id(representative)}"
                record = Filtered(doc.source, doc.file, doc.line, "near_duplicate", detail, doc.doc_id, doc.text)
                _jsonl(filtered, record)
                continue
            if not sel.taken[index]:
                tally.filtered["mixture_downsample"] += 1
                detail = f"source budget of {round(sel.budgets[doc.source])} characters reached"
                _jsonl(filtered, Filtered(doc.source, doc.file, doc.line, "mixture_downsample", detail, doc.doc_id))
                continue
            split = SPLIT_NAMES[sel.split_codes[index]]
            tally.kept += 1
            tally.chars += len(doc.text)
            tally.pii.update(doc.pii)
            chars_by_domain[doc.domain] += len(doc.text)
            split_docs[split] += 1
            row = {"doc_id": doc.doc_id, "source": doc.source, "domain": doc.domain, "split": split}
            extra = {"quality": doc.quality, "toxicity": doc.toxicity}
            docs.write(json.dumps({**row, **extra, "text": doc.text}, ensure_ascii=False) + "\n")
            digest = sha256_text(doc.text)
            stats.add(
                {
                    **row,
                    **text_stats(doc.text),
                    "language": doc.language,
                    "quality": doc.quality,
                    "quality_failed": ",".join(doc.quality_failed),
                    "toxicity": doc.toxicity,
                    "pii_count": sum(doc.pii.values()),  # values scrubbed (replaced by placeholders)
                    **{f"pii_{kind}": doc.pii.get(kind, 0) for kind in PII_TYPES},
                    "pii_residue": residue(doc.text),  # what the detectors still find: the suite expects 0
                    "is_duplicate": int(digest[:16], 16) in kept_digests,  # of the stored (possibly truncated) text
                    "duplicate_cluster": doc.doc_id,  # kept documents represent their cluster
                    "duplicates_removed": int(sel.credit[index]),
                    "sha256": digest,
                }
            )
            kept_digests.add(int(digest[:16], 16))
    stats.close()
    return chars_by_domain, split_docs


def domain_shares(cfg: DataConfig, chars_by_domain: dict[str, int]) -> dict[str, dict[str, float]]:
    """Target (from weights) and achieved share of each configured domain, rounded to 1e-6."""
    total = sum(chars_by_domain.values())
    return {
        domain: {
            "target": round(target, 6),
            "achieved": round(chars_by_domain.get(domain, 0) / total, 6) if total else 0.0,
        }
        for domain, target in cfg.domain_targets().items()
    }


def _source_entry(src: SourceConfig, tally: SourceCounts, budget: float) -> dict[str, Any]:
    return {
        "domain": src.domain,
        "origin": source_origin(src),
        "license": src.license,
        "weight": src.weight,
        "budget_chars": round(budget),
        **tally.as_json(),
    }


def _totals(counts: dict[str, SourceCounts]) -> dict[str, Any]:
    total = SourceCounts()
    for tally in counts.values():
        total.rows_in += tally.rows_in
        total.kept += tally.kept
        total.chars += tally.chars
        total.truncated += tally.truncated
        total.pii.update(tally.pii)
        total.filtered.update(tally.filtered)
        total.quarantined.update(tally.quarantined)
    return total.as_json()


def data_workers() -> int:
    """Worker processes for the content filters: PHARIA_DATA_WORKERS, default 1 (in-process).
    Each worker loads the classifiers (~5 s), so more than one pays off from a few hundred MB of text."""
    raw = os.environ.get(WORKERS_ENV, "1")
    try:
        workers = int(raw)
    except ValueError:
        raise ConfigError(
            f"{WORKERS_ENV}={raw!r}: expected a whole number of worker processes (1 = in-process)"
        ) from None
    if workers < 1:
        raise ConfigError(f"{WORKERS_ENV}={raw!r}: expected at least 1")
    return workers


def ingest(cfg: DataConfig, out_dir: Path, workers: int | None = None) -> dict[str, Any]:
    """Run the ingest stage into `out_dir` (replaced atomically) and return the ingest report.
    `workers` processes run the content filters (default: `data_workers()`); outputs do not depend on it."""
    if cfg.max_doc_chars < cfg.min_doc_chars:
        raise ConfigError(
            f"data.max_doc_chars ({cfg.max_doc_chars}) must be >= data.min_doc_chars ({cfg.min_doc_chars})"
        )
    check_sources(cfg)  # a missing corpus fails in milliseconds, before any reading
    counts = {src.name: SourceCounts() for src in cfg.sources}
    out_dir = Path(out_dir)
    remove_stale_siblings(out_dir)
    spool_dir = temp_sibling(out_dir, "spool")
    try:
        with atomic_dir(out_dir) as tmp:
            with (
                (tmp / "quarantine.jsonl").open("w", encoding="utf-8") as quarantine,
                (tmp / "filtered.jsonl").open("w", encoding="utf-8") as filtered,
            ):
                outputs = {"quarantine": quarantine, "filtered": filtered}
                first = _FirstPass(cfg, counts, spool_dir, outputs, data_workers() if workers is None else workers)
                try:
                    first.run()
                finally:
                    first.close()
                selection = _select(cfg, first)
                chars_by_domain, split_docs = _write_outputs(
                    cfg, spool_dir / "candidates.jsonl", selection, counts, tmp, filtered
                )
            unbalanced = [name for name, tally in counts.items() if not tally.balanced()]
            if unbalanced:  # a bug, not a data problem: refuse to publish counts that do not add up
                raise AssertionError(f"row accounting does not add up for sources: {', '.join(unbalanced)}")
            report = _report(cfg, counts, selection.budgets, chars_by_domain, split_docs)
            atomic_write_json(tmp / "ingest_report.json", report)
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)
    return report


def _report(
    cfg: DataConfig,
    counts: dict[str, SourceCounts],
    budgets: dict[str, float],
    chars_by_domain: Counter[str],
    split_docs: Counter[str],
) -> dict[str, Any]:
    bands, rows = lsh_params(cfg.near_duplicate_threshold)
    return {
        "schema": "pharia.ingest/v1",
        "ingest_config_sha256": sha256_json(cfg.model_dump(mode="json", include=set(INGEST_FIELDS))),
        "seed": cfg.seed,
        "filters": list(FILTERS),
        "toxicity_classifier": CLASSIFIER_NAME,
        "toxicity_classifiers": {"en": ENGLISH_SCORER, "code": ENGLISH_SCORER, "other": WORDLIST_NAME},
        "toxicity_threshold": cfg.toxicity_threshold,
        "language_identifier": IDENTIFIER_NAME,
        "allowed_languages": list(cfg.allowed_languages),
        "quality_threshold": cfg.quality_threshold,
        "pii": {"detector": PII_LIBRARY, "placeholders": PLACEHOLDERS},
        "near_duplicates": {
            "library": NEAR_DUPLICATE_LIBRARY,
            "threshold": cfg.near_duplicate_threshold,
            "num_perm": NUM_PERM,
            "shingle_words": SHINGLE,
            "bands": bands,
            "rows_per_band": rows,
            "clustering": "connected components over equal LSH band keys; first document kept",
        },
        "target_chars": cfg.target_chars,
        "sampling": SAMPLING_RULE,
        "streaming": {"batch_documents": STREAM_BATCH, "preview_chars": PREVIEW_LIMIT},
        "sources": {src.name: _source_entry(src, counts[src.name], budgets[src.name]) for src in cfg.sources},
        "totals": _totals(counts),
        "splits": {split: split_docs[split] for split in ("train", "validation", "heldout")},
        "domain_shares": domain_shares(cfg, chars_by_domain),
    }
