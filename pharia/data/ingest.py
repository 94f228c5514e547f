"""Ingest stage: sources -> normalised, filtered, mixture-sampled documents with a split each.

Every input row ends in exactly one bucket, counted per source: kept, filtered (too_short,
exact_duplicate, language, quality, toxicity, near_duplicate, mixture_downsample, applied in that
order) or quarantined (unreadable row, with its reason). Near-duplicates are removed after the
content filters so a cluster is always represented by a document that is itself eligible. The
report checks rows_in == kept + filtered + quarantined for every source
before anything is published, and the whole output directory appears atomically.

Outputs in `out_dir`: documents.jsonl, stats.parquet, quarantine.jsonl, ingest_report.json.
A new stage between normalisation and sampling is another named filter in `FILTERS` and another
pass over the candidates.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pharia.classifiers.language import CODE, IDENTIFIER_NAME, detect_languages
from pharia.classifiers.toxicity import CLASSIFIER_NAME, toxicity_by_language
from pharia.classifiers.wordlist import WORDLIST_NAME
from pharia.config import ConfigError, DataConfig, SourceConfig, sha256_json
from pharia.data.manifest import atomic_dir, atomic_write_json, sha256_text
from pharia.data.mixture import SAMPLING_RULE, assign_splits, sample, source_budgets
from pharia.data.neardup import LIBRARY_NAME as NEAR_DUPLICATE_LIBRARY
from pharia.data.neardup import NUM_PERM, SHINGLE, NearDuplicateIndex
from pharia.data.normalize import normalize_text, text_stats, truncate
from pharia.data.pii import PII_LIBRARY, PII_TYPES, PLACEHOLDERS, residue, scrub
from pharia.data.progress import progress
from pharia.data.quality import quality
from pharia.data.records import Quarantined
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
    "toxicity_threshold",
    "quality_threshold",
    "quality_min_words",
    "allowed_languages",
    "near_duplicate_threshold",
    "seed",
)
IGNORED_FIELDS = ("vocab_size", "seq_len", "validation")
TOXICITY_BATCH = 512
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


@dataclass
class Candidate:
    """A document that passed reading and the text filters, waiting for the mixture."""

    doc_id: str
    source: str
    domain: str
    text: str
    toxicity: float = 0.0
    language: str = ""
    quality: float = 0.0
    quality_failed: tuple[str, ...] = ()
    # Rows removed as exact or near duplicates of this document (it represents their cluster).
    duplicates_removed: int = 0
    pii: Counter[str] = field(default_factory=Counter)  # values scrubbed, per type


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


def _read_candidates(
    cfg: DataConfig, counts: dict[str, SourceCounts], quarantine: IO[str]
) -> dict[str, list[Candidate]]:
    """Read, normalise and apply the text filters (too_short, exact_duplicate) to every source.
    Exact duplicates are detected across sources: the first occurrence (config order) is kept."""
    seen: dict[str, Candidate] = {}
    pools: dict[str, list[Candidate]] = {}
    for src in cfg.sources:
        tally, pool = counts[src.name], pools.setdefault(src.name, [])
        with progress(f"read {src.name}") as advance:
            for item in read_source(src):
                tally.rows_in += 1
                advance(1)
                if isinstance(item, Quarantined):
                    tally.quarantined[item.reason] += 1
                    quarantine.write(json.dumps(item.as_json(), ensure_ascii=False) + "\n")
                    continue
                text = normalize_text(item.text)
                if not text.strip():
                    empty = Quarantined(src.name, item.file, item.line, "empty_text", EMPTY_DETAIL, item.text)
                    tally.quarantined[empty.reason] += 1
                    quarantine.write(json.dumps(empty.as_json(), ensure_ascii=False) + "\n")
                    continue
                if len(text) < cfg.min_doc_chars:
                    tally.filtered["too_short"] += 1
                    continue
                digest = sha256_text(text)
                if digest in seen:
                    tally.filtered["exact_duplicate"] += 1
                    seen[digest].duplicates_removed += 1
                    continue
                # Scrub only what can be kept (scrubbing is the costliest step of reading), plus a margin so a
                # value across the cut is replaced whole, never left as a fragment; then cut.
                scrubbed, pii = scrub(text[: cfg.max_doc_chars + PII_MARGIN])
                stored = truncate(scrubbed, cfg.max_doc_chars)
                tally.truncated += len(text) > cfg.max_doc_chars
                seen[digest] = Candidate(f"{src.name}-{digest[:16]}", src.name, src.domain, stored, pii=pii)
                pool.append(seen[digest])
    return pools


def _drop(
    pools: dict[str, list[Candidate]], counts: dict[str, SourceCounts], name: str, keep: Callable[[Candidate], bool]
) -> None:
    """Remove the candidates `keep` rejects, counting them under filter `name` per source."""
    for source, pool in pools.items():
        kept = [c for c in pool if keep(c)]
        counts[source].filtered[name] += len(pool) - len(kept)
        pools[source] = kept


def _language_filter(cfg: DataConfig, pools: dict[str, list[Candidate]], counts: dict[str, SourceCounts]) -> None:
    """Tag every candidate with its language (code: `CODE`) and drop prose outside the allowed set."""
    prose = [c for pool in pools.values() for c in pool if c.domain != "code"]
    with progress("language", total=len(prose)) as advance:
        for start in range(0, len(prose), TOXICITY_BATCH):
            batch = prose[start : start + TOXICITY_BATCH]
            for candidate, language in zip(batch, detect_languages([c.text for c in batch]), strict=True):
                candidate.language = language
            advance(len(batch))
    allowed = set(cfg.allowed_languages)
    for pool in pools.values():
        for candidate in pool:
            if candidate.domain == "code":
                candidate.language = CODE
    _drop(pools, counts, "language", lambda c: c.language == CODE or c.language in allowed)


def _quality_filter(cfg: DataConfig, pools: dict[str, list[Candidate]], counts: dict[str, SourceCounts]) -> None:
    total = sum(len(pool) for pool in pools.values())
    with progress("quality", total=total) as advance:
        for pool in pools.values():
            for candidate in pool:
                result = quality(candidate.text, candidate.domain, cfg.quality_min_words)
                candidate.quality, candidate.quality_failed = result.score, result.failed
            advance(len(pool))
    _drop(pools, counts, "quality", lambda c: c.quality >= cfg.quality_threshold)


def _near_duplicate_filter(cfg: DataConfig, pools: dict[str, list[Candidate]], counts: dict[str, SourceCounts]) -> None:
    """Keep the first document (config order, then reading order) of every near-duplicate cluster."""
    index = NearDuplicateIndex(cfg.near_duplicate_threshold)
    by_id = {c.doc_id: c for pool in pools.values() for c in pool}
    duplicates: set[str] = set()
    with progress("near_duplicate", total=len(by_id)) as advance:
        for pool in pools.values():
            for candidate in pool:
                first = index.offer(candidate.doc_id, candidate.text)
                if first is not None:
                    duplicates.add(candidate.doc_id)
                    by_id[first].duplicates_removed += 1 + candidate.duplicates_removed
            advance(len(pool))
    _drop(pools, counts, "near_duplicate", lambda c: c.doc_id not in duplicates)


def _toxicity_filter(cfg: DataConfig, pools: dict[str, list[Candidate]], counts: dict[str, SourceCounts]) -> None:
    """Score every candidate (batched, with the scorer of its language) and drop those above the threshold."""
    everything = [c for pool in pools.values() for c in pool]
    with progress("toxicity", total=len(everything)) as advance:
        for start in range(0, len(everything), TOXICITY_BATCH):
            batch = everything[start : start + TOXICITY_BATCH]
            scores, _ = toxicity_by_language([c.text for c in batch], [c.language for c in batch])
            for candidate, score in zip(batch, scores, strict=True):
                candidate.toxicity = float(score)
            advance(len(batch))
    _drop(pools, counts, "toxicity", lambda c: c.toxicity <= cfg.toxicity_threshold)


def _sample_mixture(
    cfg: DataConfig, pools: dict[str, list[Candidate]], counts: dict[str, SourceCounts]
) -> tuple[list[Candidate], dict[str, float]]:
    budgets = source_budgets({s.name: s.weight for s in cfg.sources}, cfg.target_chars)
    kept: list[Candidate] = []
    for src in cfg.sources:
        taken, dropped = sample(pools[src.name], budgets[src.name], lambda c: len(c.text), cfg.seed, src.name)
        counts[src.name].filtered["mixture_downsample"] += len(dropped)
        counts[src.name].kept = len(taken)
        counts[src.name].chars = sum(len(c.text) for c in taken)
        for c in taken:
            counts[src.name].pii.update(c.pii)
        kept.extend(taken)
    return kept, budgets


def _stats_table(docs: list[Candidate], splits: dict[str, str]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {name: [] for name in STATS_COLUMNS}
    seen: set[str] = set()
    for doc in docs:
        digest = sha256_text(doc.text)
        row = {
            "doc_id": doc.doc_id,
            "source": doc.source,
            "domain": doc.domain,
            "split": splits[doc.doc_id],
            **text_stats(doc.text),
            "language": doc.language,
            "quality": doc.quality,
            "quality_failed": ",".join(doc.quality_failed),
            "toxicity": doc.toxicity,
            "pii_count": sum(doc.pii.values()),  # values scrubbed (replaced by placeholders)
            **{f"pii_{kind}": doc.pii.get(kind, 0) for kind in PII_TYPES},
            "pii_residue": residue(doc.text),  # what the detectors still find: the suite expects 0
            "is_duplicate": digest in seen,  # of the stored (possibly truncated) text
            "duplicate_cluster": doc.doc_id,  # kept documents represent their cluster
            "duplicates_removed": doc.duplicates_removed,
            "sha256": digest,
        }
        seen.add(digest)
        for name in STATS_COLUMNS:
            columns[name].append(row[name])
    return columns


def _write_stats(path: Path, columns: dict[str, list[Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
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
    pq.write_table(pa.table(columns, schema=schema), path)


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


def ingest(cfg: DataConfig, out_dir: Path) -> dict[str, Any]:
    """Run the ingest stage into `out_dir` (replaced atomically) and return the ingest report."""
    if cfg.max_doc_chars < cfg.min_doc_chars:
        raise ConfigError(
            f"data.max_doc_chars ({cfg.max_doc_chars}) must be >= data.min_doc_chars ({cfg.min_doc_chars})"
        )
    check_sources(cfg)  # a missing corpus fails in milliseconds, before any reading
    counts = {src.name: SourceCounts() for src in cfg.sources}
    with atomic_dir(out_dir) as tmp:
        with (tmp / "quarantine.jsonl").open("w", encoding="utf-8") as quarantine:
            pools = _read_candidates(cfg, counts, quarantine)
        _language_filter(cfg, pools, counts)
        _quality_filter(cfg, pools, counts)
        _toxicity_filter(cfg, pools, counts)
        _near_duplicate_filter(cfg, pools, counts)
        docs, budgets = _sample_mixture(cfg, pools, counts)
        splits = assign_splits({d.doc_id: d.domain for d in docs}, cfg.heldout_fraction, cfg.seed)
        unbalanced = [name for name, tally in counts.items() if not tally.balanced()]
        if unbalanced:  # a bug, not a data problem: refuse to publish counts that do not add up
            raise AssertionError(f"row accounting does not add up for sources: {', '.join(unbalanced)}")

        with (tmp / "documents.jsonl").open("w", encoding="utf-8") as fh:
            for doc in docs:
                row = {"doc_id": doc.doc_id, "source": doc.source, "domain": doc.domain}
                fh.write(json.dumps({**row, "split": splits[doc.doc_id], "text": doc.text}, ensure_ascii=False) + "\n")
        _write_stats(tmp / "stats.parquet", _stats_table(docs, splits))

        chars_by_domain: Counter[str] = Counter()
        split_docs: Counter[str] = Counter()
        for doc in docs:
            chars_by_domain[doc.domain] += len(doc.text)
            split_docs[splits[doc.doc_id]] += 1
        report = {
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
            },
            "target_chars": cfg.target_chars,
            "sampling": SAMPLING_RULE,
            "sources": {src.name: _source_entry(src, counts[src.name], budgets[src.name]) for src in cfg.sources},
            "totals": _totals(counts),
            "splits": {"train": split_docs["train"], "heldout": split_docs["heldout"]},
            "domain_shares": domain_shares(cfg, chars_by_domain),
        }
        atomic_write_json(tmp / "ingest_report.json", report)
    return report
