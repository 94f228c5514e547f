"""Ingest stage: sources -> normalised, filtered, mixture-sampled documents with a split each.

Every input row ends in exactly one bucket, counted per source: kept, filtered (too_short,
exact_duplicate, toxicity, mixture_downsample, applied in that order) or quarantined (unreadable
row, with its reason). The report checks rows_in == kept + filtered + quarantined for every source
before anything is published, and the whole output directory appears atomically.

Outputs in `out_dir`: documents.jsonl, stats.parquet, quarantine.jsonl, ingest_report.json.
Later issues insert dedup/PII/language stages between normalisation and sampling: each is another
named filter in `FILTERS` and another loop over the candidates.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pharia.classifiers.toxicity import CLASSIFIER_NAME, toxicity_scores
from pharia.config import ConfigError, DataConfig, SourceConfig, sha256_json
from pharia.data.manifest import atomic_dir, atomic_write_json, sha256_text
from pharia.data.mixture import SAMPLING_RULE, assign_splits, sample, source_budgets
from pharia.data.normalize import normalize_text, text_stats, truncate
from pharia.data.progress import progress
from pharia.data.records import Quarantined
from pharia.data.sources import check_sources, read_source, source_origin

FILTERS = ("too_short", "exact_duplicate", "toxicity", "mixture_downsample")
# The DataConfig fields this stage reads: its DVC params and the hash in its report. A new DataConfig
# field must be added here or to IGNORED_FIELDS (a test enforces it), so DVC reruns ingest when it changes.
INGEST_FIELDS = (
    "sources",
    "target_chars",
    "max_doc_chars",
    "min_doc_chars",
    "heldout_fraction",
    "toxicity_threshold",
    "seed",
)
IGNORED_FIELDS = ("vocab_size", "seq_len", "validation")
TOXICITY_BATCH = 512
STATS_COLUMNS = (
    "doc_id",
    "source",
    "domain",
    "split",
    "n_chars",
    "n_words",
    "alpha_ratio",
    "symbol_ratio",
    "toxicity",
    "pii_count",
    "is_duplicate",
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


@dataclass
class SourceCounts:
    rows_in: int = 0
    kept: int = 0
    chars: int = 0
    truncated: int = 0
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
        }


def _read_candidates(
    cfg: DataConfig, counts: dict[str, SourceCounts], quarantine: IO[str]
) -> dict[str, list[Candidate]]:
    """Read, normalise and apply the text filters (too_short, exact_duplicate) to every source.
    Exact duplicates are detected across sources: the first occurrence (config order) is kept."""
    seen: set[str] = set()
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
                if len(text) < cfg.min_doc_chars:
                    tally.filtered["too_short"] += 1
                    continue
                digest = sha256_text(text)
                if digest in seen:
                    tally.filtered["exact_duplicate"] += 1
                    continue
                seen.add(digest)
                stored = truncate(text, cfg.max_doc_chars)
                tally.truncated += stored != text
                pool.append(Candidate(f"{src.name}-{digest[:16]}", src.name, src.domain, stored))
    return pools


def _toxicity_filter(cfg: DataConfig, pools: dict[str, list[Candidate]], counts: dict[str, SourceCounts]) -> None:
    """Score every candidate (batched) and drop those above the threshold."""
    everything = [c for pool in pools.values() for c in pool]
    with progress("toxicity", total=len(everything)) as advance:
        for start in range(0, len(everything), TOXICITY_BATCH):
            batch = everything[start : start + TOXICITY_BATCH]
            for candidate, score in zip(batch, toxicity_scores([c.text for c in batch]), strict=True):
                candidate.toxicity = float(score)
            advance(len(batch))
    for name, pool in pools.items():
        keep = [c for c in pool if c.toxicity <= cfg.toxicity_threshold]
        counts[name].filtered["toxicity"] += len(pool) - len(keep)
        pools[name] = keep


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
            "toxicity": doc.toxicity,
            "is_duplicate": digest in seen,  # of the stored (possibly truncated) text
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
            ("toxicity", pa.float64()),
            ("pii_count", pa.int64()),
            ("is_duplicate", pa.bool_()),
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
        _toxicity_filter(cfg, pools, counts)
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
            "toxicity_threshold": cfg.toxicity_threshold,
            "target_chars": cfg.target_chars,
            "sampling": SAMPLING_RULE,
            "sources": {src.name: _source_entry(src, counts[src.name], budgets[src.name]) for src in cfg.sources},
            "totals": _totals(counts),
            "splits": {"train": split_docs["train"], "heldout": split_docs["heldout"]},
            "domain_shares": domain_shares(cfg, chars_by_domain),
        }
        atomic_write_json(tmp / "ingest_report.json", report)
    return report
